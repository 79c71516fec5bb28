"""Offline splits: time-based holdouts (what production faces) and a per-user stratified
random split (the protocol published numbers use), and who is evaluated on what.

The time protocol training uses is :func:`user_time_split`: each user's latest
interactions are held out. The global cut (:func:`time_split`, the latest fraction of
all interactions) left only a few dozen evaluable users on MovieLens, whose ratings end
at different dates; per user, every user with enough history is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from jobs.model.ranking import Seen
from jobs.train.data import seen_of


def time_split(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latest ``test_fraction`` of interactions (by ``last_ts``) become the test slice."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    order = frame.sort_values(["last_ts", "u", "i"], kind="stable")
    cut = round(len(order) * (1 - test_fraction))
    return order.iloc[:cut], order.iloc[cut:]


def user_time_split(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest ``test_fraction`` of interactions (by ``last_ts``) are held out.

    At least one pair is held out of every user with two or more, and at least one stays
    in training, so each such user is both known to the model and evaluable. Ties in
    time break by item code, so the split is deterministic.
    """
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    order = frame.sort_values(["u", "last_ts", "i"], kind="stable")
    size = order.groupby("u")["u"].transform("size").to_numpy()
    from_end = size - order.groupby("u").cumcount().to_numpy()  # 1 = the user's latest
    n_test = np.where(size >= 2, np.clip(np.round(size * test_fraction), 1, size - 1), 0)
    in_test = from_end <= n_test
    return order[~in_test], order[in_test]


def stratified_split(
    frame: pd.DataFrame, ratio: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user, a random ``ratio`` of their interactions train and the rest test."""
    rng = np.random.default_rng(seed)
    shuffled = frame.iloc[rng.permutation(len(frame))]
    position = shuffled.groupby("u").cumcount()
    size = shuffled.groupby("u")["u"].transform("size")
    in_train = position < np.round(size * ratio)
    return shuffled[in_train], shuffled[~in_train]


@dataclass
class Holdout:
    """Who is evaluated on what: user codes with their held-out item codes."""

    users: np.ndarray
    truth: list[set[int]]
    seen: Seen

    @classmethod
    def of(cls, train: pd.DataFrame, test: pd.DataFrame, n_users: int) -> Holdout:
        """Test pairs of users and items known to training, unseen in training."""
        known_items = set(train["i"].unique())
        known_users = set(train["u"].unique())
        test = test[test["u"].isin(known_users) & test["i"].isin(known_items)]
        grouped = test.groupby("u")["i"].agg(set)
        return cls(grouped.index.to_numpy(np.int64), list(grouped), seen_of(train, n_users))
