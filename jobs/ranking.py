"""Top-K ranking from factors: the one function batch publishing, evaluation and the
online service all call, so a user gets the same list wherever it is computed.

Scores are dot products computed block by block with a float32 matrix product (BLAS);
the top K of each row come from ``argpartition`` (linear) and only those K are sorted.
Items a user already interacted with and items not allowed (out of stock) never appear.
Ties break by item index so the order is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_ITEM = -1


@dataclass(frozen=True)
class Seen:
    """Per-user item indices in CSR form: user row ``u`` saw ``indices[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_lists(cls, lists: list[list[int]] | list[np.ndarray]) -> Seen:
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        flat = (
            np.concatenate([np.asarray(x, dtype=np.int32) for x in lists])
            if lists and indptr[-1]
            else np.zeros(0, np.int32)
        )
        return cls(indptr, flat)

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``rows``, item index) of every seen pair of the given users."""
        starts, stops = self.indptr[rows], self.indptr[rows + 1]
        counts = stops - starts
        which = np.repeat(np.arange(len(rows)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return which, self.indices[np.repeat(starts, counts) + offsets]


def top_k(
    user_vectors: np.ndarray,
    item_factors: np.ndarray,
    k: int,
    seen: Seen | None = None,
    rows: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    block: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` items for each user vector: (item indices, scores), best first.

    ``seen`` holds the items to exclude per user; ``rows`` says which of its rows each
    vector is (default: row i for vector i; use ``NO_ITEM``-free arrays). ``allowed`` is a
    boolean mask over items. Slots with no eligible item hold ``NO_ITEM`` and ``-inf``.
    """
    users = np.ascontiguousarray(user_vectors, dtype=np.float32)
    items = np.ascontiguousarray(item_factors, dtype=np.float32)
    n, m = users.shape[0], items.shape[0]
    k = min(k, m)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    out_idx = np.full((n, k), NO_ITEM, dtype=np.int32)
    out_score = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or k == 0:
        return out_idx, out_score
    blocked = None if allowed is None else ~np.asarray(allowed, dtype=bool)
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        scores = users[lo:hi] @ items.T
        if blocked is not None:
            scores[:, blocked] = -np.inf
        if seen is not None:
            valid = rows[lo:hi] >= 0
            which, cols = seen.rows(np.where(valid, rows[lo:hi], 0))
            keep = valid[which]
            scores[which[keep], cols[keep]] = -np.inf
        part = (
            np.argpartition(-scores, k - 1, axis=1)[:, :k]
            if k < m
            else np.tile(np.arange(m), (hi - lo, 1))
        )
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        idx = np.take_along_axis(part, order, axis=1).astype(np.int32)
        best = np.take_along_axis(part_scores, order, axis=1)
        idx[~np.isfinite(best)] = NO_ITEM
        out_idx[lo:hi] = idx
        out_score[lo:hi] = best
    return out_idx, out_score


def popular_k(
    popularity: np.ndarray,
    k: int,
    n_users: int = 1,
    seen: Seen | None = None,
    rows: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The popularity baseline through the same ranker (one-dimensional factors)."""
    ones = np.ones((n_users, 1), dtype=np.float32)
    return top_k(ones, popularity.reshape(-1, 1), k, seen=seen, rows=rows, allowed=allowed)
