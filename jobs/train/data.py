"""Training data: gold interactions read at a pinned Delta version and encoded densely.

Reads: gold ``interactions`` (Delta, at its current version, weights decayed as
configured). Writes nothing; the version read is recorded on the MLflow run by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs import tables
from jobs.config import Settings
from jobs.model.ranking import Seen

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Below this there is nothing to split three ways and learn from.
MIN_INTERACTIONS = 50
MIN_USERS = 5


class NotEnoughDataError(RuntimeError):
    """Too few interactions to split, train and evaluate meaningfully."""


def read_gold(spark: SparkSession, settings: Settings) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Gold interactions at the current version (weights decayed as configured)."""
    from pyspark.sql import functions as F

    from jobs.ingest.gold import decayed_weight

    version = tables.version(spark, settings, "interactions")
    if version < 0:
        raise NotEnoughDataError("gold interactions do not exist yet: run ingest first")
    path = tables.path(settings, "interactions")
    frame = spark.read.format("delta").option("versionAsOf", version).load(path)
    newest = frame.agg(F.max("last_ts")).first()[0]
    as_of = newest or datetime.now()
    pdf = frame.select(
        "user_id",
        "item_id",
        decayed_weight(as_of, settings.recency_half_life_days).alias("weight"),
        "last_ts",
    ).toPandas()
    info = {
        "gold_interactions_path": path,
        "gold_interactions_version": version,
        "silver_events_version": tables.applied_version(spark, settings, "interactions", "events"),
        "interactions": len(pdf),
        "as_of": str(as_of),
    }
    return pdf, info


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
