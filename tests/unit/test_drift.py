"""PSI and KS against hand-computed values, their properties, and awkward input."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.monitor.drift import (
    EmptySampleError,
    NonFiniteError,
    categorical_result,
    ctr_drop_result,
    ks,
    level_of,
    numeric_results,
    psi,
    psi_categorical,
    quantile_edges,
    share_result,
)
from jobs.monitor.monitor import (
    current_bounds,
    episode_first,
    erased_since,
    new_user_share,
    reference_bounds,
)

EPS = 1e-4


def test_psi_by_hand_on_quartile_bins() -> None:
    # Reference 1..8, 4 bins: quartiles (linear) at 2.75, 4.5, 6.25, so each bin holds 2/8.
    reference = [1, 2, 3, 4, 5, 6, 7, 8]
    assert quantile_edges(np.array(reference, float), 4).tolist() == [2.75, 4.5, 6.25]
    # Current: six values in the first bin, two in the last, none in the middle two.
    current = [1, 1, 1, 1, 1, 1, 8, 8]
    expected = (
        (0.75 - 0.25) * math.log(0.75 / 0.25)
        + 2 * (EPS - 0.25) * math.log(EPS / 0.25)
        + (0.25 - 0.25) * 0.0
    )
    assert psi(reference, current, bins=4) == pytest.approx(expected, rel=1e-12)
    # 0.5·ln 3 = 0.5493; 2 · 0.2499 · ln(0.25 / 0.0001) = 2 · 0.2499 · 7.8240 = 3.9105
    assert expected == pytest.approx(4.4598, abs=1e-3)


def test_psi_outer_bins_are_open_ended() -> None:
    # Values far beyond the reference land in the outer bins, not outside them.
    reference = [1, 2, 3, 4, 5, 6, 7, 8]
    current = [-1000, 1000, -1000, 1000]
    expected = 2 * (0.5 - 0.25) * math.log(0.5 / 0.25) + 2 * (EPS - 0.25) * math.log(EPS / 0.25)
    assert psi(reference, current, bins=4) == pytest.approx(expected)


def test_psi_categorical_by_hand_with_an_unseen_category() -> None:
    reference = {"view": 60, "click": 30, "purchase": 10}
    current = {"view": 50, "click": 30, "purchase": 10, "add_to_cart": 10}
    expected = (
        (0.5 - 0.6) * math.log(0.5 / 0.6)
        + (0.3 - 0.3) * 0.0
        + (0.1 - 0.1) * 0.0
        + (0.1 - EPS) * math.log(0.1 / EPS)
    )
    assert psi_categorical(reference, current) == pytest.approx(expected)
    assert psi_categorical(current, reference) == pytest.approx(expected)


def test_constant_reference_detects_moves_both_ways() -> None:
    reference = [3.0] * 10
    assert psi(reference, [3.0] * 5) == 0.0
    up = (1 - EPS) * math.log(1 / EPS) + (EPS - 1) * math.log(EPS / 1)
    assert psi(reference, [4.0] * 5) == pytest.approx(up)
    assert psi(reference, [2.0] * 5) == pytest.approx(up)


def test_ks_by_hand() -> None:
    # Disjoint samples: the empirical CDFs differ by 1 between 3 and 10.
    stat, p = ks([1, 2, 3], [10, 11, 12])
    assert stat == 1.0
    assert p == pytest.approx(0.1)  # exact: 2 / C(6, 3) = 2 / 20
    stat, _ = ks([1, 2, 3, 4], [3, 4, 5, 6])  # CDFs differ by 2/4 at x in [2, 3)
    assert stat == 0.5


def test_levels_and_thresholds() -> None:
    assert [level_of(v, 0.1, 0.2) for v in (0.0, 0.0999, 0.1, 0.1999, 0.2, 5)] == [
        "ok", "ok", "warn", "warn", "alert", "alert"
    ]  # fmt: skip
    rng = np.random.default_rng(1)
    same = numeric_results("m", rng.normal(size=2000), rng.normal(size=2000))
    assert [r.level for r in same] == ["ok", "ok"]
    shifted = numeric_results("m", rng.normal(size=2000), rng.normal(2, 1, size=2000))
    assert [(r.stat, r.level) for r in shifted] == [("psi", "alert"), ("ks", "alert")]
    assert shifted[1].p_value is not None and shifted[1].p_value < 1e-10
    # Significant but tiny (D below the effect size): a warning, never an alert.
    small = numeric_results("m", rng.normal(size=50_000), rng.normal(0.05, 1, size=50_000))
    assert small[1].level == "warn" and small[1].value < 0.1


def test_a_psi_alert_needs_a_significant_ks() -> None:
    """Twenty values in every other decile: PSI far above 0.2, yet no evidence of a change."""
    reference = np.arange(1000.0)
    current = np.concatenate([np.arange(b * 100, b * 100 + 80, 20.0) for b in range(0, 10, 2)])
    psi_row, ks_row = numeric_results("m", reference, current)
    assert psi_row.value > 1.0 and ks_row.p_value is not None and ks_row.p_value > 0.5
    assert (psi_row.level, ks_row.level) == ("warn", "ok")
    # The same pattern in 2,000 values is significant: the PSI alert stands.
    many = np.repeat(current, 100)
    psi_many, ks_many = numeric_results("m", reference, many)
    assert ks_many.p_value is not None and ks_many.p_value < 0.01
    assert psi_many.level == "alert"


def test_share_result_judges_the_rise() -> None:
    result = share_result("unknown_users", 0.05, 0.30, alert_at=0.2)
    assert result.value == pytest.approx(0.25) and result.level == "alert"
    assert share_result("u", 0.05, 0.17, alert_at=0.2).level == "warn"
    assert share_result("u", 0.50, 0.0, alert_at=0.2).level == "ok"
    with pytest.raises(ValueError, match="not within"):
        share_result("u", 0.1, float("nan"), alert_at=0.2)


def test_categorical_result_counts() -> None:
    r = categorical_result("event_type", {"a": 5, "b": 5}, {"a": 10})
    assert (r.n_reference, r.n_current, r.level) == (10, 10, "alert")


@pytest.mark.parametrize("empty", [[], np.array([])])
def test_empty_samples_raise_a_clear_error(empty) -> None:
    with pytest.raises(EmptySampleError, match="activity: the current sample is empty"):
        psi([1, 2, 3], empty, metric="activity")
    with pytest.raises(EmptySampleError, match="reference"):
        ks(empty, [1, 2])
    with pytest.raises(EmptySampleError, match="current counts are empty"):
        psi_categorical({"a": 1}, {})
    with pytest.raises(EmptySampleError):
        psi_categorical({"a": 1}, {"b": 0})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_raise_a_clear_error(bad: float) -> None:
    with pytest.raises(NonFiniteError, match="scores: the current sample holds 1 NaN/inf"):
        psi([1, 2, 3], [1, bad], metric="scores")
    with pytest.raises(NonFiniteError):
        ks([1, bad], [1, 2])
    with pytest.raises(NonFiniteError):
        psi_categorical({"a": bad}, {"a": 1})


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=1, max_size=60)
counts = st.dictionaries(st.sampled_from("abcdefg"), st.integers(0, 1000), min_size=1).filter(
    lambda d: sum(d.values()) > 0
)


@settings(max_examples=150, deadline=None)
@given(samples, samples, st.randoms(use_true_random=False))
def test_psi_properties(reference: list[float], current: list[float], rnd) -> None:
    value = psi(reference, current)
    assert value >= 0 and math.isfinite(value)
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    shuffled_ref, shuffled_cur = reference[:], current[:]
    rnd.shuffle(shuffled_ref)
    rnd.shuffle(shuffled_cur)
    assert psi(shuffled_ref, shuffled_cur) == pytest.approx(value, rel=1e-9, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(counts, counts)
def test_categorical_psi_properties(reference: dict[str, int], current: dict[str, int]) -> None:
    value = psi_categorical(reference, current)
    assert value >= 0
    assert psi_categorical(current, reference) == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert psi_categorical(reference, reference) == pytest.approx(0.0, abs=1e-12)
    reordered = dict(reversed(list(current.items())))
    assert psi_categorical(reference, reordered) == pytest.approx(value, rel=1e-9, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(samples, samples)
def test_ks_properties(reference: list[float], current: list[float]) -> None:
    stat, p = ks(reference, current)
    assert 0.0 <= stat <= 1.0 and 0.0 <= p <= 1.0
    assert ks(reference, reference)[0] == 0.0


# -- windows (jobs.monitor.monitor): whole UTC days ----------------------------------------

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _stationary_events(days: int, seed: int = 0) -> pd.DataFrame:
    """Each user's events at a fixed daily rate, spread uniformly over each day."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(0.8, 3, 2000)
    frames = []
    for d in range(days):
        n = rng.poisson(rates)
        users = np.repeat(np.arange(rates.size), n)
        offsets = pd.to_timedelta(d + rng.random(users.size), unit="D")
        frames.append(pd.DataFrame({"user_id": users, "ts": T0 + offsets}))
    return pd.concat(frames, ignore_index=True)


