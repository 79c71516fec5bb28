"""Items without interactions in a training run: mapped factors and how good they are.

:func:`add_cold_items` gives every catalog item ALS did not train on (and that has text)
factors through the content map fitted on the trained items, so the registered model can
rank the day-one catalog. :func:`evaluate_cold` measures what that is worth: an item-cold
split removes a seeded 10 % of the items with text from training altogether, fits ALS on
the rest with the run's recipe, maps the removed items' content to factors, and ranks
*only the removed items* for each user who interacted with them. Two references, ranked
the same way over the same items: random (a seeded shuffle per user) and popularity among
the new items counted from the *other* users' interactions with them (what the crowd did
with the new items on their first days; it never counts the user's own). Content-mapped
factors must beat random clearly to be worth serving; popularity among the new items is
the harder bar and is often not beaten by content alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from jobs.model import content_map
from jobs.model.artifact import RecModel
from jobs.train.metrics import ndcg_per_user, recall_at_k

log = logging.getLogger(__name__)
COLD_FRACTION = 0.1
MIN_COLD_ITEMS = 5

# (frame of u, i, weight, last_ts) -> (user factors, item factors), indexed by code.
Fit = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]


def content_rows(
    item_ids: np.ndarray, content_ids: np.ndarray, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(codes of the items that have a content vector, their vectors), codes ascending."""
    where = {str(i): n for n, i in enumerate(content_ids)}
    codes = np.array([j for j, i in enumerate(item_ids) if str(i) in where], dtype=np.int64)
    rows = np.array([where[str(item_ids[j])] for j in codes], dtype=np.int64)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    return codes, vectors[rows] if len(rows) else np.zeros((0, dim), np.float32)


def add_cold_items(
    model: RecModel,
    content_ids: np.ndarray,
    vectors: np.ndarray,
    content_model: str,
    seed: int,
    evaluation: dict[str, float] | None = None,
) -> tuple[RecModel, dict[str, Any]]:
    """The model plus the catalog's untrained items with text; run parameters to log.

    Cold items are added only when the content says something: a map whose held-out R²
    is not above 0, or an item-cold ``evaluation`` in which the mapped factors did not
    beat random, adds none (``cold_items_skipped`` says why), so a catalog whose text is
    noise never puts guesses in front of people.
    """
    params: dict[str, Any] = {"content_model": content_model or "none", "cold_items": 0}
    if not len(content_ids):
        return model, params
    vectors = np.asarray(vectors, dtype=np.float32)
    usable = np.isfinite(vectors).all(axis=1) & (np.abs(vectors).sum(axis=1) > 0)
    content_ids, vectors = np.asarray(content_ids)[usable], vectors[usable]
    codes, warm_vecs = content_rows(model.item_ids, content_ids, vectors)
    cmap = content_map.fit(warm_vecs, model.item_factors[codes], content_model, seed)
    if cmap is None:
        log.info("content map not fitted: %d trained items have text", len(codes))
        params["cold_items_skipped"] = "too few trained items with text"
        return model, params
    params.update(
        content_map_reg=cmap.reg,
        content_map_r2=round(cmap.holdout_r2, 4),
        content_map_items=cmap.n_items,
    )
    k = int(model.params.get("k", 10))
    beat = evaluation or {}
    if not cmap.holdout_r2 > 0:
        params["cold_items_skipped"] = "content explains none of the factors (R² <= 0)"
    elif f"cold_ndcg_at_{k}" in beat and not (
        beat[f"cold_ndcg_at_{k}"] > beat.get(f"cold_random_ndcg_at_{k}", 0.0)
    ):
        params["cold_items_skipped"] = "content-mapped factors did not beat random"
    else:
        extended = model.with_cold_items(content_ids, vectors, cmap)
        params["cold_items"] = int(0 if extended.cold is None else extended.cold.sum())
        return extended, params
    log.warning("no cold items added: %s", params["cold_items_skipped"])
    return model, params


