"""Interval arithmetic of jobs.monitor.lift against hand-computed values."""

from __future__ import annotations

import math
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from jobs.monitor.lift import (
    Ratio,
    difference_of_ratios,
    lift_rows,
    moments,
    ratio_variance,
    welch_interval,
)

Z975 = 1.959963984540054  # the 97.5 % quantile of the standard normal


def ratio_of(users: list[tuple[int, int]]) -> Ratio:
    """Per-user (x, n) pairs → the sums lift keeps."""
    return Ratio(
        users=len(users),
        x=sum(x for x, _ in users),
        n=sum(n for _, n in users),
        xx=sum(x * x for x, _ in users),
        nn=sum(n * n for _, n in users),
        xn=sum(x * n for x, n in users),
    )


def test_clustered_users_widen_the_interval_by_hand() -> None:
    # Two users, 4 impressions each; one clicked all, one none: R = 0.5, residuals ±2,
    # RSS = 8, Var = 2/1 · 8 / 8² = 0.25 — ten times the 0.025 that independent
    # impressions (the Agresti–Caffo floor, p̃ = 5/10) would claim.
    t = ratio_of([(4, 4), (0, 4)])
    assert ratio_variance(t) == pytest.approx(0.25)
    c = ratio_of([(1, 4), (1, 4)])  # RSS 0: the floor p̃ = 3/10 → 0.21/10
    assert ratio_variance(c) == pytest.approx(0.021)
    iv = difference_of_ratios(t, c)
    assert iv.difference == pytest.approx(0.25)
    assert iv.high - iv.difference == pytest.approx(Z975 * math.sqrt(0.271))
    assert iv.reason is None


def test_the_floor_keeps_p_zero_from_collapsing_by_hand() -> None:
    # treatment (1,2),(0,2),(2,4): R = 3/8, RSS = .0625 + .5625 + .25 = .875,
    # delta = 3/2 · .875 / 64 = .0205078; floor p̃ = 4/10 → .24/10 = .024 wins.
    # control (0,3),(0,1): p = 0, RSS = 0; floor p̃ = 1/6 → (1/6)(5/6)/6 = 5/216.
    t, c = ratio_of([(1, 2), (0, 2), (2, 4)]), ratio_of([(0, 3), (0, 1)])
    assert ratio_variance(t) == pytest.approx(0.024)
    assert ratio_variance(c) == pytest.approx(5 / 216)
    iv = difference_of_ratios(t, c)
    assert iv.difference == pytest.approx(0.375)
    assert iv.low == pytest.approx(0.375 - Z975 * math.sqrt(0.024 + 5 / 216))
    assert iv.low < iv.difference < iv.high
    # p = 1 in both groups: still a proper interval, never a sqrt of a negative.
    full = difference_of_ratios(ratio_of([(3, 3), (2, 2)]), ratio_of([(1, 1), (5, 5)]))
    assert full.difference == 0.0 and full.low < 0 < full.high


@given(
    st.lists(st.tuples(st.integers(0, 50), st.integers(1, 50)), min_size=2, max_size=20),
    st.lists(st.tuples(st.integers(0, 50), st.integers(1, 50)), min_size=2, max_size=20),
)
def test_any_counts_give_a_finite_interval(
    t: list[tuple[int, int]], c: list[tuple[int, int]]
) -> None:
    # Even counts with x > n (the double count lift once crashed on) stay finite.
    iv = difference_of_ratios(ratio_of(t), ratio_of(c))
    assert iv.low is not None and math.isfinite(iv.low) and iv.low <= iv.difference <= iv.high


def test_an_empty_or_single_user_group_gives_no_interval_with_a_reason() -> None:
    t = ratio_of([(1, 4), (2, 4)])
    empty = difference_of_ratios(t, ratio_of([]))
    assert (empty.difference, empty.low, empty.high) == (None, None, None)
    assert empty.reason == "control has no exposed users"
    one = difference_of_ratios(t, ratio_of([(1, 2)]))
    assert one.difference == pytest.approx(3 / 8 - 1 / 2) and one.low is None
    assert one.reason == "control has 1 user, needs 2"
    rows = lift_rows(
        {
            "treatment": {"users": 2, "impressions": 8, "clicks": 3, "impressions_sq": 32},
            "control": {"users": 1, "impressions": 2, "clicks": 1, "impressions_sq": 4},
        },
        date(2026, 1, 1),
    )
    ctr = rows[0]
    assert ctr["ci_low"] is None and ctr["difference"] == pytest.approx(-0.125)
    assert ctr["method"] == "delta-ratio-per-user (no interval: control has 1 user, needs 2)"