def _user_days(events: pd.DataFrame, start: datetime, end: datetime) -> np.ndarray:
    inside = events[(events.ts >= start) & (events.ts < end)]
    return inside.groupby([inside.user_id, inside.ts.dt.floor("D")]).size().to_numpy()


def test_a_mid_day_run_on_unchanged_data_does_not_alert() -> None:
    """Events at the same daily rate; training started at 12:00 on day 8, the run at 12:00
    on day 10. Whole days on both sides: no alert. The old windows (the 24 h before the
    run, the 7 days up to the newest trained-on event) halve the edge days' counts and
    alert on user_activity."""
    events = _stationary_events(11)
    trained_at, run_at = T0 + timedelta(days=8, hours=12), T0 + timedelta(days=10, hours=12)
    read = events[events.ts < trained_at]
    bounds = reference_bounds(read.ts.min(), read.ts.max(), trained_at, 7)
    assert bounds == (T0 + timedelta(days=1), T0 + timedelta(days=8))  # first day dropped
    start, end = current_bounds(run_at, 1)
    assert (start, end) == (T0 + timedelta(days=9), T0 + timedelta(days=10))
    new = numeric_results(
        "user_activity", _user_days(read, *bounds), _user_days(events, start, end)
    )
    assert {r.level for r in new} <= {"ok", "warn"}, new
    last = read.ts.max()
    old = numeric_results(
        "user_activity",
        _user_days(read, last - timedelta(days=7), last),
        _user_days(events, run_at - timedelta(days=1), run_at),
    )
    assert "alert" in {r.level for r in old}  # what the fix is for


