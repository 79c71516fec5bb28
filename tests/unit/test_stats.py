"""Bootstrap intervals over users and the paired decision the gate takes (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.config import load_settings
from jobs.train.gate import Incumbent, gate
from jobs.train.stats import bootstrap_ci, paired_relative_ci


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_users() -> None:
    rng = np.random.default_rng(1)
    small = rng.uniform(0, 1, 100)
    large = rng.uniform(0, 1, 10_000)
    a, b = bootstrap_ci(small, seed=3), bootstrap_ci(large, seed=3)
    assert a.low < a.estimate < a.high and a.estimate == pytest.approx(small.mean())
    # The standard error of a uniform mean is 0.289 / sqrt(n): the 95 % width is about
    # 3.92 of them, 0.113 for 100 users and 0.0113 for 10,000.
    assert a.high - a.low == pytest.approx(3.92 * 0.2887 / 10, rel=0.2)
    assert b.high - b.low == pytest.approx(3.92 * 0.2887 / 100, rel=0.2)
    assert bootstrap_ci(small, seed=3) == a  # reproducible by seed
    assert np.isnan(bootstrap_ci(np.array([])).estimate)


def test_identical_models_differ_by_exactly_zero() -> None:
    values = np.random.default_rng(2).uniform(0, 1, 300)
    diff = paired_relative_ci(values, values.copy())
    assert diff.estimate == diff.low == diff.high == 0.0


def test_pairing_cancels_the_spread_between_users() -> None:
    """Two models 2 % apart on every user: unpaired intervals overlap widely, the paired
    one is tight around +2 %."""
    rng = np.random.default_rng(4)
    old = rng.uniform(0.1, 1.0, 500)
    new = old * 1.02
    diff = paired_relative_ci(new, old, seed=5)
    assert diff.estimate == pytest.approx(0.02)
    assert diff.low == pytest.approx(0.02) and diff.high == pytest.approx(0.02)
    a, b = bootstrap_ci(new, seed=5), bootstrap_ci(old, seed=5)
    assert a.low < b.high  # unpaired: indistinguishable


def test_paired_interval_widens_with_noise_and_rejects_mismatched_users() -> None:
    rng = np.random.default_rng(6)
    old = rng.uniform(0, 1, 400)
    new = np.clip(old + rng.normal(0, 0.3, 400), 0, 1)
    diff = paired_relative_ci(new, old, seed=7)
    assert diff.low < diff.estimate < diff.high and diff.high - diff.low > 0.05
    with pytest.raises(ValueError, match="shape"):
        paired_relative_ci(new, old[:-1])
    assert np.isnan(paired_relative_ci(new, np.zeros(400)).low)


def _incumbent(new: np.ndarray, old: np.ndarray) -> Incumbent:
    diff = paired_relative_ci(new, old, seed=0)
    return Incumbent("champion", "1", float(old.mean()), diff.low, diff.high)


def test_gate_promotes_only_when_the_lower_bound_clears_the_margin() -> None:
    settings = load_settings(gate_max_relative_drop=0.05, gate_min_lift=0.1)
    rng = np.random.default_rng(8)
    old = rng.uniform(0, 1, 900)
    pop = 0.1
    # The same recipe on the same data: equal, so promoted (and new best: not worse).
    same = gate(float(old.mean()), pop, [_incumbent(old, old)], settings)
    assert same.champion and same.new_best and "[+0.0%, +0.0%]" in same.reason
    # 1 % worse on every user: within the margin with certainty.
    slightly = old * 0.99
    ok = gate(float(slightly.mean()), pop, [_incumbent(slightly, old)], settings)
    assert ok.champion and not ok.new_best
    # 3 % worse on average but so noisy the drop could exceed 5 %: not proven, stays
    # challenger, although the point estimate alone would have passed.
    noisy = np.clip(old * 0.97 + rng.normal(0, 0.4, 900), 0, 1)
    noisy *= 0.97 * old.mean() / noisy.mean()
    inc = _incumbent(noisy, old)
    assert inc.low is not None and inc.low < -0.05 < noisy.mean() / old.mean() - 1
    held = gate(float(noisy.mean()), pop, [inc], settings)
    assert (
        held.challenger and not held.champion and "interval of the paired difference" in held.reason
    )
    # Without intervals the point estimate decides (old runs, the resumed gate).
    assert gate(
        float(noisy.mean()), pop, [Incumbent("champion", "1", float(old.mean()))], settings
    ).champion


def test_shuffled_item_factors_are_rejected_by_the_paired_gate() -> None:
    """A model whose item factors are permuted scores like noise: the paired interval of
    its difference to the real model lies far below the margin."""
    rng = np.random.default_rng(9)
    n_users, n_items, rank = 300, 200, 8
    users, items = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    scores = users @ items.T
    truth = [set(np.argsort(-row)[:5]) for row in scores]  # what the true model ranks top

    def per_user(item_factors: np.ndarray) -> np.ndarray:
        from jobs.train.metrics import ndcg_per_user

        recs = [list(np.argsort(-row)[:10]) for row in users @ item_factors.T]
        return ndcg_per_user(recs, truth, 10)

    good, broken = per_user(items), per_user(rng.permutation(items))
    diff = paired_relative_ci(broken, good)
    assert diff.high < -0.5
    result = gate(
        float(broken.mean()),
        0.0,
        [Incumbent("champion", "1", float(good.mean()), diff.low, diff.high)],
        load_settings(gate_min_lift=0.0),
    )
    assert result.challenger and not result.champion  # beats "popularity" 0, not the champion
