"""One training run: read gold at a pinned version, search, evaluate, register, gate.

Reads: gold ``interactions`` (Delta, pinned version) and the champion from the MLflow
registry. Writes: one MLflow parent run with a nested run per hyperparameter candidate,
a registered model version, and the registry aliases the gate decides.

The phases of :func:`train_model`, in order:

1. :func:`prepare` — gold ``interactions`` at its current Delta version (recorded as a run
   tag, so the trigger and any reviewer know exactly what the model saw), encoded, and
   split by time per user: each user's latest ``test_fraction`` is the test slice, the
   latest ``validation_fraction`` of the rest picks the hyperparameters;
2. :func:`search` — Optuna TPE within a budget, one nested run per trial, scored on the
   validation slice;
3. :func:`evaluate_on_test` — the best recipe refit on the training split and evaluated
   once on the test slice, beside popularity, EASE and the incumbents (champion, best),
   whose own recipes are refit on the same split so that nobody has seen the held-out
   interactions; bootstrap intervals over users for every NDCG and for the differences;
4. :func:`evaluate_stratified` — optionally the per-user stratified 75/25 random split, the
   protocol published numbers use, with its own search and the same comparison;
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.config import Settings
from jobs.model import dp
from jobs.model.artifact import RecModel
from jobs.model.registry import (
    TAG_GOLD_VERSION,
    TAG_TRAINING_KEY,
    find_version,
    load_version,
    log_model,
    setup,
)
from jobs.train import als, blend, cold
from jobs.train.baselines import evaluate_ease
from jobs.train.data import (
    MIN_INTERACTIONS,
    MIN_USERS,
    Encoded,
    NotEnoughDataError,
    popularity_of,
    read_gold,
    seen_of,
)
from jobs.train.evaluate import (
    evaluate,
    evaluate_per_user,
    evaluate_registered,
    metric_curve,
    top_k_for,
)
from jobs.train.gate import (
    TAG_DECISION,
    TAG_GATE,
    GateResult,
    Incumbent,
    apply_gate,
    gate,
    incumbents_of,
)
from jobs.train.session_eval import session_ndcg
from jobs.train.splits import Holdout, stratified_split, user_time_split
from jobs.train.stats import bootstrap_ci, paired_relative_ci

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
        content = _content(spark, settings)
        blended = blend.TrainContent.of(settings, prepared.enc.item_ids, content)
        found = search(
            spark, settings, prepared.enc, prepared.train, prepared.valid, progress, blended
        )
        best = _best(found, k)
        mlflow.log_params({f"als_{name}": value for name, value in best.as_dict().items()})
        # Which solver fitted the registered model (the final fit, on all pairs), and the
        # setting that chose it: a reviewer sees both beside the recipe.
        mlflow.log_params(
            {
                "als_engine": engine_of(settings, prepared.enc.frame, prepared.enc, best),
                "als_engine_setting": settings.als_engine,
            }
        )
        test = evaluate_on_test(spark, settings, prepared, best, incumbents, blended)
        # Which versions were compared (run tags): what a resumed gate compares with.
        mlflow.set_tags({f"recflow.gate.{i.role}_version": i.version for i in test.incumbents})
        metrics = dict(test.metrics)
        s_best = None
        if settings.eval_stratified:
            s_best, s_metrics = evaluate_stratified(
                spark, settings, prepared.enc, incumbents, progress, blended
            )
            metrics.update(s_metrics)
        cold_eval: dict[str, float] = {}
        cold_items = content is not None and settings.cold_items_per_list > 0
        if content is not None and cold_items:
            cold_eval = cold.evaluate_cold(
                prepared.enc.frame,
                prepared.enc.n_users,
                prepared.enc.item_ids,
                *content[:2],
                fit=lambda f: fit_challenger(spark, settings, f, prepared.enc, best),
                k=k,
                seed=settings.seed,
            )
            metrics.update(cold_eval)
        mlflow.log_metrics(metrics)
        model = fit_final(spark, settings, prepared, best)
        if content is not None and cold_items:
            model, content_params = cold.add_cold_items(
                model, *content, seed=settings.seed, evaluation=cold_eval
            )
            mlflow.log_params(content_params)
        if content is not None and blended is not None and best.hybrid_weight > 0:
            model = blend.attach(model, blended, *content[:2], prepared.enc.frame)
            mlflow.log_params(
                {"hybrid_dims": model.params["hybrid_dims"], "hybrid_recent_items": blended.recent}
            )
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


def _content(spark: SparkSession, settings: Settings) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The catalog's content vectors (ids, vectors, model id), None with embeddings off.

    Read even when this run tries no hybrid weight and admits no cold item: an incumbent
    whose recipe weighs content must be refit and scored with it."""
    if not settings.content_embeddings:
        return None
    from jobs.content.embeddings import read_vectors

    return read_vectors(spark, settings)


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
    train_full, test = user_time_split(enc.frame, settings.test_fraction)
    train, valid = user_time_split(train_full, settings.validation_fraction)
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