def test_reference_bounds_edges() -> None:
    day = timedelta(days=1)
    # Training read through day 9 and started on day 10 at 00:30: all whole.
    assert reference_bounds(T0, T0 + 10 * day - timedelta(seconds=1), T0 + 10 * day, 7) == (
        T0 + 3 * day,
        T0 + 10 * day,
    )
    # A lake starting at exactly 00:00 keeps its first day.
    assert reference_bounds(T0, T0 + 3 * day, None, 7) == (T0, T0 + 4 * day)
    # Half a day of data: no whole day.
    assert reference_bounds(T0 + day / 4, T0 + day / 2, T0 + day / 2, 7) is None


def _span(first_seen_day: list[int], n: list[int]) -> pd.DataFrame:
    naive = T0.replace(tzinfo=None)
    return pd.DataFrame(
        {"n": n, "first_ts": [naive + timedelta(days=d, hours=1) for d in first_seen_day]}
    )


def test_a_steady_inflow_of_new_users_does_not_alert_and_a_jump_does() -> None:
    """30 % of each day's events by first-time users: the reference's newcomer share of its
    last day (users first seen that day) is 0.3, like the current share of users the model
    does not know. Compared with the old reference (the training users' unknown share,
    0) it alerted every day."""
    span_start = T0 + timedelta(days=7)
    span = _span([0, 3, 7, 7], [50, 20, 20, 10])  # 30 of 100 events by day-7 newcomers
    reference = new_user_share(span, span_start)
    assert reference == pytest.approx(0.3)
    steady = share_result("unknown_user_share", reference, 0.3, alert_at=0.2)
    assert steady.level == "ok"
    assert share_result("unknown_user_share", reference, 0.6, alert_at=0.2).level == "alert"
    assert share_result("unknown_user_share", 0.0, 0.3, alert_at=0.2).level == "alert"  # old
    assert new_user_share(_span([], []), span_start) is None


def test_an_erasure_commit_after_the_trained_version_is_found() -> None:
    history = [
        {"version": 5, "operation": "WRITE", "operationMetrics": {"numOutputRows": "9"}},
        {"version": 6, "operation": "MERGE", "operationMetrics": {"numTargetRowsDeleted": "0"}},
        {"version": 7, "operation": "MERGE", "operationMetrics": {"numTargetRowsDeleted": "3"}},
        {"version": 8, "operation": "REORG", "operationMetrics": {}},
        {"version": 9, "operation": "WRITE", "operationMetrics": None},
    ]
    assert erased_since(history, 5) == 8
    assert erased_since(history, 8) is None
    assert erased_since(history[:2], 4) is None


