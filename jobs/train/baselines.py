"""Literature baselines evaluated beside ALS on every run: EASE (Steck, 2019).

Reads the training frame (``u, i`` codes); writes nothing. EASE is a linear item-item
model with a closed form: ``B = I - P · diag(1 / diag(P))`` with
``P = (XᵀX + λI)⁻¹`` and a zero diagonal, scores ``X B``. It needs one dense
items × items inverse, cheap for a catalog of a few thousand items (1,682 on MovieLens
100K: well under a second) and out of reach for hundreds of thousands, hence
``max_items``. It is among the strongest simple baselines on MovieLens-like data, so it
tells the gate report where ALS stands, not only that it beats popularity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from jobs.model.ranking import top_k
from jobs.train.metrics import ndcg_per_user, ranking_metrics
from jobs.train.splits import Holdout


def interaction_matrix(frame: pd.DataFrame, n_users: int, n_items: int) -> sparse.csr_matrix:
    """Binary users × items matrix of the pairs in ``frame``."""
    data = np.ones(len(frame), dtype=np.float64)
    x = sparse.csr_matrix((data, (frame["u"], frame["i"])), shape=(n_users, n_items))
    x.data[:] = 1.0  # duplicate pairs summed: back to binary
    return x


def ease(x: sparse.csr_matrix, lam: float) -> np.ndarray:
    """EASE item-item weights ``B`` (items × items, zero diagonal) for penalty ``lam``."""
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


def ease_top_k(
    x: sparse.csr_matrix, b: np.ndarray, holdout: Holdout, k: int, block: int = 2048
) -> np.ndarray:
    """Top ``k`` item codes of the holdout's users (seen excluded), block by block so
    only ``block`` dense user rows exist at once."""
    items_t = np.ascontiguousarray(b)  # scores = X_u · B, the ranker's users @ items_t
    out = []
    for lo in range(0, len(holdout.users), block):
        rows = holdout.users[lo : lo + block]
        vectors = x[rows].toarray().astype(np.float32)
        idx, _ = top_k(vectors, b.T, k, seen=holdout.seen, rows=rows, items_t=items_t)
        out.append(idx)
    return np.concatenate(out) if out else np.zeros((0, k), np.int32)


def evaluate_ease(
    train: pd.DataFrame, holdout: Holdout, n_users: int, n_items: int, lam: float, k: int
) -> tuple[dict[str, float], np.ndarray]:
    """EASE fitted on ``train`` scored on ``holdout``: metrics and per-user NDCG@K."""
    x = interaction_matrix(train, n_users, n_items)
    idx = ease_top_k(x, ease(x, lam), holdout, k)
    recs = [[int(j) for j in row if j >= 0] for row in idx]
    metrics = ranking_metrics(recs, holdout.truth, k=k, catalog_size=n_items)
    return metrics, ndcg_per_user(recs, holdout.truth, k)
