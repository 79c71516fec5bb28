"""PSI and KS against hand-computed values, their properties, and awkward input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.monitor.drift import (
    EmptySampleError,
    NonFiniteError,
    categorical_result,
    ks,
    level_of,
    numeric_results,
    psi,
    psi_categorical,
    quantile_edges,
    share_result,
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
