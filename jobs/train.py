"""One training run: read gold at a pinned version, search, evaluate, register, gate.

The run is one MLflow parent run with a nested run per hyperparameter candidate:

1. gold ``interactions`` is read at its current Delta version (recorded as a run tag, so
   the trigger and any reviewer know exactly what the model saw);
2. time-based split: the latest ``test_fraction`` of interactions is the test slice; the
   latest ``validation_fraction`` of the rest picks the hyperparameters (nested runs);
3. the best candidate is refit on everything before the test slice and evaluated once on
   it, next to the popularity baseline computed from the same data; optionally also on
   a per-user stratified 75/25 random split, the protocol published numbers use;
4. the model registered for serving is refit on all interactions, logged as a pyfunc
   (numpy only) with plots, and its aliases are set by the gate.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs import als, lake
from jobs.config import Settings
from jobs.model import RecModel
from jobs.registry import (
    CHAMPION,
    TAG_GOLD_VERSION,
    GateResult,
    alias_version,
    apply_gate,
    gate,
    load_version,
    log_model,
    setup,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
CURVE_KS = [1, 2, 5, 10, 20, 50]


class NotEnoughDataError(RuntimeError):
    """Too few interactions to split, train and evaluate meaningfully."""


@dataclass
class TrainResult:
    run_id: str
    version: str
    gate: GateResult
    params: dict[str, Any]
    metrics: dict[str, float]
    data: dict[str, Any]
    seconds: float
    champion_before: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    stratified_params: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "version": self.version,
            "challenger": self.gate.challenger,
            "champion": self.gate.champion,
            "gate": self.gate.reason,
            "champion_before": self.champion_before,
            "params": self.params,
            "metrics": self.metrics,
            "data": self.data,
            "seconds": round(self.seconds, 1),
        }


def read_gold(spark: SparkSession, settings: Settings) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Gold interactions at the current version (weights decayed as configured)."""
    from pyspark.sql import functions as F

    from jobs.gold import decayed_weight

    version = lake.version(spark, settings, "interactions")
    if version < 0:
        raise NotEnoughDataError("gold interactions do not exist yet: run ingest first")
    path = lake.path(settings, "interactions")
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
        "silver_events_version": lake.applied_version(spark, settings, "interactions", "events"),
        "interactions": len(pdf),
        "as_of": str(as_of),
    }
    return pdf, info


def candidates(settings: Settings) -> list[als.ALSParams]:
    base = als.ALSParams(
        settings.als_rank, settings.als_reg, settings.als_alpha, settings.als_iterations
    )
    out = [base]
    for override in settings.als_grid:
        fields = {k: type(getattr(base, k))(v) for k, v in override.items()}
        candidate = replace(base, **fields)
        if candidate not in out:
            out.append(candidate)
    return out


def _holdout_metrics(
    holdout: als.Holdout,
    u: np.ndarray | None,
    v: np.ndarray | None,
    pop: np.ndarray | None,
    k: int,
    n_items: int,
    prefix: str,
) -> dict[str, float]:
    metrics = als.evaluate(holdout, u, v, pop, k, n_items)
    return {f"{prefix}{name}": value for name, value in metrics.items()}


def evaluate_registered(
    model: RecModel, enc: als.Encoded, holdout: als.Holdout, k: int
) -> dict[str, float]:
    """Metrics of an already registered model (the champion) on this run's holdout."""
    from jobs.metrics import ranking_metrics

    rows = np.array([model.user_index.get(str(enc.user_ids[u]), -1) for u in holdout.users])
    recs: list[list[int]] = [[] for _ in rows]
    known = np.flatnonzero(rows >= 0)
    if len(known):
        idx, _ = model.recommend_rows(rows[known], k)
        code = {item: j for j, item in enumerate(enc.item_ids)}
        for pos, row in zip(known, idx, strict=True):
            recs[pos] = [code.get(str(model.item_ids[j]), -1) for j in row if j >= 0]
    return ranking_metrics(recs, holdout.truth, k=k, catalog_size=enc.n_items)


