"""Differentially private item popularity: the list recflow shows to people it does not know.

Reads: per-user interactions as parallel arrays (user row, item column, optional weight)
— at training the weighted gold pairs, for an older artifact its seen items. Writes
nothing: :func:`public_popularity` returns the noisy scores that the artifact stores as
``public_popularity`` and that ``popular.json`` and the service's ``popular`` answer rank
by (through :meth:`jobs.model.artifact.RecModel.popular_rows`, the one function both call).

Why: ``popular.json`` and the ``popular`` answer reach anyone, unauthenticated. An exact
count lets a reader who knows everyone else's behaviour learn one person's (an item only
they bought appears; a count moves by one when they join). The mechanism, user-level
(ε, δ)-DP (Dwork and Roth 2014; Korolova et al. 2009 and Wilson et al. 2020 for the
threshold):

1. Contribution bounding: each user counts for at most ``m`` distinct items, their ``m``
   highest-weight ones, ties broken by a fixed hash of (user id, item id). The choice
   depends on that user's own data only, so adding or removing one person changes no one
   else's choice, and the per-item counts (distinct users) move by at most 1 on at most
   ``m`` items: L1 sensitivity ``m``.
2. Laplace noise of scale ``b = m / ε`` on every item's count: ε-DP for the count vector.
3. Threshold ``τ = 1 + b · ln(m / (2δ))``: an item is released only when its bounded
   count is at least one and its noisy count is at least ``τ``. An item that only the
   removed person contributed (count 1) passes with probability ``½·exp(−(τ−1)/b) =
   δ/m``; they have at most ``m`` such items, so the release is (ε, δ)-DP. This is the
   threshold of Laplace partition selection in Google's differential-privacy library.

The released scores are noisy counts rounded to whole numbers: rounding is
post-processing (free) and removes the low-order bits through which textbook
floating-point Laplace samples leak (Mironov 2012). Noise comes from the operating
system's CSPRNG (:func:`os.urandom`) unless a seeded ``numpy.random.Generator`` is passed
(tests only): a listener must not be able to recompute it. It is drawn once per model
and stored in the artifact, so republishing or reloading the same model spends no further
budget and the batch list equals the online one.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.model.ranking import Seen

MECHANISM = "laplace"
# 53 random bits make a double in [0, 1): the resolution of numpy's own uniforms.
_MANTISSA_BITS = 53


@dataclass(frozen=True)
class PopularityBudget:
    """The privacy budget of the public popular list (``RECFLOW_POPULAR_*`` settings)."""

    epsilon: float
    delta: float
    max_items_per_user: int

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"popular_epsilon must be a positive number, got {self.epsilon}")
        if not 0 < self.delta < 0.5:
            raise ValueError(f"popular_delta must be in (0, 0.5), got {self.delta}")
        if self.max_items_per_user < 1:
            raise ValueError(
                f"popular_max_items_per_user must be at least 1, got {self.max_items_per_user}"
            )
        if self.delta >= self.max_items_per_user / 2:  # ln(m / 2δ) ≤ 0: no threshold at all
            raise ValueError("popular_delta too large for popular_max_items_per_user")

    @classmethod
    def from_settings(cls, settings: Any) -> PopularityBudget:
        """The budget a :class:`jobs.config.Settings` configures."""
        return cls(
            float(settings.popular_epsilon),
            float(settings.popular_delta),
            int(settings.popular_max_items_per_user),
        )

    @classmethod
    def default(cls) -> PopularityBudget:
        """The settings' defaults (read from the one place they are defined)."""
        from jobs.config import Settings

        fields = Settings.model_fields
        return cls(
            float(fields["popular_epsilon"].default),
            float(fields["popular_delta"].default),
            int(fields["popular_max_items_per_user"].default),
        )

    @property
    def sensitivity(self) -> int:
        """L1 sensitivity of the bounded count vector to one person: ``m``."""
        return self.max_items_per_user

    @property
    def scale(self) -> float:
        """Laplace scale ``b = m / ε`` (standard deviation ``√2·b``)."""
        return self.sensitivity / self.epsilon

    @property
    def threshold(self) -> float:
        """Smallest noisy count released: ``1 + b·ln(m / 2δ)``."""
        m = self.max_items_per_user
        return 1.0 + self.scale * math.log(m / (2.0 * self.delta))

    def describe(self) -> dict[str, Any]:
        """The budget as published next to the list, so a reader can see what was spent."""
        return {
            "mechanism": MECHANISM,
            "unit": "user",
            "epsilon": self.epsilon,
            "delta": self.delta,
            "max_items_per_user": self.max_items_per_user,
            "sensitivity_l1": self.sensitivity,
            "noise_scale": round(self.scale, 6),
            "threshold": round(self.threshold, 6),
            "score": "noisy count of distinct users, rounded",
        }


