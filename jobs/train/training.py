"""One training run: read gold at a pinned version, search, evaluate, register, gate.

Reads: gold ``interactions`` (Delta, pinned version) and the champion from the MLflow
registry. Writes: one MLflow parent run with a nested run per hyperparameter candidate,
a registered model version, and the registry aliases the gate decides.

The phases of :func:`train_model`, in order:

1. :func:`prepare` — gold ``interactions`` at its current Delta version (recorded as a run
   tag, so the trigger and any reviewer know exactly what the model saw), encoded, and
   split by time: the latest ``test_fraction`` is the test slice, the latest
   ``validation_fraction`` of the rest picks the hyperparameters;
2. :func:`search` — one nested run per candidate, scored on the validation slice;
3. :func:`evaluate_on_test` — the best candidate refit on everything before the test slice
   and evaluated once on it, next to the popularity baseline and the current champion;
4. :func:`evaluate_stratified` — optionally the per-user stratified 75/25 random split, the
   protocol published numbers use, with its own search;
5. :func:`fit_final` — the model to serve, refit on all interactions;
6. :func:`register_and_gate` — checked finite, logged as a pyfunc (numpy only) with
   plots, registered with its training key, and its aliases set by the gate.

A training key (the Airflow run, from :func:`jobs.train.steps.train_step`) makes a retried
task idempotent: the version registered under that key is found and reused (gated if the
first try died before the gate), never registered twice.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.config import Settings
from jobs.model.artifact import RecModel
from jobs.model.registry import (
    TAG_GOLD_VERSION,
    TAG_TRAINING_KEY,
    find_version,
    load_version,
    log_model,
    setup,
)
from jobs.train import als
from jobs.train.data import (
    MIN_INTERACTIONS,
    MIN_USERS,
    Encoded,
    NotEnoughDataError,
    popularity_of,
    read_gold,
    seen_of,
)
from jobs.train.evaluate import evaluate, evaluate_registered, metric_curve, top_k_for
from jobs.train.gate import (
    TAG_DECISION,
    TAG_GATE,
    GateResult,
    Incumbent,
    apply_gate,
    gate,
    incumbents_of,
)
from jobs.train.splits import Holdout, stratified_split, time_split

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
CURVE_KS = [1, 2, 5, 10, 20, 50]

__all__ = ["NotEnoughDataError", "TrainResult", "metrics_table", "train_model"]


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


@dataclass
class Prepared:
    """What every phase reads: the encoded interactions and the time-based splits."""

    enc: Encoded
    data: dict[str, Any]  # Delta versions and sizes, logged as params and tags
    train_full: pd.DataFrame  # everything before the test slice
    test: pd.DataFrame
    train: pd.DataFrame  # train_full without the validation slice
    valid: pd.DataFrame


@dataclass
class TestEvaluation:
    """The best candidate against popularity (and the champion) on the test slice."""

    metrics: dict[str, float]
    als_curve: dict[int, dict[str, float]]
    pop_curve: dict[int, dict[str, float]]
    rec_idx: np.ndarray
    popularity: np.ndarray
    incumbents: list[Incumbent] = field(default_factory=list)

    @property
    def champion_ndcg(self) -> float | None:
        found = [inc.ndcg for inc in self.incumbents if inc.role == "champion"]
        return found[0] if found else None


# The run tag that says which champion the gate compared against (for a resumed gate).
TAG_COMPARED_CHAMPION = "recflow.gate.compared_champion"


def train_model(
    settings: Settings,
    spark: SparkSession | None = None,
    reason: str = "manual",
    progress: bool = False,
    training_key: str | None = None,
) -> TrainResult:
    """Train, evaluate, register and gate one model; returns what happened.

    With ``training_key``, a version already registered under it is returned (and gated
    if it was not yet) instead of training again: a retried task registers nothing new.
    """
    import mlflow

    t0 = time.perf_counter()
    client = setup(settings)
    if training_key:
        existing = find_version(client, settings.model_name, TAG_TRAINING_KEY, training_key)
        if existing is not None:
            log.info("training %s already registered v%s: reused", training_key, existing.version)
            return resume(settings, client, existing, t0)
    if spark is None:
        from jobs.spark import get_spark

        spark = get_spark(settings)
    k = settings.eval_k
    prepared = prepare(spark, settings)
    # Read once, before training: the gate compares against these and moves the champion
    # alias only if it is still this version when the run ends (compare-and-set).
    # An absent `best` is set to the champion here (logged), so the bar is never lost.
    champion, incumbents = incumbents_of(client, settings.model_name)

    with mlflow.start_run(run_name=f"als {prepared.data['gold_interactions_version']}") as parent:
        _log_inputs(settings, prepared.data, reason)
        mlflow.set_tag(TAG_COMPARED_CHAMPION, "none" if champion is None else champion.version)
        if training_key:
            mlflow.set_tag(TAG_TRAINING_KEY, training_key)
        grid = als.candidates(settings)
        found = search(
            spark, settings, prepared.enc, prepared.train, prepared.valid, grid, progress
        )
        best = _best(found, k)
        mlflow.log_params({f"als_{name}": value for name, value in best.as_dict().items()})
        test = evaluate_on_test(spark, settings, prepared, best, incumbents)
        # Which versions were compared (run tags): what a resumed gate compares with.
        mlflow.set_tags({f"recflow.gate.{i.role}_version": i.version for i in test.incumbents})
        metrics = dict(test.metrics)
        s_best = None
        if settings.eval_stratified:
            s_best, s_metrics = evaluate_stratified(spark, settings, prepared.enc, grid, progress)
            metrics.update(s_metrics)
        mlflow.log_metrics(metrics)
        model = fit_final(spark, settings, prepared, best)
        run_id = parent.info.run_id
        version, decision = register_and_gate(
            settings,
            client,
            model,
            metrics,
            test,
            prepared.data,
            expected_champion=None if champion is None else str(champion.version),
            run_id=run_id,
            training_key=training_key,
        )

    return TrainResult(
        run_id=run_id,
        version=version,
        gate=decision,
        params=best.as_dict(),
        metrics=metrics,
        data=prepared.data,
        seconds=time.perf_counter() - t0,
        champion_before=None if champion is None else str(champion.version),
        stratified_params=None if s_best is None else s_best.as_dict(),
        candidates=[
            {**c["params"].as_dict(), "validation_ndcg": c[f"validation_ndcg_at_{k}"]}
            for c in found
        ],
    )


# -- 1. data -------------------------------------------------------------------------------


def prepare(spark: SparkSession, settings: Settings) -> Prepared:
    """Gold at its current version, encoded, with the test and validation slices cut."""
    pdf, data = read_gold(spark, settings)
    if len(pdf) < MIN_INTERACTIONS or pdf["user_id"].nunique() < MIN_USERS:
        raise NotEnoughDataError(
            f"only {len(pdf)} interactions of {pdf['user_id'].nunique()} users in gold; "
            f"need at least {MIN_INTERACTIONS} of {MIN_USERS}"
        )
    enc = Encoded.from_frame(pdf)
    data.update(users=enc.n_users, items=enc.n_items)
    train_full, test = time_split(enc.frame, settings.test_fraction)
    train, valid = time_split(train_full, settings.validation_fraction)
    return Prepared(enc, data, train_full, test, train, valid)


def _log_inputs(settings: Settings, data: dict[str, Any], reason: str) -> None:
    import mlflow

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
            "k": settings.eval_k,
            "test_fraction": settings.test_fraction,
            "validation_fraction": settings.validation_fraction,
            "recency_half_life_days": settings.recency_half_life_days,
            "seed": settings.seed,
            **{f"data_{key}": value for key, value in data.items()},
        }
    )


# -- 2. search -----------------------------------------------------------------------------


def search(
    spark: SparkSession,
    settings: Settings,
    enc: Encoded,
    fit_frame: pd.DataFrame,
    valid_frame: pd.DataFrame,
    grid: list[als.ALSParams],
    progress: bool,
    protocol: str = "time",
) -> list[dict[str, Any]]:
    """Fit each candidate on ``fit_frame`` and score it on ``valid_frame`` (nested runs)."""
    import mlflow

    holdout = Holdout.of(fit_frame, valid_frame, enc.n_users)
    found: list[dict[str, Any]] = []
    for params in _progress(grid, progress, f"search ({protocol})"):
        name = f"{protocol} rank{params.rank} reg{params.reg} a{params.alpha}"
        with mlflow.start_run(run_name=name, nested=True):
            mlflow.set_tag("recflow.protocol", protocol)
            started = time.perf_counter()
            u, v = als.fit(spark, fit_frame, enc.n_users, enc.n_items, params, settings.seed)
            metrics = _prefixed(
                evaluate(holdout, u, v, None, settings.eval_k, enc.n_items), "validation_"
            )
            metrics["fit_seconds"] = time.perf_counter() - started
            mlflow.log_params(params.as_dict())
            mlflow.log_metrics(metrics)
            found.append({"params": params, **metrics})
    return found


def _best(found: list[dict[str, Any]], k: int) -> als.ALSParams:
    return max(found, key=lambda c: c[f"validation_ndcg_at_{k}"])["params"]


# -- 3. the test slice ---------------------------------------------------------------------


def evaluate_on_test(
    spark: SparkSession,
    settings: Settings,
    prepared: Prepared,
    best: als.ALSParams,
    incumbents: list[tuple[str, str]],
) -> TestEvaluation:
    """Best params refit before the test slice, against popularity and the incumbents
    (``(role, version)``: the champion and the best accepted version), once."""
    enc, k = prepared.enc, settings.eval_k
    started = time.perf_counter()
    u, v = als.fit(spark, prepared.train_full, enc.n_users, enc.n_items, best, settings.seed)
    fit_seconds = time.perf_counter() - started
    holdout = Holdout.of(prepared.train_full, prepared.test, enc.n_users)
    pop = popularity_of(prepared.train_full, enc.n_items)
    metrics = {
        "fit_seconds": fit_seconds,
        "test_users": float(len(holdout.users)),
        **_prefixed(evaluate(holdout, u, v, None, k, enc.n_items), "test_"),
        **_prefixed(evaluate(holdout, None, None, pop, k, enc.n_items), "popularity_test_"),
    }
    scored = []
    for role, version in incumbents:
        registered = load_version(settings, version)
        found = evaluate_registered(registered, enc, holdout, k)
        metrics.update(_prefixed(found, f"{role}_test_"))
        scored.append(Incumbent(role, version, found[f"ndcg_at_{k}"]))
    return TestEvaluation(
        metrics=metrics,
        als_curve=metric_curve(holdout, u, v, None, CURVE_KS, enc.n_items),
        pop_curve=metric_curve(holdout, None, None, pop, CURVE_KS, enc.n_items),
        rec_idx=top_k_for(holdout, u, v, k)[0],
        popularity=pop,
        incumbents=scored,
    )


# -- 4. the stratified protocol ------------------------------------------------------------


def evaluate_stratified(
    spark: SparkSession,
    settings: Settings,
    enc: Encoded,
    grid: list[als.ALSParams],
    progress: bool,
) -> tuple[als.ALSParams, dict[str, float]]:
    """Numbers comparable with published ones, from their own search.

    The search runs on a stratified validation split of the stratified training part, so
    the reported numbers never saw their test split.
    """
    import mlflow

    k = settings.eval_k
    s_train, s_test = stratified_split(enc.frame, 0.75, settings.seed)
    s_fit, s_valid = stratified_split(s_train, 0.8, settings.seed + 1)
    found = search(spark, settings, enc, s_fit, s_valid, grid, progress, "stratified")
    best = _best(found, k)
    mlflow.log_params({f"stratified_als_{n}": x for n, x in best.as_dict().items()})
    holdout = Holdout.of(s_train, s_test, enc.n_users)
    u, v = als.fit(spark, s_train, enc.n_users, enc.n_items, best, settings.seed)
    pop = popularity_of(s_train, enc.n_items)
    return best, {
        **_prefixed(evaluate(holdout, u, v, None, k, enc.n_items), "stratified_"),
        **_prefixed(evaluate(holdout, None, None, pop, k, enc.n_items), "popularity_stratified_"),
    }


# -- 5. the model to serve -----------------------------------------------------------------


def fit_final(
    spark: SparkSession, settings: Settings, prepared: Prepared, best: als.ALSParams
) -> RecModel:
    """The best params refit on all interactions: what is registered and served."""
    enc = prepared.enc
    u, v = als.fit(spark, enc.frame, enc.n_users, enc.n_items, best, settings.seed)
    model = RecModel(
        user_ids=enc.user_ids,
        item_ids=enc.item_ids,
        user_factors=u,
        item_factors=v,
        popularity=popularity_of(enc.frame, enc.n_items),
        seen=seen_of(enc.frame, enc.n_users),
        params={**best.as_dict(), "k": settings.eval_k, **prepared.data},
    )
    # Refused before anything is logged: the run fails (its reason in the task log) and
    # the registry never holds a model that cannot rank.
    model.check_finite()
    return model


# -- 6. register and gate ------------------------------------------------------------------


def register_and_gate(
    settings: Settings,
    client: Any,
    model: RecModel,
    metrics: dict[str, float],
    test: TestEvaluation,
    data: dict[str, Any],
    expected_champion: str | None = None,
    run_id: str | None = None,
    training_key: str | None = None,
) -> tuple[str, GateResult]:
    """Log the pyfunc with its plots, register it, tag it and let the gate set aliases.

    The version is created with its training key, gold version and test metrics as tags
    in one call; a key that is already registered is reused (a retried task).
    """
    import mlflow

    from jobs.train import plots

    k = settings.eval_k
    name = settings.model_name
    existing = find_version(client, name, TAG_TRAINING_KEY, training_key) if training_key else None
    if existing is not None:
        version = str(existing.version)
    else:
        tags = {TAG_GOLD_VERSION: str(data["gold_interactions_version"])}
        if training_key:
            tags[TAG_TRAINING_KEY] = training_key
        for metric in (f"test_ndcg_at_{k}", f"popularity_test_ndcg_at_{k}"):
            tags[metric] = f"{metrics[metric]:.5f}"
        with tempfile.TemporaryDirectory(prefix="recflow-model-") as tmp:
            plots.log_all(test.als_curve, test.pop_curve, test.rec_idx, test.popularity, k)
            info = log_model(model, Path(tmp), name, tags=tags)
        version = str(info.registered_model_version)
    decision = gate(
        metrics[f"test_ndcg_at_{k}"],
        metrics[f"popularity_test_ndcg_at_{k}"],
        test.incumbents,
        settings,
    )
    decision = apply_gate(client, name, version, decision, expected_champion, run_id)
    mlflow.set_tags({"recflow.model_version": version})
    return version, decision


def resume(settings: Settings, client: Any, existing: Any, t0: float) -> TrainResult:
    """The result of a training whose version is already registered (a retried task).

    Gated already: its recorded decision. Not yet (the first try died between the
    registration and the gate): gated now from the run's logged metrics, against the
    champion that run compared with (so a champion moved since is not replaced). The
    first try's run is marked FINISHED (the trigger reads the gold version from it).
    """
    k = settings.eval_k
    name, version = settings.model_name, str(existing.version)
    run = client.get_run(existing.run_id)
    metrics = dict(run.data.metrics)
    tags = existing.tags or {}
    if TAG_DECISION in tags:
        decision = tags[TAG_DECISION]
        result = GateResult(
            challenger=decision in ("challenger", "champion", "refused"),
            champion=decision == "champion",
            reason=tags.get(TAG_GATE, ""),
            decision=decision,
        )
    else:
        incumbents = [
            Incumbent(role, run.data.tags[f"recflow.gate.{role}_version"], metrics[metric])
            for role in ("champion", "best")
            if (metric := f"{role}_test_ndcg_at_{k}") in metrics
            and f"recflow.gate.{role}_version" in run.data.tags
        ]
        compared = run.data.tags.get(TAG_COMPARED_CHAMPION, "none")
        result = apply_gate(
            client,
            name,
            version,
            gate(
                metrics[f"test_ndcg_at_{k}"],
                metrics[f"popularity_test_ndcg_at_{k}"],
                incumbents,
                settings,
            ),
            None if compared == "none" else compared,
            existing.run_id,
        )
    if run.info.status != "FINISHED":
        # The first try died (FAILED, or RUNNING for ever when killed): its run is the
        # training of this version, and the trigger counts new data from the gold version
        # of the newest FINISHED run. Left as is, it would measure from the run before and
        # train again on data this version already saw.
        client.set_tag(existing.run_id, "recflow.model_version", version)
        client.set_tag(existing.run_id, "recflow.resumed_from_status", run.info.status)
        client.set_terminated(existing.run_id, "FINISHED")
    return TrainResult(
        run_id=existing.run_id,
        version=version,
        gate=result,
        params={},
        metrics=metrics,
        data={"gold_interactions_version": tags.get(TAG_GOLD_VERSION)},
        seconds=time.perf_counter() - t0,
        champion_before=run.data.tags.get(TAG_COMPARED_CHAMPION),
    )


# -- helpers -------------------------------------------------------------------------------


def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}{name}": value for name, value in metrics.items()}


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
