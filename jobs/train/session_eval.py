"""Does following the session help? Next-interaction NDCG, session-aware against static.

The protocol replays each evaluated user's test slice (their latest interactions, in
time order, the same slice the gate scores) as a session after the model was trained:
at step ``t`` the user has done the first ``t`` test interactions, and the question is
where the next one ranks in

- ``static``: the list published at training (what the CDN serves; it cannot know the
  session), the user's own vector, training items excluded;
- ``static_unseen``: the same list without the session's items (isolates how much of the
  gain is just "do not show what they just saw");
- ``aware``: the service's ``als_session`` answer — the vector moved by the session so
  far (:func:`jobs.model.session.session_vector`, the very function the service calls),
  training and session items excluded.

NDCG@k with the one next item as relevant: ``1 / log2(rank + 1)`` if it is in the top k.
Steps start at 1 (with nothing new, session and static are one list) and stop at
``max_steps`` per user, so long histories do not outweigh everyone else; the figure is
the mean over all (user, step) pairs, of at most ``RECFLOW_SESSION_EVAL_USERS`` users (a
seeded sample).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.model.ranking import Seen
from jobs.model.session import ITEM_WEIGHT, session_vector

METHODS = ("static", "static_unseen", "aware")


def _ndcg_of_rank(rank: int | None, k: int) -> float:
    return 0.0 if rank is None or rank > k else 1.0 / float(np.log2(rank + 1))


def _rank(scores: np.ndarray, target: int, blocked: np.ndarray) -> int | None:
    """1-based rank of ``target`` among the allowed items (None when blocked, or when its
    score is not finite: a degenerate vector finds nothing)."""
    if blocked[target] or not np.isfinite(scores[target]):
        return None
    s = scores[target]
    ahead = (scores > s) & ~blocked
    return int(ahead.sum()) + 1


def session_ndcg(
    test: pd.DataFrame,
    seen: Seen,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    reg: float,
    alpha: float,
    k: int = 10,
    max_steps: int = 10,
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Mean next-interaction NDCG@k of each method (names ``session_{method}_ndcg_at_{k}``)
    plus the number of (user, step) pairs scored (``session_steps``) over ``test`` (codes
    ``u``, ``i``, ``last_ts``; users and items known to the factors). ``max_users``: a
    seeded sample of that many users (the evaluation costs a solve and a pass over the
    catalog per step); only ``session_steps`` (0) when no step could be scored."""
    n_items = len(item_factors)
    y = item_factors.astype(np.float64)
    gram = y.T @ y
    totals = dict.fromkeys(METHODS, 0.0)
    steps = 0
    users = np.unique(test["u"].to_numpy())
    if max_users is not None and len(users) > max_users:
        chosen = np.random.default_rng(seed).choice(users, max_users, replace=False)
        test = test[test["u"].isin(chosen)]
    order = test.sort_values(["u", "last_ts", "i"], kind="stable")
    for u, group in order.groupby("u", sort=True):
        u = int(u)
        items = group["i"].to_numpy(np.int64)
        if len(items) < 2:
            continue
        # Each session item weighs one view, as in the service (Feast's list has no weights).
        ones = np.full(len(items), ITEM_WEIGHT)
        history = seen.indices[seen.indptr[u] : seen.indptr[u + 1]].astype(np.int64)
        blocked = np.zeros(n_items, dtype=bool)
        blocked[history] = True
        static = y @ user_factors[u].astype(np.float64)
        for t in range(1, min(len(items), max_steps + 1)):
            fresh, target = items[:t], int(items[t])
            if blocked[target]:  # the next item was in training: not a fair question
                continue
            in_session = blocked.copy()
            in_session[fresh] = True
            x = session_vector(
                item_factors, gram, user_factors[u], history, fresh, ones[:t], reg, alpha
            )
            totals["static"] += _ndcg_of_rank(_rank(static, target, blocked), k)
            totals["static_unseen"] += _ndcg_of_rank(_rank(static, target, in_session), k)
            totals["aware"] += _ndcg_of_rank(_rank(y @ x, target, in_session), k)
            steps += 1
    out = {"session_steps": float(steps)}
    if steps:  # none scored: no figure at all (a NaN would not survive JSON metadata stores)
        out.update({f"session_{m}_ndcg_at_{k}": totals[m] / steps for m in METHODS})
    return out
