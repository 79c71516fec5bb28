"""A known user's vector moved by what they did since the model was trained.

One function, shared by the service (``jobs.serve.answers``, source ``als_session``) and
the offline evaluation that decides whether it helps (``jobs.train.session_eval``).

The model holds each user's vector ``x`` solved from their training interactions ``H``:
``A x = b`` with (Spark's implicit ALS, item factors ``Y`` fixed, ``c = 1 + alpha * w``)

    A = YᵀY + Σ_{i∈H} (cᵢ − 1) yᵢ yᵢᵀ + reg · |H| · I,     b = Σ_{i∈H} cᵢ yᵢ.

New interactions ``F`` (items not in ``H``) add their terms to both sides; the new vector
solves ``(A + Σ_F (c_f − 1) y_f y_fᵀ + reg · |F| · I) x' = b + Σ_F c_f y_f``. The artifact
keeps ``H`` (``seen``) but not the weights, so ``A`` is rebuilt with every history item at
the weight of a view, and ``b`` is taken as ``A x`` — which makes ``x' = x`` exactly when
nothing is new, whatever the weights were: the answer only moves when the session does.
Underweighting the history makes the fresh items count somewhat more than a retrain
would; that is what a session-aware answer wants, and the offline evaluation measures it.
"""

from __future__ import annotations

import numpy as np

# The weight of one item, of the history when A is rebuilt and of the session: a view
# (jobs.config event_weights). Feast's recent items carry no event types.
ITEM_WEIGHT = 1.0


def session_vector(
    item_factors: np.ndarray,
    gram: np.ndarray,
    user_vector: np.ndarray,
    history_rows: np.ndarray,
    fresh_rows: np.ndarray,
    fresh_weights: np.ndarray,
    reg: float,
    alpha: float,
) -> np.ndarray:
    """``user_vector`` updated with distinct ``fresh_rows`` (not in ``history_rows``) and
    their summed weights; float64 solve, float32 result like the factors."""
    x = np.asarray(user_vector, dtype=np.float64)
    if not len(fresh_rows):
        return x.astype(np.float32)
    yh = item_factors[history_rows].astype(np.float64)
    a = gram + (alpha * ITEM_WEIGHT) * (yh.T @ yh)
    a[np.diag_indices_from(a)] += reg * len(history_rows)
    b = a @ x
    yf = item_factors[fresh_rows].astype(np.float64)
    c1 = alpha * np.asarray(fresh_weights, dtype=np.float64)
    a += (yf.T * c1) @ yf
    a[np.diag_indices_from(a)] += reg * len(fresh_rows)
    b += yf.T @ (1.0 + c1)
    try:
        out = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:  # singular only with reg = 0 and degenerate factors
        out = np.linalg.lstsq(a, b, rcond=None)[0]
    return out.astype(np.float32)