def test_welch_by_hand() -> None:
    # treatment 1,2,3,4: mean 2.5, s² 5/3; control 2,4,6: mean 4, s² 4.
    # a = 5/12, b = 4/3; df = (a+b)² / (a²/3 + b²/2) = 3.0625 / 0.9467593 = 3.2347188.
    iv = welch_interval(2.5, 5 / 3, 4, 4.0, 4.0, 3)
    df = (5 / 12 + 4 / 3) ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2)
    assert df == pytest.approx(3.2347188, abs=1e-6)
    half = stats.t.ppf(0.975, df) * math.sqrt(5 / 12 + 4 / 3)
    assert iv.difference == pytest.approx(-1.5)
    assert (iv.low, iv.high) == (pytest.approx(-1.5 - half), pytest.approx(-1.5 + half))
    # And the same as SciPy's own Welch test on the raw values.
    ref = stats.ttest_ind([1, 2, 3, 4], [2, 4, 6], equal_var=False).confidence_interval(0.95)
    assert (iv.low, iv.high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_welch_degenerate_cases() -> None:
    same = welch_interval(3.0, 0.0, 10, 1.0, 0.0, 5)
    assert (same.difference, same.low, same.high) == (2.0, 2.0, 2.0)
    one = welch_interval(3.0, 0.0, 1, 1.0, 2.0, 5)
    assert one.difference == 2.0 and one.low is None


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=2, max_size=30))
def test_moments_from_sums_match_the_sample(values: list[float]) -> None:
    mean, var = moments(sum(values), sum(v * v for v in values), len(values))
    assert mean == pytest.approx(sum(values) / len(values), rel=1e-9, abs=1e-9)
    m = sum(values) / len(values)
    want = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    assert var == pytest.approx(want, rel=1e-6, abs=1e-3)


def test_lift_rows_of_a_day() -> None:
    groups = {
        "treatment": {
            "users": 4,
            "impressions": 200,
            "clicks": 30,
            "purchases": 8,
            "revenue": 10.0,  # per user 1, 2, 3, 4
            "revenue_sq": 30.0,
            # per user (clicks, impressions): (5, 50), (10, 50), (5, 50), (10, 50)
            "clicks_sq": 250.0,
            "impressions_sq": 10000.0,
            "clicks_impressions": 1500.0,
        },
        "control": {
            "users": 3,
            "impressions": 200,
            "clicks": 20,
            "purchases": 4,
            "revenue": 12.0,  # per user 2, 4, 6
            "revenue_sq": 56.0,
            # per user: (10, 100), (5, 50), (5, 50) — every user at exactly 10 %
            "clicks_sq": 150.0,
            "impressions_sq": 15000.0,
            "clicks_impressions": 1500.0,
        },
    }
    rows = {r["metric"]: r for r in lift_rows(groups, date(2026, 11, 3))}
    ctr = rows["ctr"]
    assert (ctr["treatment"], ctr["control"], ctr["n_treatment"]) == (0.15, 0.10, 200)
    # treatment: residuals ±2.5, RSS 25, Var = 4/3 · 25 / 200² (above its floor);
    # control: RSS 0, so the floor p̃ = 21/202: Var = p̃ (1 − p̃) / 202.
    var_t = 4 / 3 * 25 / 200**2
    var_c = (21 / 202) * (181 / 202) / 202
    assert ctr["ci_low"] == pytest.approx(0.05 - Z975 * math.sqrt(var_t + var_c))
    assert ctr["ci_low"] == pytest.approx(-0.0205174, abs=1e-6)  # Wald said -0.0146
    assert ctr["relative_lift"] == pytest.approx(0.5)
    assert ctr["method"] == "delta-ratio-per-user"
    assert rows["conversion"]["difference"] == pytest.approx(0.02)
    rev = rows["revenue_per_user"]
    assert (rev["treatment"], rev["control"], rev["n_control"]) == (2.5, 4.0, 3)
    ref = stats.ttest_ind([1, 2, 3, 4], [2, 4, 6], equal_var=False).confidence_interval(0.95)
    assert rev["ci_low"] == pytest.approx(ref.low) and rev["method"] == "welch"


def test_no_control_group_gives_rows_without_intervals() -> None:
    rows = lift_rows({"treatment": {"users": 5, "impressions": 9, "clicks": 1}}, date(2026, 1, 1))
    assert all(r["difference"] is None and r["n_control"] == 0 for r in rows)