def run(
    settings: Settings,
    spark: SparkSession | None = None,
    reason: str = "manual",
    progress: bool = False,
    tamper: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TrainResult:
    """Train, evaluate, register and gate one model; returns what happened.

    ``tamper`` (fault-injection drills only) rewrites the item factors of the evaluated and
    registered models, e.g. shuffles them, to prove the gate stops a broken model.
    """
    import mlflow

    from jobs import plots

    if spark is None:
        from jobs.spark_session import get_spark

        spark = get_spark(settings)
    t0 = time.perf_counter()
    client = setup(settings)
    k = settings.eval_k
    pdf, data = read_gold(spark, settings)
    if len(pdf) < 50 or pdf["user_id"].nunique() < 5:
        raise NotEnoughDataError(f"only {len(pdf)} interactions in gold; need at least 50")
    enc = als.Encoded.from_frame(pdf)
    data.update(users=enc.n_users, items=enc.n_items)
    train_full, test = als.time_split(enc.frame, settings.test_fraction)
    train, valid = als.time_split(train_full, settings.validation_fraction)
    champion = alias_version(client, settings.model_name, CHAMPION)

    with mlflow.start_run(run_name=f"als {data['gold_interactions_version']}") as parent:
        mlflow.set_tags(
            {
                TAG_GOLD_VERSION: str(data["gold_interactions_version"]),
                "recflow.gold_interactions_path": data["gold_interactions_path"],
                "recflow.silver_events_version": str(data["silver_events_version"]),
                "recflow.trigger": reason,
            }
        )
        mlflow.log_params(
            {
                "k": k,
                "test_fraction": settings.test_fraction,
                "validation_fraction": settings.validation_fraction,
                "recency_half_life_days": settings.recency_half_life_days,
                "seed": settings.seed,
                **{f"data_{key}": value for key, value in data.items()},
            }
        )

        # -- search (nested runs, validation slice) --------------------------------------
        grid = candidates(settings)
        found = _search(spark, settings, enc, train, valid, grid, "time", progress)
        best = max(found, key=lambda c: c[f"validation_ndcg_at_{k}"])["params"]
        mlflow.log_params({f"als_{name}": value for name, value in best.as_dict().items()})

        # -- test slice: best params vs popularity, once -----------------------------
        started = time.perf_counter()
        u, v = als.fit(spark, train_full, enc.n_users, enc.n_items, best, settings.seed)
        if tamper is not None:
            v = tamper(v)
        fit_seconds = time.perf_counter() - started
        holdout = als.Holdout.of(train_full, test, enc.n_users)
        pop = als.popularity_of(train_full, enc.n_items)
        metrics = {
            "fit_seconds": fit_seconds,
            "test_users": float(len(holdout.users)),
            **_holdout_metrics(holdout, u, v, None, k, enc.n_items, "test_"),
            **_holdout_metrics(holdout, None, None, pop, k, enc.n_items, "popularity_test_"),
        }
        als_curve = als.metric_curve(holdout, u, v, None, CURVE_KS, enc.n_items)
        pop_curve = als.metric_curve(holdout, None, None, pop, CURVE_KS, enc.n_items)
        rec_idx, _ = als.top_k_for(holdout, u, v, k)
        s_best = None
        champion_metrics = None
        if champion is not None:
            champion_metrics = evaluate_registered(
                load_version(settings, champion.version), enc, holdout, k
            )
            metrics.update({f"champion_test_{n}": x for n, x in champion_metrics.items()})

        # -- stratified protocol (comparable with published numbers) -------------------
        # Its own search on a stratified validation split of its training part, so the
        # reported numbers never saw their test split.
        if settings.eval_stratified:
            s_train, s_test = als.stratified_split(enc.frame, 0.75, settings.seed)
            s_fit, s_valid = als.stratified_split(s_train, 0.8, settings.seed + 1)
            s_found = _search(spark, settings, enc, s_fit, s_valid, grid, "stratified", progress)
            s_best = max(s_found, key=lambda c: c[f"validation_ndcg_at_{k}"])["params"]
            mlflow.log_params({f"stratified_als_{n}": x for n, x in s_best.as_dict().items()})
            s_holdout = als.Holdout.of(s_train, s_test, enc.n_users)
            su, sv = als.fit(spark, s_train, enc.n_users, enc.n_items, s_best, settings.seed)
            s_pop = als.popularity_of(s_train, enc.n_items)
            metrics.update(_holdout_metrics(s_holdout, su, sv, None, k, enc.n_items, "stratified_"))
            metrics.update(
                _holdout_metrics(
                    s_holdout, None, None, s_pop, k, enc.n_items, "popularity_stratified_"
                )
            )
        mlflow.log_metrics(metrics)

        # -- the model to serve: all interactions -----------------------------------
        fu, fv = als.fit(spark, enc.frame, enc.n_users, enc.n_items, best, settings.seed)
        if tamper is not None:
            fv = tamper(fv)
        model = RecModel(
            user_ids=enc.user_ids,
            item_ids=enc.item_ids,
            user_factors=fu,
            item_factors=fv,
            popularity=als.popularity_of(enc.frame, enc.n_items),
            seen=als.seen_of(enc.frame, enc.n_users),
            params={**best.as_dict(), "k": k, **data},
        )
        with tempfile.TemporaryDirectory(prefix="recflow-model-") as tmp:
            plots.log_all(als_curve, pop_curve, rec_idx, pop, k)
            info = log_model(model, Path(tmp), settings.model_name)
        version = str(info.registered_model_version)
        client.set_model_version_tag(
            settings.model_name, version, TAG_GOLD_VERSION, str(data["gold_interactions_version"])
        )
        for name in (f"test_ndcg_at_{k}", f"popularity_test_ndcg_at_{k}"):
            client.set_model_version_tag(settings.model_name, version, name, f"{metrics[name]:.5f}")
        decision = gate(
            metrics[f"test_ndcg_at_{k}"],
            metrics[f"popularity_test_ndcg_at_{k}"],
            None if champion_metrics is None else champion_metrics[f"ndcg_at_{k}"],
            settings,
        )
        apply_gate(client, settings.model_name, version, decision)
        mlflow.set_tags({"recflow.gate": decision.reason, "recflow.model_version": version})
        run_id = parent.info.run_id

    return TrainResult(
        run_id=run_id,
        version=version,
        gate=decision,
        params=best.as_dict(),
        metrics=metrics,
        data=data,
        seconds=time.perf_counter() - t0,
        champion_before=None if champion is None else str(champion.version),
        stratified_params=None if s_best is None else s_best.as_dict(),
        candidates=[
            {**c["params"].as_dict(), "validation_ndcg": c[f"validation_ndcg_at_{k}"]}
            for c in found
        ],
    )


def _search(
    spark: SparkSession,
    settings: Settings,
    enc: als.Encoded,
    fit_frame: pd.DataFrame,
    valid_frame: pd.DataFrame,
    grid: list[als.ALSParams],
    protocol: str,
    progress: bool,
) -> list[dict[str, Any]]:
    """Fit each candidate on ``fit_frame`` and score it on ``valid_frame`` (nested runs)."""
    import mlflow

    holdout = als.Holdout.of(fit_frame, valid_frame, enc.n_users)
    found: list[dict[str, Any]] = []
    for params in _progress(grid, progress, f"search ({protocol})"):
        name = f"{protocol} rank{params.rank} reg{params.reg} a{params.alpha}"
        with mlflow.start_run(run_name=name, nested=True):
            mlflow.set_tag("recflow.protocol", protocol)
            started = time.perf_counter()
            u, v = als.fit(spark, fit_frame, enc.n_users, enc.n_items, params, settings.seed)
            metrics = _holdout_metrics(
                holdout, u, v, None, settings.eval_k, enc.n_items, "validation_"
            )
            metrics["fit_seconds"] = time.perf_counter() - started
            mlflow.log_params(params.as_dict())
            mlflow.log_metrics(metrics)
            found.append({"params": params, **metrics})
    return found


def _progress(items: list[Any], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="fit")


def metrics_table(metrics: dict[str, float], k: int) -> str:
    """ALS against popularity under both protocols, as a reviewer reads them."""
    names = ("precision", "recall", "ndcg", "map")
    header = " ".join(f"{n + '@' + str(k):>12}" for n in names)
    lines = [f"{'protocol':<22} {'model':<11} {header}"]
    for protocol, prefix in (("time (latest slice)", "test_"), ("stratified 75/25", "stratified_")):
        for model, p in (("ALS", prefix), ("popularity", f"popularity_{prefix}")):
            if f"{p}ndcg_at_{k}" in metrics:
                row = " ".join(f"{metrics[f'{p}{n}_at_{k}']:>12.4f}" for n in names)
                lines.append(f"{protocol:<22} {model:<11} {row}")
    return "\n".join(lines)


# -- the steps the `train` DAG runs ---------------------------------------------------


def trigger_step(settings: Settings | None = None) -> dict[str, Any]:
    """The trigger's decision, as a dict (logged; the DAG short-circuits on ``train``)."""
    from jobs.config import get_settings
    from jobs.spark_session import get_spark
    from jobs.trigger import decide

    settings = settings or get_settings()
    decision = decide(get_spark(settings), settings, setup(settings))
    log.warning("training trigger: %s (train=%s)", decision.reason, decision.train)
    return decision.as_dict()


def train_step(decision: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Train, register and gate; answers a raised drift flag."""
    from jobs.config import get_settings
    from jobs.trigger import clear_drift_flag

    settings = settings or get_settings()
    result = run(settings, reason=decision.get("reason", "manual"))
    if decision.get("drift"):
        clear_drift_flag(settings, result.run_id)
    log.warning("registered %s v%s: %s", settings.model_name, result.version, result.gate.reason)
    return result.as_dict()
