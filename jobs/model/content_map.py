"""From content vectors to ALS item factors: what gives a new item factors on day one.

At every training a ridge regression (with intercept) is fitted from the content vectors
of the items ALS trained on to their factors. An item in the catalog that ALS never saw
then gets ``b + e W`` as its factors, so users are scored against it with the same dot
product as any other item, by the one ranking function, and ``/similar`` finds its
neighbours through those factors. Items without any text get nothing: the mean item is
not a prediction.

The penalty is chosen per fit from a grid on a seeded 20 % of the warm items (the grid
spans under- to over-smoothing for unit-length 256-dimension vectors and a few hundred to
a million items); one eigendecomposition of the Gram matrix serves the whole grid. The
chosen penalty and the held-out fit are run parameters, so a reviewer sees whether the
content says anything about taste at all (an R² near 0 means it does not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
HOLDOUT = 0.2
MIN_ITEMS = 10  # fewer warm items with text than this: no map (nothing to learn from)


@dataclass(frozen=True)
class ContentMap:
    """``factors = bias + vectors @ weights`` (float32), and how it was chosen."""

    weights: np.ndarray  # (dim, rank)
    bias: np.ndarray  # (rank,)
    reg: float
    holdout_r2: float
    n_items: int
    model: str  # the content model's id: vectors from another model do not fit

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float64)
        out = self.bias[None, :] + vectors @ self.weights.astype(np.float64)
        return out.astype(np.float32)

    def as_array(self) -> np.ndarray:
        """One (dim + 1, rank) float32 array for the artifact: bias first."""
        return np.vstack([self.bias[None, :], self.weights]).astype(np.float32)

    @classmethod
    def from_array(cls, array: np.ndarray, model: str, meta: dict) -> ContentMap:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] < 2 or not np.isfinite(array).all():
            raise ValueError(f"content map of shape {array.shape}: expected finite (dim + 1, rank)")
        return cls(
            weights=array[1:],
            bias=array[0],
            reg=float(meta.get("reg", 0.0)),
            holdout_r2=float(meta.get("holdout_r2", float("nan"))),
            n_items=int(meta.get("n_items", 0)),
            model=model,
        )


def _solve(gram_vals: np.ndarray, gram_vecs: np.ndarray, xty: np.ndarray, reg: float) -> np.ndarray:
    return gram_vecs @ ((gram_vecs.T @ xty) / (gram_vals + reg)[:, None])


def fit(vectors: np.ndarray, factors: np.ndarray, model: str, seed: int = 0) -> ContentMap | None:
    """Ridge from ``vectors`` (n, dim) to ``factors`` (n, rank); None with too few items.

    Rows of ``vectors`` that are all zero (no text) or not finite are left out.
    """
    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(factors, dtype=np.float64)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1) & (np.abs(x).sum(axis=1) > 0)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < MIN_ITEMS:
        return None
    rng = np.random.default_rng(seed)
    test = np.zeros(n, dtype=bool)
    test[rng.choice(n, max(1, int(HOLDOUT * n)), replace=False)] = True

    def fit_on(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        mx, my = x[rows].mean(axis=0), y[rows].mean(axis=0)
        xc, yc = x[rows] - mx, y[rows] - my
        vals, vecs = np.linalg.eigh(xc.T @ xc)
        return mx, my, (vals.clip(min=0), vecs), xc.T @ yc  # type: ignore[return-value]

    mx, my, (vals, vecs), xty = fit_on(~test)
    held = y[test] - my
    total = float((held**2).sum()) or 1.0
    scores = {}
    for reg in GRID:
        w = _solve(vals, vecs, xty, reg)
        pred = (x[test] - mx) @ w
        scores[reg] = 1.0 - float(((held - pred) ** 2).sum()) / total
    reg = max(GRID, key=lambda r: (scores[r], -r))
    mx, my, (vals, vecs), xty = fit_on(np.ones(n, dtype=bool))
    w = _solve(vals, vecs, xty, reg)
    return ContentMap(
        weights=w.astype(np.float32),
        bias=(my - mx @ w).astype(np.float32),
        reg=reg,
        holdout_r2=scores[reg],
        n_items=n,
        model=model,
    )