def evaluate_cold(
    frame: pd.DataFrame,
    n_users: int,
    item_ids: np.ndarray,
    content_ids: np.ndarray,
    vectors: np.ndarray,
    fit: Fit,
    k: int,
    seed: int,
    fraction: float = COLD_FRACTION,
) -> dict[str, float]:
    """``cold_*`` metrics of the item-cold split (module docstring); {} when it cannot be
    cut (too few items with text or no user interacting with the removed ones)."""
    codes, vecs = content_rows(item_ids, content_ids, vectors)
    has_text = np.isfinite(vecs).all(axis=1) & (np.abs(vecs).sum(axis=1) > 0)
    codes, vecs = codes[has_text], vecs[has_text]
    n_cold = round(fraction * len(codes))
    if n_cold < MIN_COLD_ITEMS or len(codes) - n_cold < content_map.MIN_ITEMS:
        return {}
    rng = np.random.default_rng([seed, 18])
    pick = np.zeros(len(codes), dtype=bool)
    pick[rng.choice(len(codes), n_cold, replace=False)] = True
    cold_codes = codes[pick]
    is_cold = np.zeros(len(item_ids), dtype=bool)
    is_cold[cold_codes] = True
    items = frame["i"].to_numpy()
    train = frame[~is_cold[items]]
    test = frame[is_cold[items]]
    if test.empty:
        return {}
    users, factors = fit(train.reset_index(drop=True))
    cmap = content_map.fit(vecs[~pick], factors[codes[~pick]], "", seed)
    if cmap is None:
        return {}
    cold_factors = cmap.apply(vecs[pick])  # row n is item cold_codes[n]
    position = {int(c): n for n, c in enumerate(cold_codes)}

    truth: dict[int, set[int]] = {}
    for u, i in zip(test["u"].to_numpy(), test["i"].to_numpy(), strict=True):
        truth.setdefault(int(u), set()).add(position[int(i)])
    evaluated = [u for u in sorted(truth) if np.isfinite(users[u]).all() and users[u].any()]
    if not evaluated:
        return {}
    counts = np.bincount(
        [position[int(i)] for i in test["i"].to_numpy()], minlength=len(cold_codes)
    ).astype(np.float64)
    name_k, k = k, min(k, len(cold_codes))
    order_rng = np.random.default_rng([seed, 18, 1])
    lists: dict[str, list[list[int]]] = {"content": [], "random": [], "popular_new": []}
    cold64 = cold_factors.astype(np.float64)
    for lo in range(0, len(evaluated), 1024):  # bounded memory: users x cold items
        block = evaluated[lo : lo + 1024]
        scores = users[block].astype(np.float64) @ cold64.T
        others = np.broadcast_to(counts, scores.shape).copy()
        for r, u in enumerate(block):
            others[r, list(truth[u])] -= 1  # the user's own interactions are not the crowd's
        lists["content"] += _ranked(scores, k)
        lists["popular_new"] += _ranked(others, k)
        lists["random"] += [list(order_rng.permutation(len(cold_codes))[:k]) for _ in block]
    relevant = [truth[u] for u in evaluated]
    out: dict[str, float] = {
        "cold_eval_items": float(len(cold_codes)),
        "cold_eval_users": float(len(evaluated)),
        "cold_map_r2": float(cmap.holdout_r2),
    }
    for name, recs in lists.items():
        prefix = "cold" if name == "content" else f"cold_{name}"
        out[f"{prefix}_ndcg_at_{name_k}"] = float(ndcg_per_user(recs, relevant, k).mean())
        out[f"{prefix}_recall_at_{name_k}"] = recall_at_k(recs, relevant, k)
    return out


def _ranked(scores: np.ndarray, k: int) -> list[list[int]]:
    """Each row's top ``k`` columns by (score desc, column asc)."""
    cols = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((cols, -scores), axis=1)[:, :k]
    return [list(map(int, row)) for row in order]
