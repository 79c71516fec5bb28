"""Single-node ALS with the ``implicit`` package (CPU conjugate gradient), no Spark.

Reads a frame of codes ``u, i, weight`` already weighted by :mod:`jobs.train.weighting`
and returns float32 user and item factors indexed by code, like the Spark engine in
:mod:`jobs.train.als`. On one machine it is many times faster than Spark's ALS
(BENCHMARKS.md, issue 17), so every fit of a training run (search, test, stratified,
final, incumbent refits) costs a fraction of a second to seconds at the sizes one
machine holds. Nothing here imports Spark.

The same model as Spark's ``ALS(implicitPrefs=True)``:

- confidence: Spark uses ``c = 1 + alpha * r`` with preference 1 for ``r > 0`` and
  confidence 1 for absent pairs; ``implicit`` takes the matrix value itself as the
  confidence (absent pairs 1), so the matrix holds ``1 + alpha * r``;
- regularisation: Spark adds ``reg * n_u`` to each user's normal equations (ALS-WR,
  ``n_u`` the user's number of pairs; items alike), implicit's solver one constant for
  every row. The count-scaled term is reproduced exactly by ``rank`` virtual columns
  with factors ``sqrt(reg) * e_k``: each row holds them as *negative* entries of
  magnitude ``n_u``, which implicit reads as confidence ``n_u`` with preference 0, so
  they add ``reg * I`` to every row through the Gram matrix and ``(n_u - 1) * reg * I``
  to the row itself — ``reg * n_u * I`` in total — and nothing to its right-hand side.
  The solver's own constant is then 0. Measured on MovieLens 100K the two engines
  reach the same NDCG@10 within 0.005 on five recipes (BENCHMARKS.md); with one
  constant (``reg`` or ``reg`` x the mean count) the gap was up to 0.05.

The sweep loop is written here (not ``AlternatingLeastSquares.fit``) to pass the
augmented matrices; it calls implicit's compiled CG half-sweep, the one ``fit`` calls
(a private module of implicit 0.7, pinned in the lock). Deterministic for a fixed seed:
the initial factors come from a seeded generator, each row's solve reads only the other
side's factors (so the number of OpenMP threads does not change the result), and BLAS
runs on one thread, scoped to the fit by threadpoolctl — what implicit asks for speed,
without touching the process environment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

# implicit's default: three CG steps a row per half-sweep, warm-started from the last
# sweep. More steps changed NDCG@10 on MovieLens by < 0.003 and cost 1.5-2x the time.
CG_STEPS = 3


def confidences(frame: pd.DataFrame, n_users: int, n_items: int, alpha: float) -> sp.csr_matrix:
    """The user x item matrix of confidences ``1 + alpha * weight`` (float32, CSR).

    Only pairs of positive weight are stored: a stored entry is a preference of 1 and
    counts towards its row's regulariser, while Spark's implicit ALS gives a weight of 0
    preference 0 and does not count it. Weights of 0 do occur (a recency decay far past
    its half-life underflows float32); weighting never makes them negative.
    """
    weight = frame["weight"].to_numpy(np.float64)
    keep = weight > 0
    conf = 1.0 + alpha * weight[keep]
    matrix = sp.csr_matrix(
        (conf.astype(np.float32), (frame["u"].to_numpy()[keep], frame["i"].to_numpy()[keep])),
        shape=(n_users, n_items),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    return matrix


def with_count_penalty(matrix: sp.csr_matrix, rank: int) -> sp.csr_matrix:
    """``matrix`` with ``rank`` columns appended holding ``-n`` on each row of ``n`` pairs.

    With those columns' factors ``sqrt(reg) * I`` this is Spark's ``reg * n`` ridge term
    (module docstring). Rows without pairs get nothing (their factors are zeroed).
    """
    n_rows, n_cols = matrix.shape
    counts = np.diff(matrix.indptr)
    rows = np.repeat(np.flatnonzero(counts), rank)
    cols = np.tile(np.arange(n_cols, n_cols + rank), int((counts > 0).sum()))
    values = -np.repeat(counts[counts > 0], rank).astype(np.float32)
    penalty = sp.csr_matrix((values, (rows, cols)), shape=(n_rows, n_cols + rank))
    widened = sp.csr_matrix(
        (matrix.data, matrix.indices, matrix.indptr), shape=(n_rows, n_cols + rank)
    )
    out = (widened + penalty).tocsr()
    out.sort_indices()
    return out.astype(np.float32)


def solve_rows(
    penalised: sp.csr_matrix,
    rows: np.ndarray,
    other: np.ndarray,
    reg: float,
    threads: int = 0,
    cg_steps: int = CG_STEPS,
) -> None:
    """One half-sweep in place: each row of ``rows`` from ``other``'s factors.

    ``penalised`` comes from :func:`with_count_penalty`; the virtual columns' factors
    ``sqrt(reg) * I`` are stacked under ``other`` here, and implicit's own constant is 0.
    """
    from implicit.cpu import _als

    rank = rows.shape[1]
    ridge = (np.sqrt(reg) * np.eye(rank)).astype(np.float32)
    stacked = np.ascontiguousarray(np.vstack([other, ridge]), dtype=np.float32)
    _als.least_squares_cg(penalised, rows, stacked, 0.0, num_threads=threads, cg_steps=cg_steps)


def fit(
    frame: pd.DataFrame,
    n_users: int,
    n_items: int,
    rank: int,
    reg: float,
    alpha: float,
    iterations: int,
    seed: int,
    threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """ALS-WR on weighted ``u, i, weight``; users or items absent keep zero vectors."""
    from threadpoolctl import threadpool_limits

    cui = confidences(frame, n_users, n_items, alpha)
    ciu = cui.T.tocsr()
    by_user, by_item = with_count_penalty(cui, rank), with_count_penalty(ciu, rank)
    rng = np.random.default_rng(seed)
    # Small positive values, implicit's own initial scale.
    users = rng.random((n_users, rank), dtype=np.float32) * np.float32(0.01)
    items = rng.random((n_items, rank), dtype=np.float32) * np.float32(0.01)
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(iterations):
            solve_rows(by_user, users, items, reg, threads)
            solve_rows(by_item, items, users, reg, threads)
    # Spark has no factors for rows without pairs (they score nothing): zero, not noise.
    users[np.diff(cui.indptr) == 0] = 0.0
    items[np.diff(ciu.indptr) == 0] = 0.0
    return users, items
