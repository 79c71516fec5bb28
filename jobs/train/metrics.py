"""Offline ranking metrics at K, with the definitions Recommenders uses.

Every function takes, per evaluated user, the recommended items (best first) and the set
of relevant (held-out) items, and returns the mean over users that have at least one
relevant item; users without any are not evaluable and are skipped. Relevance is binary.

- precision@K: hits in the top K divided by K;
- recall@K: hits in the top K divided by the number of relevant items;
- NDCG@K: DCG with gains 1/log2(rank + 1) over the ideal DCG of min(K, |relevant|) hits;
- MAP@K: the mean of precision@i at each hit i ≤ K, divided by min(K, |relevant|);
- coverage: distinct items recommended across users over the catalog size.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence

import numpy as np

from jobs.contracts import DEFAULT_K

Recs = Sequence[Sequence[Hashable]]
Truth = Sequence[Collection[Hashable]]


def _pairs(recommended: Recs, relevant: Truth) -> list[tuple[Sequence[Hashable], set]]:
    if len(recommended) != len(relevant):
        raise ValueError(f"{len(recommended)} recommendation lists for {len(relevant)} truth sets")
    return [(recs, set(rel)) for recs, rel in zip(recommended, relevant, strict=True) if rel]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def precision_at_k(recommended: Recs, relevant: Truth, k: int = DEFAULT_K) -> float:
    pairs = _pairs(recommended, relevant)
    return _mean([sum(i in rel for i in recs[:k]) / k for recs, rel in pairs])


def recall_at_k(recommended: Recs, relevant: Truth, k: int = DEFAULT_K) -> float:
    return _mean(
        [sum(i in rel for i in recs[:k]) / len(rel) for recs, rel in _pairs(recommended, relevant)]
    )


def _discounts(n: int) -> np.ndarray:
    """1/log2(rank + 1) for ranks 1..n (computed for the longest list asked, any K)."""
    return 1.0 / np.log2(np.arange(2, 2 + n))


def ndcg_per_user(recommended: Recs, relevant: Truth, k: int = DEFAULT_K) -> np.ndarray:
    """NDCG@K of each evaluable user, in input order (users without truth skipped).

    What the bootstrap resamples: two models scored on the same holdout give arrays of
    the same users in the same order, so they can be compared pair by pair.
    """
    pairs = _pairs(recommended, relevant)
    longest = max((min(k, max(len(recs), len(rel))) for recs, rel in pairs), default=0)
    discount = _discounts(longest)
    scores = np.zeros(len(pairs), dtype=np.float64)
    for n, (recs, rel) in enumerate(pairs):
        dcg = sum(discount[r] for r, i in enumerate(recs[:k]) if i in rel)
        scores[n] = dcg / discount[: min(k, len(rel))].sum()
    return scores


def ndcg_at_k(recommended: Recs, relevant: Truth, k: int = DEFAULT_K) -> float:
    scores = ndcg_per_user(recommended, relevant, k)
    return float(scores.mean()) if scores.size else 0.0


def map_at_k(recommended: Recs, relevant: Truth, k: int = DEFAULT_K) -> float:
    scores = []
    for recs, rel in _pairs(recommended, relevant):
        hits, total = 0, 0.0
        for r, i in enumerate(recs[:k]):
            if i in rel:
                hits += 1
                total += hits / (r + 1)
        scores.append(total / min(k, len(rel)))
    return _mean(scores)


def coverage(recommended: Recs, catalog_size: int, k: int = DEFAULT_K) -> float:
    if catalog_size <= 0:
        raise ValueError("catalog_size must be positive")
    return len({i for recs in recommended for i in recs[:k]}) / catalog_size


def ranking_metrics(
    recommended: Recs, relevant: Truth, k: int = DEFAULT_K, catalog_size: int | None = None
) -> dict[str, float]:
    """All metrics at ``k`` under their MLflow names (``ndcg_at_10``, …)."""
    out = {
        f"precision_at_{k}": precision_at_k(recommended, relevant, k),
        f"recall_at_{k}": recall_at_k(recommended, relevant, k),
        f"ndcg_at_{k}": ndcg_at_k(recommended, relevant, k),
        f"map_at_{k}": map_at_k(recommended, relevant, k),
    }
    if catalog_size:
        out[f"coverage_at_{k}"] = coverage(recommended, catalog_size, k)
    return out
