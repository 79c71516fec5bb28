"""Interval arithmetic of jobs.monitor.lift against hand-computed values."""

from __future__ import annotations

import math
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from jobs.monitor.lift import (
    difference_of_proportions,
    lift_rows,
    moments,
    welch_interval,
)

Z975 = 1.959963984540054  # the 97.5 % quantile of the standard normal


def test_difference_of_proportions_by_hand() -> None:
    # 30/200 vs 20/200: d = 0.05, se = sqrt(.15·.85/200 + .10·.90/200) = sqrt(0.0010875).
    iv = difference_of_proportions(30, 200, 20, 200)
    half = Z975 * math.sqrt(0.0010875)
    assert iv.difference == pytest.approx(0.05)
    assert iv.low == pytest.approx(0.05 - half) and iv.low == pytest.approx(-0.0146343, abs=1e-7)
    assert iv.high == pytest.approx(0.05 + half) and iv.high == pytest.approx(0.1146343, abs=1e-7)


def test_a_proportion_interval_needs_both_groups() -> None:
    assert difference_of_proportions(3, 10, 0, 0).difference is None
    assert difference_of_proportions(0, 0, 3, 10).low is None


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
        },
        "control": {
            "users": 3,
            "impressions": 200,
            "clicks": 20,
            "purchases": 4,
            "revenue": 12.0,  # per user 2, 4, 6
            "revenue_sq": 56.0,
        },
    }
    rows = {r["metric"]: r for r in lift_rows(groups, date(2026, 11, 3))}
    ctr = rows["ctr"]
    assert (ctr["treatment"], ctr["control"], ctr["n_treatment"]) == (0.15, 0.10, 200)
    assert ctr["ci_low"] == pytest.approx(-0.0146343, abs=1e-7)
    assert ctr["relative_lift"] == pytest.approx(0.5) and ctr["method"] == "normal"
    assert rows["conversion"]["difference"] == pytest.approx(0.02)
    rev = rows["revenue_per_user"]
    assert (rev["treatment"], rev["control"], rev["n_control"]) == (2.5, 4.0, 3)
    ref = stats.ttest_ind([1, 2, 3, 4], [2, 4, 6], equal_var=False).confidence_interval(0.95)
    assert rev["ci_low"] == pytest.approx(ref.low) and rev["method"] == "welch"


def test_no_control_group_gives_rows_without_intervals() -> None:
    rows = lift_rows({"treatment": {"users": 5, "impressions": 9, "clicks": 1}}, date(2026, 1, 1))
    assert all(r["difference"] is None and r["n_control"] == 0 for r in rows)