def test_ctr_drop_by_hand() -> None:
    # 10 % → 5 % on 1,000 impressions each: pooled 0.075, se = sqrt(0.075·0.925·0.002)
    # = 0.011779, z = 0.05 / 0.011779 = 4.2448, one-sided p = 1.09e-5.
    r = ctr_drop_result("rec_ctr", [(100, 1000)], (50, 1000), alert_at=0.25, alpha=0.01)
    assert r.stat == "drop" and r.value == pytest.approx(0.5)
    assert r.p_value == pytest.approx(1.094e-5, rel=0.01) and r.level == "alert"
    assert (r.warn_at, r.alert_at, r.n_reference, r.n_current) == (0.125, 0.25, 1000, 1000)
    # Baseline days are pooled: 60 + 40 of 1,000 is the same 10 %.
    pooled = ctr_drop_result("rec_ctr", [(60, 500), (40, 500)], (50, 1000), 0.25, 0.01)
    assert (pooled.value, pooled.p_value) == (pytest.approx(0.5), pytest.approx(r.p_value))
    # The same halving on 100 impressions: z = 0.05 / 0.03725 = 1.342, p = 0.0898.
    small = ctr_drop_result("rec_ctr", [(10, 100)], (5, 100), alert_at=0.25, alpha=0.01)
    assert small.p_value == pytest.approx(0.0898, rel=0.01) and small.level == "ok"
    # A significant 15 % drop is a warning; a rise is never one.
    assert ctr_drop_result("c", [(1000, 10000)], (850, 10000), 0.25, 0.01).level == "warn"
    rise = ctr_drop_result("c", [(100, 1000)], (150, 1000), 0.25, 0.01)
    assert rise.value == pytest.approx(-0.5) and rise.level == "ok" and rise.p_value > 0.99


def test_a_ctr_drop_must_be_below_every_baseline_day() -> None:
    """Significant against the pooled week, but one baseline day was as low: daily CTRs
    vary more than a binomial says, so that is a bad day, not a lost model."""
    week = [(120, 1000)] * 6 + [(60, 1000)]
    day = (70, 1000)  # 7 % against 11.1 % pooled: p < 1e-4, a 37 % drop
    result = ctr_drop_result("c", week, day, 0.25, 0.01)
    assert result.value > 0.25 and result.p_value < 1e-4 and result.level == "ok"
    assert ctr_drop_result("c", week, (50, 1000), 0.25, 0.01).level == "alert"
    # Days without impressions are no baseline day.
    assert ctr_drop_result("c", [(120, 1000), (0, 0)], (50, 1000), 0.25, 0.01).level == "alert"


@pytest.mark.parametrize(
    ("reference", "current", "error"),
    [
        ([(10, 100)], (0, 0), EmptySampleError),
        ([(0, 0)], (1, 10), EmptySampleError),
        ([], (1, 10), EmptySampleError),
        ([(0, 100)], (1, 10), EmptySampleError),  # no reference click: no rate to drop from
        ([(10, 100)], (11, 10), ValueError),
        ([(-1, 100)], (1, 10), ValueError),
    ],
)
def test_ctr_drop_refuses_what_is_not_a_rate(reference, current, error) -> None:
    with pytest.raises(error, match="rec_ctr"):
        ctr_drop_result("rec_ctr", reference, current, alert_at=0.25, alpha=0.01)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 10**6), st.floats(0, 1)), min_size=1, max_size=8),
    st.integers(1, 10**7), st.floats(0, 1), st.floats(0.01, 1), st.floats(1e-6, 0.5),
)  # fmt: skip
def test_ctr_drop_properties(days, n_cur, b, alert_at, alpha) -> None:
    reference = [(round(a * n), n) for n, a in days]
    if sum(c for c, _ in reference) == 0:
        return
    c_cur = round(b * n_cur)
    r = ctr_drop_result("c", reference, (c_cur, n_cur), alert_at, alpha)
    assert r.value <= 1.0 and 0.0 <= r.p_value <= 1.0
    if r.level != "ok":
        assert r.p_value < alpha and r.value >= alert_at / 2
        assert c_cur / n_cur < min(c / n for c, n in reference)
    if r.level == "alert":
        assert r.value >= alert_at


def test_an_episode_starts_after_a_quiet_run_or_another_champion() -> None:
    def run(name: str, version: str, alert: bool) -> dict:
        return {"name": name, "model_version": version, "alert": alert}

    streak = [run("d5", "3", True), run("d4", "3", True), run("d3", "3", False)]
    assert episode_first(streak)["name"] == "d4"
    # v3 alerted (d1), v4 was champion (d2, quiet), v3 is back and alerts (d3): a new
    # episode from d3, not one from d1 that a training before the rollback answered.
    rollback = [run("d3", "3", True), run("d2", "4", False), run("d1", "3", True)]
    assert episode_first(rollback)["name"] == "d3"
    alerting_other = [run("d3", "3", True), run("d2", "4", True), run("d1", "3", True)]
    assert episode_first(alerting_other)["name"] == "d3"
    assert episode_first([run("d1", "3", True)])["name"] == "d1"
