"""Spark ALS on implicit feedback: the hyperparameters, the candidates searched, the solve.

The interactions arrive as a small pandas frame of dense codes (``u, i, weight``): at the
sizes a single driver evaluates (millions of pairs) that is cheaper than keeping every
step in Spark, and ranking and metrics then run in numpy exactly as when publishing.
Spark does what it is good at: the ALS solve, which scales out.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass(frozen=True)
class ALSParams:
    """One point of the search. No defaults here: they live in the settings only."""

    rank: int
    reg: float
    alpha: float
    iterations: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ALSParams:
        return cls(settings.als_rank, settings.als_reg, settings.als_alpha, settings.als_iterations)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "reg": self.reg,
            "alpha": self.alpha,
            "iterations": self.iterations,
        }


def candidates(settings: Settings) -> list[ALSParams]:
    """The defaults first, then each grid entry applied over them (duplicates dropped)."""
    base = ALSParams.from_settings(settings)
    out = [base]
    for override in settings.als_grid:
        fields = {k: type(getattr(base, k))(v) for k, v in override.items()}
        candidate = replace(base, **fields)
        if candidate not in out:
            out.append(candidate)
    return out


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