# -- 1. contribution bounding --------------------------------------------------------------


def id_hashes(ids: Sequence[str] | np.ndarray, label: bytes) -> np.ndarray:
    """64-bit BLAKE2b of each id under a fixed label: a data-independent tie-breaker."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(str(x).encode(), digest_size=8, person=label).digest())
            for x in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: spreads (user, item) hash combinations over 64 bits."""
    x = x.copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def bounded_pairs(
    users: np.ndarray,
    items: np.ndarray,
    user_ids: Sequence[str] | np.ndarray,
    item_ids: Sequence[str] | np.ndarray,
    m: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of the (user, item) pairs kept: each user's ``m`` strongest items.

    Pairs must be distinct (one row per user and item, as gold and ``Seen`` hold them).
    Strongest means highest weight; ties — all of them when there are no weights — go by
    a hash of (user id, item id), a per-user pseudo-random order. A hash of the item
    alone would make every user pick the same low-hash items; an order by global
    popularity would make one person's choice depend on everyone else's data and void the
    sensitivity bound.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = np.zeros(len(users), dtype=bool)
    if len(users) == 0:
        return keep
    tie = _mix(
        id_hashes(user_ids, b"recflow-dp-user")[users]
        ^ _mix(id_hashes(item_ids, b"recflow-dp-item")[items])
    )
    strength = np.zeros(len(users)) if weights is None else -np.asarray(weights, np.float64)
    order = np.lexsort((tie, strength, users))
    ordered = users[order]
    first = np.searchsorted(ordered, ordered)  # position of each user's first pair
    keep[order[np.arange(len(ordered)) - first < m]] = True
    return keep


def bounded_counts(
    users: np.ndarray,
    items: np.ndarray,
    n_items: int,
    user_ids: Sequence[str] | np.ndarray,
    item_ids: Sequence[str] | np.ndarray,
    m: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Distinct users per item after bounding each user to ``m`` items (int64).

    A repeated (user, item) pair counts once, so duplicates in the input can only lower a
    person's count below ``m``, never raise it.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = bounded_pairs(users, items, user_ids, item_ids, m, weights)
    pairs = np.unique(users[keep] * n_items + items[keep])
    return np.bincount(pairs % n_items, minlength=n_items)


# -- 2. noise and 3. threshold -------------------------------------------------------------


def _uniform(size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Uniforms in [0, 1): from the OS CSPRNG, or from ``rng`` (tests, reproducible)."""
    if rng is not None:
        return rng.random(size)
    raw = np.frombuffer(os.urandom(8 * size), dtype=np.uint64) >> np.uint64(64 - _MANTISSA_BITS)
    return raw.astype(np.float64) * 2.0**-_MANTISSA_BITS


def laplace_noise(scale: float, size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Laplace(0, ``scale``) samples by inverse CDF; the secure source unless ``rng``."""
    u = _uniform(size, rng) - 0.5
    # 1 − 2|u| is in (0, 1]; u = −0.5 exactly (probability 2⁻⁵³) would give log(0).
    tail = np.maximum(1.0 - 2.0 * np.abs(u), 2.0**-_MANTISSA_BITS)
    return -scale * np.sign(u) * np.log(tail)


def release(
    counts: np.ndarray, budget: PopularityBudget, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Noisy counts, rounded, of the items that pass the threshold; ``-inf`` elsewhere.

    Every item gets noise, released or not, so which items were near the threshold is
    itself hidden. An item with a bounded count of zero is never released: it is in the
    model's catalog only because someone interacted with it, and nothing bounded that
    person's effect on it.
    """
    counts = np.asarray(counts, dtype=np.float64)
    noisy = counts + laplace_noise(budget.scale, len(counts), rng)
    shown = (counts >= 1) & (noisy >= budget.threshold)
    return np.where(shown, np.round(noisy), -np.inf).astype(np.float32)


def public_popularity(
    users: np.ndarray,
    items: np.ndarray,
    user_ids: Sequence[str] | np.ndarray,
    item_ids: Sequence[str] | np.ndarray,
    budget: PopularityBudget,
    weights: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The public popularity scores (``-inf``: not released) and the budget spent on them."""
    counts = bounded_counts(
        users, items, len(item_ids), user_ids, item_ids, budget.max_items_per_user, weights
    )
    scores = release(counts, budget, rng)
    spent = {
        **budget.describe(),
        "selection": "top weight" if weights is not None else "seen items, hashed order",
        "released_items": int(np.isfinite(scores).sum()),
    }
    return scores, spent


def pairs_of(seen: Seen) -> tuple[np.ndarray, np.ndarray]:
    """(user row, item column) of every pair in a ``Seen`` CSR."""
    users = np.repeat(np.arange(len(seen.indptr) - 1), np.diff(seen.indptr))
    return users, np.asarray(seen.indices, dtype=np.int64)
