"""ALS on implicit feedback: the hyperparameters, the search space, the engine, the solve.

The interactions arrive as a small pandas frame of dense codes (``u, i, weight``): at the
sizes a single driver evaluates (millions of pairs) that is cheaper than keeping every
step in Spark, and ranking and metrics then run in numpy exactly as when publishing.
The solve runs on one of two engines behind one seam, :func:`fit` (issue 17): Spark's
ALS, which scales out, or ``implicit``'s CPU solver (:mod:`jobs.train.als_implicit`),
many times faster on one machine; both solve the same ALS-WR problem, and
:class:`Engine` picks one from the settings and the size of the fit. The engine is not
part of a recipe: an incumbent refitted for the gate runs on the engine the current
settings pick, like the challenger, so the gate compares recipes, not solvers.

The hyperparameters include how interactions become confidences
(:mod:`jobs.train.weighting`: a scheme and a recency half-life), applied inside
:func:`fit`, so every fit of a recipe — search, test, final, an incumbent refitted for
the gate — weighs the data the same way.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from jobs.config import Settings
from jobs.model import hybrid

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass(frozen=True)
class ALSParams:
    """One point of the search. No defaults here: they live in the settings only."""

    rank: int
    reg: float
    alpha: float
    iterations: int
    weighting: str
    half_life_days: float
    # The content term's weight (jobs.model.hybrid): not a setting but the search's
    # choice for the fitted factors, so every recipe starts at 0 (ALS alone).
    hybrid_weight: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ALSParams:
        return cls(
            settings.als_rank,
            settings.als_reg,
            settings.als_alpha,
            settings.als_iterations,
            settings.als_weighting,
            settings.als_half_life_days,
        )

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> ALSParams:
        """The recipe a registered model was trained with (its artifact's params).

        Versions from before weighting was searchable trained on the plain gold weights:
        that is ``none`` with no recency decay, which is what they get; versions from
        before the hybrid score get ALS alone.
        """
        return cls(
            int(params["rank"]),
            float(params["reg"]),
            float(params["alpha"]),
            int(params["iterations"]),
            str(params.get("weighting", "none")),
            float(params.get("half_life_days", 0.0)),
            hybrid.weight_of(params.get("hybrid_weight", 0.0)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "reg": self.reg,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "weighting": self.weighting,
            "half_life_days": self.half_life_days,
            "hybrid_weight": self.hybrid_weight,
        }

    def label(self) -> str:
        return (
            f"rank{self.rank} reg{self.reg:.3g} a{self.alpha:.3g} {self.weighting}"
            + (f" hl{self.half_life_days:g}d" if self.half_life_days else "")
            + (f" h{self.hybrid_weight:g}" if self.hybrid_weight else "")
        )


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


def suggest(trial: Any, settings: Settings) -> ALSParams:
    """One point of the search space for an Optuna trial (iterations stay as set).

    Ranges from what mattered on MovieLens (BENCHMARKS.md): Spark scales ``reg`` by each
    row's count, so useful values sit around 0.01–3; alpha multiplies a weight whose
    scale depends on the scheme (BM25 weights are a few units, gold weights up to 8 per
    event), hence the wide log range.
    """
    return ALSParams(
        rank=trial.suggest_categorical("rank", settings.search_ranks),
        reg=trial.suggest_float("reg", 0.01, 3.0, log=True),
        alpha=trial.suggest_float("alpha", 0.05, 50.0, log=True),
        iterations=settings.als_iterations,
        weighting=trial.suggest_categorical("weighting", list(settings.search_weightings)),
        half_life_days=trial.suggest_categorical(
            "half_life_days", list(settings.search_half_lives)
        ),
    )


EngineName = Literal["spark", "implicit"]


@dataclass(frozen=True)
class Engine:
    """Which ALS solver fits: a fixed one, or ``auto`` by the size of each fit."""

    setting: Literal["auto", "spark", "implicit"]
    max_pairs: int
    max_memory_bytes: int
    threads: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Engine:
        return cls(
            settings.als_engine,
            settings.als_engine_max_pairs,
            settings.als_engine_max_memory_mb * 2**20,
            settings.als_implicit_threads,
        )

    def pick(self, pairs: int, n_users: int, n_items: int, rank: int) -> EngineName:
        """``implicit`` while the fit fits one machine's limits, else ``spark``."""
        if self.setting != "auto":
            return self.setting
        fits = pairs <= self.max_pairs
        return (
            "implicit"
            if fits and implicit_bytes(pairs, n_users, n_items, rank) <= self.max_memory_bytes
            else "spark"
        )


def implicit_bytes(pairs: int, n_users: int, n_items: int, rank: int) -> int:
    """What the implicit engine holds: four CSR matrices (the confidences both ways and
    their copies widened by the count penalty, 8 bytes an entry) and the factors twice
    (float32, plus the stacked copy each half-sweep reads)."""
    rows = n_users + n_items
    return 8 * (2 * pairs + 2 * (pairs + rank * rows)) + 8 * rank * rows


def fit(
    spark: SparkSession | None,
    frame: pd.DataFrame,
    n_users: int,
    n_items: int,
    params: ALSParams,
    seed: int,
    engine: Engine | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ALS (implicit feedback) on ``u, i, weight``; float32 factors indexed by code.

    Users or items absent from ``frame`` keep zero vectors (they score nothing). The
    engine is ``engine`` or, without one, the process's settings (``RECFLOW_ALS_ENGINE``);
    the implicit engine needs no Spark session (``spark`` may be None).
    """
    from jobs.train.weighting import apply

    if engine is None:
        from jobs.config import get_settings

        engine = Engine.from_settings(get_settings())
    frame = apply(frame, params.weighting, params.half_life_days, n_users)
    if engine.pick(len(frame), n_users, n_items, params.rank) == "implicit":
        from jobs.train import als_implicit

        return als_implicit.fit(
            frame,
            n_users,
            n_items,
            params.rank,
            params.reg,
            params.alpha,
            params.iterations,
            seed,
            engine.threads,
        )
    if spark is None:
        raise ValueError(
            "the Spark ALS engine needs a SparkSession (RECFLOW_ALS_ENGINE=spark, or auto"
            " above RECFLOW_ALS_ENGINE_MAX_PAIRS / RECFLOW_ALS_ENGINE_MAX_MEMORY_MB)"
        )
    return _fit_spark(spark, frame, n_users, n_items, params, seed)


def _fit_spark(
    spark: SparkSession,
    frame: pd.DataFrame,
    n_users: int,
    n_items: int,
    params: ALSParams,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Spark's ALS on the weighted frame (it scales ``reg`` by row counts: ALS-WR)."""
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