def fit_challenger(
    spark: SparkSession,
    settings: Settings,
    frame: pd.DataFrame,
    enc: Encoded,
    params: als.ALSParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Every fit of the new version's recipe (search, test, final) goes through here.

    The incumbents' refits call :func:`jobs.train.als.fit` themselves: one seam, so a
    fault injected into the new model (a test's shuffled factors) never reaches the
    models it is compared with.
    """
    engine = als.Engine.from_settings(settings)
    return als.fit(spark, frame, enc.n_users, enc.n_items, params, settings.seed, engine)


def engine_of(settings: Settings, frame: pd.DataFrame, enc: Encoded, params: als.ALSParams) -> str:
    """The ALS engine that fits ``params`` on ``frame`` under ``settings`` (what is logged)."""
    engine = als.Engine.from_settings(settings)
    return engine.pick(len(frame), enc.n_users, enc.n_items, params.rank)


def search(
    spark: SparkSession,
    settings: Settings,
    enc: Encoded,
    fit_frame: pd.DataFrame,
    valid_frame: pd.DataFrame,
    progress: bool,
    content: blend.TrainContent | None = None,
    protocol: str = "time",
) -> list[dict[str, Any]]:
    """Optuna TPE over :func:`jobs.train.als.suggest`, each trial a nested MLflow run.

    The defaults and the configured grid entries are enqueued first (the known-good
    points, so a small budget never does worse than the old fixed grid), then TPE
    proposes the rest within ``search_trials`` fits and ``search_timeout_seconds``. Each
    trial fits on ``fit_frame`` and is scored on ``valid_frame``, never on the test split.
    With ``content``, each trial's factors are scored with every hybrid weight and the
    best becomes the trial's ``hybrid_weight`` (:func:`jobs.train.blend.pick_weight`).
    """
    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    k = settings.eval_k
    holdout = Holdout.of(fit_frame, valid_frame, enc.n_users)
    profiles = None if content is None else content.profiles(fit_frame, enc.n_users)
    seeds = als.candidates(settings)[: settings.search_trials]
    # Choices include every enqueued value, so TPE can learn from the seeded trials.
    space = settings.model_copy(
        update={
            "search_ranks": sorted({*settings.search_ranks, *(c.rank for c in seeds)}),
            "search_weightings": sorted(
                {*settings.search_weightings, *(c.weighting for c in seeds)}
            ),
            "search_half_lives": sorted(
                {*settings.search_half_lives, *(c.half_life_days for c in seeds)}
            ),
        }
    )
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed)
    )
    for c in seeds:
        # The hybrid weight is not TPE's to propose: every trial tries them all.
        fixed = {n: v for n, v in c.as_dict().items() if n not in ("iterations", "hybrid_weight")}
        study.enqueue_trial(fixed, user_attrs={"iterations": c.iterations})
    found: list[dict[str, Any]] = []
    bar = _progress_bar(settings.search_trials, progress, f"search ({protocol})")

    def objective(trial: Any) -> float:
        params = als.suggest(trial, space)
        iterations = trial.user_attrs.get("iterations")
        if iterations is not None:
            params = replace(params, iterations=int(iterations))
        with mlflow.start_run(run_name=f"{protocol} #{trial.number} {params.label()}", nested=True):
            mlflow.set_tags({"recflow.protocol": protocol, "recflow.trial": str(trial.number)})
            started = time.perf_counter()
            u, v = fit_challenger(spark, settings, fit_frame, enc, params)
            weight, by_weight = blend.pick_weight(holdout, u, v, content, profiles, k, enc.n_items)
            params = replace(params, hybrid_weight=weight)
            metrics = _prefixed(by_weight[weight], "validation_")
            metrics[f"validation_als_ndcg_at_{k}"] = by_weight[0.0][f"ndcg_at_{k}"]
            metrics["fit_seconds"] = time.perf_counter() - started
            mlflow.log_params(
                {**params.as_dict(), "engine": engine_of(settings, fit_frame, enc, params)}
            )
            mlflow.log_metrics(metrics)
        found.append({"params": params, **metrics})
        if bar is not None:
            bar.update(1)
        return metrics[f"validation_ndcg_at_{k}"]

    study.optimize(
        objective,
        n_trials=settings.search_trials,
        timeout=settings.search_timeout_seconds or None,
    )
    if bar is not None:
        bar.close()
    return found


def _best(found: list[dict[str, Any]], k: int) -> als.ALSParams:
    return max(found, key=lambda c: c[f"validation_ndcg_at_{k}"])["params"]


# -- 3. the comparison on held-out interactions --------------------------------------------


@dataclass
class Comparison:
    """The challenger, the baselines and the refitted incumbents on one split."""

    metrics: dict[str, float]
    holdout: Holdout
    user_factors: np.ndarray
    item_factors: np.ndarray
    popularity: np.ndarray
    incumbents: list[Incumbent]
    # The challenger's scoring operands: the factors, augmented when its recipe is hybrid.
    scoring_users: np.ndarray
    scoring_items: np.ndarray


def compare(
    spark: SparkSession,
    settings: Settings,
    enc: Encoded,
    split: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame],
    best: als.ALSParams,
    recipes: list[tuple[str, str, als.ALSParams]],
    prefix: str,
    content: blend.TrainContent | None = None,
) -> Comparison:
    """``best`` refit on the training part and scored once on the held-out part, beside
    popularity, EASE and every incumbent recipe refit on the very same training part.

    ``split`` is (train, test, fit, valid): fit/valid only pick EASE's penalty. Metric
    names: ``{prefix}…`` for ALS, ``popularity_{prefix}…``, ``ease_{prefix}…``,
    ``{role}_{prefix}…``; each NDCG with its bootstrap interval (``…_low``/``…_high``)
    and each incumbent with the paired interval of ALS's relative difference to it
    (``{role}_{prefix}diff_low``/``…_high``), which is what the gate decides on. Every
    recipe is scored with its own hybrid weight (``content`` permitting), profiles taken
    from the training part; a hybrid challenger's ALS alone is ``{prefix}als_…``.
    """
    train, test, fit_part, valid = split
    k, n_items = settings.eval_k, enc.n_items
    samples, level, seed = settings.gate_bootstrap_samples, settings.gate_confidence, settings.seed
    holdout = Holdout.of(train, test, enc.n_users)
    started = time.perf_counter()
    u, v = fit_challenger(spark, settings, train, enc, best)
    metrics = {f"{prefix}fit_seconds": time.perf_counter() - started}
    pop = popularity_of(train, n_items)
    ndcg = f"ndcg_at_{k}"
    profiles = None if content is None else content.profiles(train, enc.n_users)
    su, sv = blend.operands(u, v, best.hybrid_weight, content, profiles)

    def record(name: str, found: dict[str, float], per_user: np.ndarray) -> None:
        metrics.update(_prefixed(found, name))
        ci = bootstrap_ci(per_user, samples, level, seed)
        metrics[f"{name}{ndcg}_low"], metrics[f"{name}{ndcg}_high"] = ci.low, ci.high

    als_found, als_users = evaluate_per_user(holdout, su, sv, None, k, n_items)
    record(prefix, als_found, als_users)
    if su is not u:
        alone = evaluate(holdout, u, v, None, k, n_items)
        metrics[f"{prefix}als_{ndcg}"] = alone[ndcg]
    metrics[f"{prefix}users"] = float(len(holdout.users))
    record(f"popularity_{prefix}", *evaluate_per_user(holdout, None, None, pop, k, n_items))
    if n_items <= settings.ease_max_items:
        lam = _ease_lambda(settings, enc, fit_part, valid)
        metrics[f"ease_{prefix}lambda"] = lam
        record(f"ease_{prefix}", *evaluate_ease(train, holdout, enc.n_users, n_items, lam, k))
    scored = []
    for role, version, recipe in recipes:
        if recipe.hybrid_weight > 0 and content is None:
            # Its content term cannot be reproduced (no embeddings now): it is scored as
            # ALS alone, below what it serves. Said loudly, in the log and in the run.
            log.warning(
                "%s v%s weighs content (%g) but this run has none: scored as ALS alone",
                role,
                version,
                recipe.hybrid_weight,
            )
            metrics[f"{role}_{prefix}hybrid_unscored"] = 1.0
        # The engine the current settings pick, as for the challenger: the engine is not
        # part of a recipe (both solve the same problem), so the gate compares recipes.
        engine = als.Engine.from_settings(settings)
        ru, rv = als.fit(spark, train, enc.n_users, n_items, recipe, settings.seed, engine)
        ru, rv = blend.operands(ru, rv, recipe.hybrid_weight, content, profiles)
        found, per_user = evaluate_per_user(holdout, ru, rv, None, k, n_items)
        record(f"{role}_{prefix}", found, per_user)
        diff = paired_relative_ci(als_users, per_user, samples, level, seed)
        metrics[f"{role}_{prefix}diff_low"] = diff.low
        metrics[f"{role}_{prefix}diff_high"] = diff.high
        scored.append(Incumbent(role, version, found[ndcg], diff.low, diff.high))
    return Comparison(metrics, holdout, u, v, pop, scored, su, sv)


def _ease_lambda(
    settings: Settings, enc: Encoded, fit_part: pd.DataFrame, valid: pd.DataFrame
) -> float:
    """EASE's penalty picked on the validation split (cheap: one inverse per value)."""
    holdout = Holdout.of(fit_part, valid, enc.n_users)
    k = settings.eval_k
    scores = {
        lam: evaluate_ease(fit_part, holdout, enc.n_users, enc.n_items, lam, k)[0][f"ndcg_at_{k}"]
        for lam in settings.ease_lambdas
    }
    return max(scores, key=lambda lam: scores[lam])


def incumbent_recipes(
    settings: Settings, incumbents: list[tuple[str, str]]
) -> tuple[list[tuple[str, str, als.ALSParams]], dict[str, RecModel]]:
    """Each incumbent's hyperparameters, read from its registered artifact."""
    recipes, models = [], {}
    for role, version in incumbents:
        model = load_version(settings, version)
        models[role] = model
        recipes.append((role, version, als.ALSParams.from_dict(model.params)))
    return recipes, models


def evaluate_on_test(
    spark: SparkSession,
    settings: Settings,
    prepared: Prepared,
    best: als.ALSParams,
    incumbents: list[tuple[str, str]],
    content: blend.TrainContent | None = None,
) -> TestEvaluation:
    """The time protocol: ``best`` and every incumbent's recipe refit on the same
    training split and scored once on each user's latest interactions, beside popularity
    and EASE.

    The incumbents' artifacts as they are (trained on most of the held-out pairs, so
    they may not recommend them) are scored too, as ``{role}_artifact_test_…``: for the
    record only, the gate never reads them.
    """
    enc, k = prepared.enc, settings.eval_k
    recipes, models = incumbent_recipes(settings, incumbents)
    split = (prepared.train_full, prepared.test, prepared.train, prepared.valid)
    found = compare(spark, settings, enc, split, best, recipes, "test_", content)
    for role, model in models.items():
        artifact = evaluate_registered(model, enc, found.holdout, k)
        found.metrics[f"{role}_artifact_test_ndcg_at_{k}"] = artifact[f"ndcg_at_{k}"]
    found.metrics["fit_seconds"] = found.metrics["test_fit_seconds"]
    u, v, pop, holdout = found.user_factors, found.item_factors, found.popularity, found.holdout
    found.metrics.update(_session_metrics(settings, prepared, holdout, u, v, best))
    su, sv = found.scoring_users, found.scoring_items
    return TestEvaluation(
        metrics=found.metrics,
        als_curve=metric_curve(holdout, su, sv, None, CURVE_KS, enc.n_items),
        pop_curve=metric_curve(holdout, None, None, pop, CURVE_KS, enc.n_items),
        rec_idx=top_k_for(holdout, su, sv, k)[0],
        popularity=pop,
        incumbents=found.incumbents,
    )


def _session_metrics(
    settings: Settings,
    prepared: Prepared,
    holdout: Holdout,
    u: np.ndarray,
    v: np.ndarray,
    best: als.ALSParams,
) -> dict[str, float]:
    """Session-aware answers against the static list on the test slice (``test_session_…``;
    :mod:`jobs.train.session_eval`)."""
    k = settings.eval_k
    train, test = prepared.train_full, prepared.test
    test = test[test["u"].isin(train["u"].unique()) & test["i"].isin(train["i"].unique())]
    found = session_ndcg(
        test,
        holdout.seen,
        u,
        v,
        best.reg,
        best.alpha,
        k,
        max_users=settings.session_eval_users,
        seed=settings.seed,
    )
    return {f"test_{name}": value for name, value in found.items()}


# -- 4. the stratified protocol ------------------------------------------------------------


def evaluate_stratified(
    spark: SparkSession,
    settings: Settings,
    enc: Encoded,
    incumbents: list[tuple[str, str]],
    progress: bool,
    content: blend.TrainContent | None = None,
) -> tuple[als.ALSParams, dict[str, float]]:
    """Numbers comparable with published ones, from their own search.

    The search runs on a stratified validation split of the stratified training part, so
    the reported numbers never saw their test split. The incumbents' recipes are refit
    on the same training part here too (reported; the gate decides on the time protocol,
    what production faces).
    """
    import mlflow

    k = settings.eval_k
    s_train, s_test = stratified_split(enc.frame, 0.75, settings.seed)
    s_fit, s_valid = stratified_split(s_train, 0.8, settings.seed + 1)
    found = search(spark, settings, enc, s_fit, s_valid, progress, content, "stratified")
    best = _best(found, k)
    mlflow.log_params({f"stratified_als_{n}": x for n, x in best.as_dict().items()})
    recipes, _ = incumbent_recipes(settings, incumbents)
    split = (s_train, s_test, s_fit, s_valid)
    result = compare(spark, settings, enc, split, best, recipes, "stratified_", content)
    return best, result.metrics


# -- 5. the model to serve -----------------------------------------------------------------


def fit_final(
    spark: SparkSession, settings: Settings, prepared: Prepared, best: als.ALSParams
) -> RecModel:
    """The best params refit on all interactions: what is registered and served."""
    enc = prepared.enc
    u, v = fit_challenger(spark, settings, enc.frame, enc, best)
    # Drawn here, once per model, from the weighted pairs (each person's strongest items
    # count): publish and the service then show the same noisy list, and republishing
    # this model spends no further budget.
    public, budget = dp.public_popularity(
        enc.frame["u"].to_numpy(),
        enc.frame["i"].to_numpy(),
        enc.user_ids,
        enc.item_ids,
        dp.PopularityBudget.from_settings(settings),
        weights=enc.frame["weight"].to_numpy(),
    )
    model = RecModel(
        user_ids=enc.user_ids,
        item_ids=enc.item_ids,
        user_factors=u,
        item_factors=v,
        popularity=popularity_of(enc.frame, enc.n_items),
        seen=seen_of(enc.frame, enc.n_users),
        params={
            **best.as_dict(),
            "engine": engine_of(settings, enc.frame, enc, best),
            "k": settings.eval_k,
            "cold_items_per_list": settings.cold_items_per_list,
            **prepared.data,
        },
        public_popularity=public,
        public_budget=budget,
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
    decision.others = _others(metrics, "test_", k)
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
            Incumbent(
                role,
                run.data.tags[f"recflow.gate.{role}_version"],
                metrics[metric],
                metrics.get(f"{role}_test_diff_low"),
                metrics.get(f"{role}_test_diff_high"),
            )
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


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="fit")


def _others(metrics: dict[str, float], prefix: str, k: int) -> dict[str, float]:
    """The other baselines' NDCG on the gate's slice, for the report."""
    return {
        label: metrics[key]
        for label, key in (("EASE", f"ease_{prefix}ndcg_at_{k}"),)
        if key in metrics
    }


def metrics_table(metrics: dict[str, float], k: int) -> str:
    """ALS against the baselines and incumbents under both protocols, as a reviewer reads
    them: P/R/NDCG/MAP@K and the NDCG's bootstrap interval over users."""
    names = ("precision", "recall", "ndcg", "map")
    header = " ".join(f"{n + '@' + str(k):>12}" for n in names)
    lines = [f"{'protocol':<22} {'model':<11} {header}   NDCG interval"]
    protocols = (("time (latest per user)", "test_"), ("stratified 75/25", "stratified_"))
    for protocol, prefix in protocols:
        for model in ("ALS", "popularity", "ease", "champion", "best"):
            p = prefix if model == "ALS" else f"{model}_{prefix}"
            if f"{p}ndcg_at_{k}" in metrics:
                row = " ".join(f"{metrics[f'{p}{n}_at_{k}']:>12.4f}" for n in names)
                low, high = metrics.get(f"{p}ndcg_at_{k}_low"), metrics.get(f"{p}ndcg_at_{k}_high")
                ci = f"[{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
                label = "EASE" if model == "ease" else model
                lines.append(f"{protocol:<22} {label:<11} {row}   {ci}")
    return "\n".join(lines)
