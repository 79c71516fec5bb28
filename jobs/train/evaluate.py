"""Offline evaluation: the factor model, the popularity baseline and a registered model
(the champion) ranked with the serving ranker and scored by :mod:`jobs.train.metrics`."""

from __future__ import annotations

import numpy as np

from jobs.model.artifact import RecModel
from jobs.model.ranking import popular_k, top_k
from jobs.train.data import Encoded
from jobs.train.metrics import ndcg_per_user, ranking_metrics
from jobs.train.splits import Holdout


def evaluate(
    holdout: Holdout,
    user_factors: np.ndarray | None,
    item_factors: np.ndarray | None,
    popularity: np.ndarray | None,
    k: int,
    catalog_size: int,
) -> dict[str, float]:
    """Metrics at ``k`` of the factor model (or, with ``popularity``, of the baseline)."""
    return evaluate_per_user(holdout, user_factors, item_factors, popularity, k, catalog_size)[0]


def evaluate_per_user(
    holdout: Holdout,
    user_factors: np.ndarray | None,
    item_factors: np.ndarray | None,
    popularity: np.ndarray | None,
    k: int,
    catalog_size: int,
) -> tuple[dict[str, float], np.ndarray]:
    """:func:`evaluate` plus each holdout user's NDCG@K (for bootstrap intervals)."""
    if popularity is not None:
        idx, _ = popular_k(popularity, k, len(holdout.users), holdout.seen, holdout.users)
    else:
        assert user_factors is not None and item_factors is not None
        idx, _ = top_k_for(holdout, user_factors, item_factors, k)
    recs = [[int(j) for j in row if j >= 0] for row in idx]
    return (
        ranking_metrics(recs, holdout.truth, k=k, catalog_size=catalog_size),
        ndcg_per_user(recs, holdout.truth, k),
    )


def metric_curve(
    holdout: Holdout,
    user_factors: np.ndarray | None,
    item_factors: np.ndarray | None,
    popularity: np.ndarray | None,
    ks: list[int],
    catalog_size: int,
) -> dict[int, dict[str, float]]:
    """Metrics at several K from one top-max(K) ranking (for the metric@K plot)."""
    return {
        k: evaluate(holdout, user_factors, item_factors, popularity, k, catalog_size) for k in ks
    }


def top_k_for(
    holdout: Holdout, user_factors: np.ndarray, item_factors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The factor model's top ``k`` for the holdout's users (seen items excluded)."""
    return top_k(
        user_factors[holdout.users], item_factors, k, seen=holdout.seen, rows=holdout.users
    )


def evaluate_registered(
    model: RecModel, enc: Encoded, holdout: Holdout, k: int
) -> dict[str, float]:
    """Metrics of an already registered model (the champion) on this run's holdout."""
    rows = np.array([model.user_index.get(str(enc.user_ids[u]), -1) for u in holdout.users])
    recs: list[list[int]] = [[] for _ in rows]
    known = np.flatnonzero(rows >= 0)
    if len(known):
        idx, _ = model.recommend_rows(rows[known], k)
        code = {item: j for j, item in enumerate(enc.item_ids)}
        for pos, row in zip(known, idx, strict=True):
            recs[pos] = [code.get(str(model.item_ids[j]), -1) for j in row if j >= 0]
    return ranking_metrics(recs, holdout.truth, k=k, catalog_size=enc.n_items)
