"""The hybrid score: ALS plus how close an item's content is to what the user did lately.

    score(u, i) = x_u · y_i  +  w · p_u · c_i

``c_i`` is the item's content vector (:mod:`jobs.content`) projected on the ``dims``
leading principal directions of the catalog's content and scaled to unit length (zeros
for an item without text); ``p_u`` is the unit mean of ``c`` over the user's ``recent``
latest items. Both terms are one dot product of augmented vectors,
``[x_u, w p_u] · [y_i, c_i]``, so :func:`jobs.model.ranking.top_k` ranks the hybrid
unchanged: the publisher, the service, the evaluation and the gate all score it through
the one function, with the same exactness. The projection keeps that product cheap (32
extra dimensions instead of the encoder's 256) and centring on the catalog's mean takes
out what every item's text shares, which would otherwise lift every item alike.

The weight ``w`` is chosen by the training search on the validation slice, with 0 among
the choices, so content enters a recipe only where it helped there; the gate then
compares the recipe, weight included, on the test slice. Online, an unknown user's
profile comes from the recent items the fold-in reads, and a known user's stored profile
is moved by the items of their session (:func:`session_profile`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Fewer catalog items with text than this: no projection (nothing to learn directions from).
MIN_ITEMS = 10


@dataclass(frozen=True)
class ContentSpace:
    """Centre and principal directions of the catalog's content vectors."""

    mean: np.ndarray  # (dim,)
    basis: np.ndarray  # (dim, dims), orthonormal columns

    @classmethod
    def fit(cls, vectors: np.ndarray, dims: int) -> ContentSpace | None:
        """The leading ``dims`` directions of the rows with text; None with too few."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2:
            return None
        x = x[np.isfinite(x).all(axis=1) & (np.abs(x).sum(axis=1) > 0)]
        if len(x) < MIN_ITEMS:
            return None
        mean = x.mean(axis=0)
        # Right singular vectors of the centred rows: the principal directions, leading first.
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        dims = max(1, min(dims, vt.shape[0]))
        return cls(mean.astype(np.float32), vt[:dims].T.astype(np.float32))

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """Unit-length projections (float32); rows without text or not finite give zeros."""
        x = np.asarray(vectors, dtype=np.float64).reshape(-1, self.basis.shape[0])
        out = np.zeros((len(x), self.basis.shape[1]), dtype=np.float32)
        ok = np.isfinite(x).all(axis=1) & (np.abs(x).sum(axis=1) > 0)
        if ok.any():
            p = (x[ok] - self.mean) @ self.basis.astype(np.float64)
            norms = np.linalg.norm(p, axis=1, keepdims=True)
            out[ok] = np.divide(p, norms, out=np.zeros_like(p), where=norms > 0)
        return out


def item_content(
    space: ContentSpace, item_ids: np.ndarray, content_ids: np.ndarray, vectors: np.ndarray
) -> np.ndarray:
    """Projected content of each of ``item_ids`` (row order kept; zeros when it has none)."""
    where = {str(i): n for n, i in enumerate(content_ids)}
    rows = np.array([where.get(str(i), -1) for i in item_ids], dtype=np.int64)
    out = np.zeros((len(item_ids), space.basis.shape[1]), dtype=np.float32)
    has = rows >= 0
    if has.any():
        out[has] = space.project(np.asarray(vectors)[rows[has]])
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).astype(np.float32)


def profiles(content: np.ndarray, frame: pd.DataFrame, n_users: int, recent: int) -> np.ndarray:
    """Each user's profile: the unit mean content of their ``recent`` latest items.

    ``frame`` holds ``u, i, last_ts`` codes (one row per user and item, as gold has them);
    ties in time break by item code, so the profile does not depend on row order.
    """
    dims = content.shape[1]
    out = np.zeros((n_users, dims), dtype=np.float64)
    if len(frame) and recent > 0:
        ordered = frame.sort_values(["u", "last_ts", "i"], ascending=[True, False, True])
        latest = ordered[ordered.groupby("u").cumcount() < recent]
        np.add.at(out, latest["u"].to_numpy(), content[latest["i"].to_numpy()].astype(np.float64))
    return _unit(out)


def profile_of(content: np.ndarray, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The profile of someone whose recent items are ``rows`` with summed ``weights``
    (the fold-in's items): unit weighted mean of their content."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return np.zeros(content.shape[1], dtype=np.float32)
    w = np.asarray(weights, dtype=np.float64)
    return _unit(w @ content[rows].astype(np.float64))


def session_profile(
    stored: np.ndarray,
    history: int,
    recent: int,
    content: np.ndarray,
    fresh: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """A known user's stored profile moved by their session's ``fresh`` items.

    The stored profile stands for ``min(history, recent)`` items (as many as it was the
    mean of); each fresh item adds its content at its weight, as the fold-in counts them.
    """
    fresh = np.asarray(fresh, dtype=np.int64)
    total = np.asarray(stored, dtype=np.float64) * min(history, recent)
    if len(fresh):
        total = total + np.asarray(weights, dtype=np.float64) @ content[fresh].astype(np.float64)
    return _unit(total)


def augment(factors: np.ndarray, extra: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """``[factors, weight · extra]`` as float32: the hybrid's operand (users or items)."""
    f = np.asarray(factors, dtype=np.float32)
    e = np.asarray(extra, dtype=np.float32)
    return np.ascontiguousarray(np.hstack([f, np.float32(weight) * e]), dtype=np.float32)
