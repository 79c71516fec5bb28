"""The hybrid score in training: which content weight a recipe gets, and its operands.

Every fit of a recipe (search trial, test refit, incumbent refit, final fit) is scored
through :func:`operands`, so the weight the search picked on the validation slice is the
weight the gate judges on the test slice and the weight the registered model serves
with. The score itself is :mod:`jobs.model.hybrid`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from jobs.config import Settings
from jobs.model import hybrid
from jobs.model.artifact import RecModel
from jobs.train.evaluate import evaluate
from jobs.train.splits import Holdout


@dataclass(frozen=True)
class TrainContent:
    """The catalog's content as training sees it: projected per encoded item."""

    space: hybrid.ContentSpace
    items: np.ndarray  # (n_items, dims), row j for item code j; zeros without text
    recent: int
    weights: tuple[float, ...]  # the search's choices, 0 first
    min_gain: float = 0.0  # relative NDCG gain over ALS alone a weight > 0 must show

    @classmethod
    def of(
        cls,
        settings: Settings,
        item_ids: np.ndarray,
        content: tuple[np.ndarray, np.ndarray, str] | None,
    ) -> TrainContent | None:
        """None when the hybrid is off (no content, no positive weight, too little text)."""
        weights = tuple(sorted({0.0, *(float(w) for w in settings.hybrid_weights)}))
        if content is None or len(weights) < 2:
            return None
        ids, vectors, _ = content
        space = hybrid.ContentSpace.fit(vectors, settings.hybrid_dims)
        if space is None:
            return None
        items = hybrid.item_content(space, item_ids, ids, vectors)
        if not items.any():
            return None
        return cls(space, items, settings.hybrid_recent_items, weights, settings.hybrid_min_gain)

    def profiles(self, frame: pd.DataFrame, n_users: int) -> np.ndarray:
        return hybrid.profiles(self.items, frame, n_users, self.recent)


def operands(
    u: np.ndarray,
    v: np.ndarray,
    weight: float,
    content: TrainContent | None,
    profiles: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) operands of a recipe's scores: the factors, augmented when hybrid."""
    if weight <= 0 or content is None or profiles is None:
        return u, v
    return hybrid.augment(u, profiles, weight), hybrid.augment(v, content.items)


def pick_weight(
    holdout: Holdout,
    u: np.ndarray,
    v: np.ndarray,
    content: TrainContent | None,
    profiles: np.ndarray | None,
    k: int,
    n_items: int,
) -> tuple[float, dict[float, dict[str, float]]]:
    """(the weight whose NDCG@k on ``holdout`` is best, the metrics of every weight).

    A weight above 0 must beat ALS alone by ``content.min_gain`` (relative) to be taken,
    and ties go to the smaller weight: content enters a recipe only where it clearly
    helped, not on the validation slice's noise.
    """
    weights = (0.0,) if content is None or profiles is None else content.weights
    found = {
        w: evaluate(holdout, *operands(u, v, w, content, profiles), None, k, n_items)
        for w in weights
    }
    ndcg = {w: found[w][f"ndcg_at_{k}"] for w in weights}
    bar = ndcg[0.0] * (1.0 + (content.min_gain if content is not None else 0.0))
    eligible = [w for w in weights if w == 0.0 or ndcg[w] >= bar]
    best = max(eligible, key=lambda w: (ndcg[w], -w))
    return best, found


def attach(
    model: RecModel,
    content: TrainContent,
    content_ids: np.ndarray,
    vectors: np.ndarray,
    frame: pd.DataFrame,
) -> RecModel:
    """The final model with its hybrid arrays: every item's projected content (cold items
    added by :func:`jobs.train.cold.add_cold_items` included, so their content term counts
    too) and every user's profile from ``frame`` (all interactions, codes = model rows)."""
    items = hybrid.item_content(content.space, model.item_ids, content_ids, vectors)
    profiles = hybrid.profiles(items, frame, len(model.user_ids), content.recent)
    params = {
        **model.params,
        "hybrid_dims": int(items.shape[1]),
        "hybrid_recent_items": content.recent,
    }
    return replace(model, item_content=items, user_profiles=profiles, params=params)
