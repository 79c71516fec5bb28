"""The hybrid score: ALS plus how close an item's content is to what the user did lately.

    score(u, i) = x_u · y_i  +  w · p_u · c_i

``c_i`` is the item's content vector (:mod:`jobs.content`) projected on the ``dims``
leading principal directions of the catalog's content and scaled to unit length (zeros
for an item without text); ``p_u`` is the mean of ``c`` over the user's ``recent``
latest items (stored as the mean, scaled to unit length where scored). Both terms are
one dot product of augmented vectors, ``[x_u, w p_u] · [y_i, c_i]``, so
:func:`jobs.model.ranking.top_k` ranks the hybrid unchanged: the publisher, the service,
the evaluation and the gate all score it through the one function, with the same
exactness. The projection keeps that product cheap (32 extra dimensions instead of the
encoder's 256) and centring on the catalog's mean takes out what every item's text
shares, which would otherwise lift every item alike.

The weight ``w`` is chosen by the training search on the validation slice, with 0 among
the choices, so content enters a recipe only where it helped there; the gate then
compares the recipe, weight included, on the test slice. Online, an unknown user's
profile comes from the recent items the fold-in reads, and a known user's stored profile
is moved by the items of their session (:func:`session_profile`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# How many latest items a profile is the mean of, for an artifact that does not say.
DEFAULT_RECENT = 20
# Fewer catalog items with text than this: no projection (nothing to learn directions from).
MIN_ITEMS = 10
_CHUNK = 65_536


@dataclass(frozen=True)
class ContentSpace:
    """Centre and principal directions of the catalog's content vectors."""

    mean: np.ndarray  # (dim,)
    basis: np.ndarray  # (dim, dims), orthonormal columns

    @classmethod
    def fit(cls, vectors: np.ndarray, dims: int) -> ContentSpace | None:
        """The leading ``dims`` directions of the rows with text; None with too few."""
        x = np.asarray(vectors)
        if x.ndim != 2 or not x.shape[1]:
            return None
        # Chunks of rows, so a million-item catalog never needs a float64 copy of itself.
        n, total, gram = 0, np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        for lo in range(0, len(x), _CHUNK):
            part = x[lo : lo + _CHUNK].astype(np.float64)
            part = part[np.isfinite(part).all(axis=1) & (np.abs(part).sum(axis=1) > 0)]
            n += len(part)
            total += part.sum(axis=0)
            gram += part.T @ part
        if n < MIN_ITEMS:
            return None
        mean = total / n
        # Eigenvectors of the covariance: the principal directions, leading first.
        vals, vecs = np.linalg.eigh(gram / n - np.outer(mean, mean))
        dims = max(1, min(dims, len(vals), n))
        return cls(mean.astype(np.float32), vecs[:, ::-1][:, :dims].astype(np.float32))

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


def profiles(content: np.ndarray, frame: pd.DataFrame, n_users: int, recent: int) -> np.ndarray:
    """Each user's profile: the mean content of their ``recent`` latest distinct items.

    A mean, not a direction: a session adds its items to it exactly (``session_profile``),
    and :func:`user_operand` scales it to unit length where it is scored. ``frame`` holds
    ``u, i, last_ts`` codes (one row per user and item, as gold has them); ties in time
    break by item code, so the profile does not depend on row order.
    """
    dims = content.shape[1]
    total = np.zeros((n_users, dims), dtype=np.float64)
    count = np.zeros(n_users, dtype=np.float64)
    if len(frame) and recent > 0:
        ordered = frame.sort_values(["u", "last_ts", "i"], ascending=[True, False, True])
        latest = ordered[ordered.groupby("u").cumcount() < recent]
        users = latest["u"].to_numpy()
        np.add.at(total, users, content[latest["i"].to_numpy()].astype(np.float64))
        np.add.at(count, users, 1.0)
    return (total / np.maximum(count, 1.0)[:, None]).astype(np.float32)


def latest_distinct(rows: np.ndarray, recent: int) -> np.ndarray:
    """The first ``recent`` distinct rows of a newest-first list (Feast's order)."""
    rows = np.asarray(rows, dtype=np.int64)
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)][:recent]


def profile_of(content: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The profile of someone whose latest distinct items are ``rows`` (the fold-in's):
    the mean of their content, as :func:`profiles` computes it at training."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return np.zeros(content.shape[1], dtype=np.float32)
    return content[rows].astype(np.float64).mean(axis=0).astype(np.float32)


def session_profile(
    stored: np.ndarray, history: int, recent: int, content: np.ndarray, fresh: np.ndarray
) -> np.ndarray:
    """A known user's stored profile with their session's distinct ``fresh`` items in it,
    as a retraining would compute it: the fresh items are the latest, and they push out
    as many of the ``min(history, recent)`` items the stored mean stands for (the oldest,
    taken here at the mean's value, since the artifact does not keep their order)."""
    fresh = np.asarray(fresh, dtype=np.int64)[:recent]
    kept = min(history, recent, max(0, recent - len(fresh)))
    total = np.asarray(stored, dtype=np.float64) * kept
    if len(fresh):
        total = total + content[fresh].astype(np.float64).sum(axis=0)
    return (total / max(kept + len(fresh), 1)).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).astype(np.float32)


def weight_of(value: object) -> float:
    """A recorded hybrid weight as every reader takes it (the artifact, a recipe): a value
    that is not a positive finite number (a hand-edited artifact) is 0, ALS alone."""
    try:
        weight = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return weight if np.isfinite(weight) and weight > 0 else 0.0


def augment(factors: np.ndarray, extra: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """``[factors, weight · extra]`` as float32: the hybrid's item operand is
    ``augment(y, c)``; the user operand is :func:`user_operand`."""
    f = np.asarray(factors, dtype=np.float32)
    e = np.asarray(extra, dtype=np.float32)
    return np.ascontiguousarray(np.hstack([f, np.float32(weight) * e]), dtype=np.float32)


def user_operand(factors: np.ndarray, profiles: np.ndarray, weight: float) -> np.ndarray:
    """``[x_u, w · p_u / |p_u|]``: every scorer's user operand (rows or one 1-D vector)."""
    one = np.ndim(factors) == 1
    f, p = np.atleast_2d(factors), np.atleast_2d(profiles)
    out = augment(f, unit(p), weight)
    return out[0] if one else out
