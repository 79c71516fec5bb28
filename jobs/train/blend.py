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
from jobs.train.evaluate import evaluate_per_user
from jobs.train.splits import Holdout
from jobs.train.stats import paired_relative_ci


@dataclass(frozen=True)
class TrainContent:
    """The catalog's content as training sees it: projected per encoded item."""

    space: hybrid.ContentSpace
    items: np.ndarray  # (n_items, dims), row j for item code j; zeros without text
    recent: int
    weights: tuple[float, ...]  # the search's choices, 0 first
    # A weight > 0 is taken only if the paired bootstrap interval (``samples`` draws at
    # ``level``) of its relative NDCG gain over ALS alone lies above ``min_gain``.
    min_gain: float = 0.0
    samples: int = 2000
    level: float = 0.95
    seed: int = 0

    @classmethod
    def of(
        cls,
        settings: Settings,
        item_ids: np.ndarray,
        content: tuple[np.ndarray, np.ndarray, str] | None,
    ) -> TrainContent | None:
        """None without content to score (none read, or too little text). Built even when
        the search tries no weight above 0: an incumbent whose recipe has one is still
        scored with its content term."""
        weights = tuple(sorted({0.0, *(float(w) for w in settings.hybrid_weights)}))
        if content is None:
            return None
        ids, vectors, _ = content
        space = hybrid.ContentSpace.fit(vectors, settings.hybrid_dims)
        if space is None:
            return None
        items = hybrid.item_content(space, item_ids, ids, vectors)
        if not items.any():
            return None
        return cls(
            space,
            items,
            settings.hybrid_recent_items,
            weights,
            settings.hybrid_min_gain,
            settings.gate_bootstrap_samples,
            settings.gate_confidence,
            settings.seed,
        )

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
    return hybrid.user_operand(u, profiles, weight), hybrid.augment(v, content.items)


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

    The best weight above 0 is taken only if the paired bootstrap interval over users of
    its relative gain over ALS alone lies wholly above ``content.min_gain`` (the test the
    gate applies between models): content enters a recipe only where it clearly helped,
    never on the validation slice's noise. Ties go to the smaller weight.
    """
    weights = (0.0,) if content is None or profiles is None else content.weights
    found, per_user = {}, {}
    for w in weights:
        found[w], per_user[w] = evaluate_per_user(
            holdout, *operands(u, v, w, content, profiles), None, k, n_items
        )
    best = max(weights, key=lambda w: (found[w][f"ndcg_at_{k}"], -w))
    if best > 0 and content is not None:
        gain = paired_relative_ci(
            per_user[best], per_user[0.0], content.samples, content.level, content.seed
        )
        if not gain.low > content.min_gain:  # NaN (no users) counts as no gain
            best = 0.0
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
