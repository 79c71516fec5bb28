"""Spark ALS on implicit feedback, the offline splits, and evaluation against a baseline.

The interactions arrive as a small pandas frame (``user_id, item_id, weight, last_ts``):
at the sizes a single driver evaluates (millions of pairs) this is cheaper than keeping
every step in Spark, and the ranking and metrics then run in numpy exactly as they do
when publishing. Spark does what it is good at: the ALS solve, which scales out.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.metrics import ranking_metrics
from jobs.ranking import Seen, popular_k, top_k

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass(frozen=True)
class ALSParams:
    rank: int = 64
    reg: float = 0.05
    alpha: float = 10.0
    iterations: int = 15

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "reg": self.reg,
            "alpha": self.alpha,
            "iterations": self.iterations,
        }


@dataclass
class Encoded:
    """Interactions with dense integer codes for users and items."""

    frame: pd.DataFrame  # u, i, weight, last_ts
    user_ids: np.ndarray
    item_ids: np.ndarray

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> Encoded:
        u_codes, users = pd.factorize(df["user_id"], sort=True)
        i_codes, items = pd.factorize(df["item_id"], sort=True)
        frame = pd.DataFrame(
            {
                "u": u_codes.astype(np.int32),
                "i": i_codes.astype(np.int32),
                "weight": df["weight"].to_numpy(np.float32),
                "last_ts": df["last_ts"].to_numpy(),
            }
        )
        return cls(frame, np.asarray(users, dtype=str), np.asarray(items, dtype=str))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


# -- splits -----------------------------------------------------------------------------


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


def seen_of(frame: pd.DataFrame, n_users: int) -> Seen:
    """CSR of each user's items in ``frame`` (the items not to recommend again)."""
    ordered = frame.sort_values(["u", "i"], kind="stable")
    counts = np.bincount(ordered["u"].to_numpy(), minlength=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return Seen(indptr, ordered["i"].to_numpy(np.int32))


def popularity_of(frame: pd.DataFrame, n_items: int) -> np.ndarray:
    """Item popularity: summed interaction weight."""
    return np.bincount(
        frame["i"].to_numpy(), weights=frame["weight"].to_numpy(np.float64), minlength=n_items
    ).astype(np.float32)


# -- the ALS solve ---------------------------------------------------------------------


def fit(
    spark: SparkSession,
    frame: pd.DataFrame,
    n_users: int,
    n_items: int,
    params: ALSParams,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Spark ALS (implicit) on ``u, i, weight``; float32 factors indexed by code.

    Users or items absent from ``frame`` keep zero vectors (they score nothing).
    """
    from pyspark.ml.recommendation import ALS

    with tempfile.TemporaryDirectory(prefix="recflow-als-") as tmp:
        # Through parquet: createDataFrame from a large pandas frame is slow and warns.
        path = Path(tmp) / "train.parquet"
        frame[["u", "i", "weight"]].to_parquet(path, index=False)
        data = spark.read.parquet(str(path))
        als = ALS(
            rank=params.rank,
            regParam=params.reg,
            alpha=params.alpha,
            maxIter=params.iterations,
            implicitPrefs=True,
            userCol="u",
            itemCol="i",
            ratingCol="weight",
            seed=seed,
            coldStartStrategy="drop",
        )
        model = als.fit(data)
        users = _factors(model.userFactors.toPandas(), n_users, params.rank)
        items = _factors(model.itemFactors.toPandas(), n_items, params.rank)
    return users, items


def _factors(pdf: pd.DataFrame, n: int, rank: int) -> np.ndarray:
    out = np.zeros((n, rank), dtype=np.float32)
    if len(pdf):
        out[pdf["id"].to_numpy()] = np.stack(pdf["features"].to_numpy()).astype(np.float32)
    return out


# -- evaluation -------------------------------------------------------------------------


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


def evaluate(
    holdout: Holdout,
    user_factors: np.ndarray | None,
    item_factors: np.ndarray | None,
    popularity: np.ndarray | None,
    k: int,
    catalog_size: int,
) -> dict[str, float]:
    """Metrics at ``k`` of the factor model (or, with ``popularity``, of the baseline)."""
    if popularity is not None:
        idx, _ = popular_k(popularity, k, len(holdout.users), holdout.seen, holdout.users)
    else:
        assert user_factors is not None and item_factors is not None
        idx, _ = top_k_for(holdout, user_factors, item_factors, k)
    recs = [[int(j) for j in row if j >= 0] for row in idx]
    return ranking_metrics(recs, holdout.truth, k=k, catalog_size=catalog_size)


def metric_curve(
    holdout: Holdout,
    user_factors: np.ndarray | None,
    item_factors: np.ndarray | None,
    popularity: np.ndarray | None,
    ks: list[int],
    catalog_size: int,
) -> dict[int, dict[str, float]]:
    """Metrics at several K from one top-max(K) ranking (for the metric@K plot)."""
    return {
        k: evaluate(holdout, user_factors, item_factors, popularity, k, catalog_size) for k in ks
    }


def top_k_for(
    holdout: Holdout, user_factors: np.ndarray, item_factors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The factor model's top ``k`` for the holdout's users (seen items excluded)."""
    return top_k(
        user_factors[holdout.users], item_factors, k, seen=holdout.seen, rows=holdout.users
    )
