"""Offline splits: a time-based holdout (what production faces) and a per-user stratified
random split (the protocol published numbers use), and who is evaluated on what."""

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
