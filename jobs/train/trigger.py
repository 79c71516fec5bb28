"""Should training run now? Threshold, missing model, model age, or a drift flag.

New interactions are counted as the growth of ``sum(n_events)`` in gold ``interactions``
between the Delta version the last training read (a tag on its MLflow run) and now:
two aggregate reads through Delta time travel, whatever the lake's size.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings
from jobs.model.registry import CHAMPION, TAG_GOLD_VERSION, alias_version

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from pyspark.sql import SparkSession


@dataclass
class Decision:
    train: bool
    reason: str
    gold_version: int
    trained_version: int | None = None
    new_interactions: int | None = None
    model_age_hours: float | None = None
    drift: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_drift_flag(settings: Settings) -> dict[str, Any] | None:
    """The monitoring job's flag, if raised (``{"drift": true, "reason": ...}``)."""
    path = settings.drift_flag_path
    if not path.is_file():
        return None
    try:
        flag = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"drift": True, "reason": f"unreadable drift flag {path}"}
    return flag if isinstance(flag, dict) and flag.get("drift") else None


def clear_drift_flag(settings: Settings, run_id: str) -> None:
    """Mark a flag handled by the training run that answered it (kept for the record)."""
    path = settings.drift_flag_path
    if path.is_file():
        flag = json.loads(path.read_text() or "{}")
        flag.update({"drift": False, "handled_by_run": run_id, "handled_at": time.time()})
        path.write_text(json.dumps(flag))


def last_trained_version(client: MlflowClient, settings: Settings) -> int | None:
    """Gold version of the newest finished training run (promoted or not)."""
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_GOLD_VERSION}` != '' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return int(runs[0].data.tags[TAG_GOLD_VERSION]) if runs else None


def n_events_at(spark: SparkSession, settings: Settings, version: int) -> int:
    from pyspark.sql import functions as F

    frame = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(tables.path(settings, "interactions"))
    )
    return int(frame.agg(F.coalesce(F.sum("n_events"), F.lit(0))).first()[0])


def decide(spark: SparkSession, settings: Settings, client: MlflowClient) -> Decision:
    current = tables.version(spark, settings, "interactions")
    if current < 0:
        return Decision(False, "no gold interactions yet", current)
    champion = alias_version(client, settings.model_name, CHAMPION)
    trained = last_trained_version(client, settings)
    decision = Decision(False, "", current, trained_version=trained)
    decision.drift = read_drift_flag(settings)
    if champion is not None:
        decision.model_age_hours = (time.time() * 1000 - champion.creation_timestamp) / 3.6e6
    if trained is not None:
        try:
            decision.new_interactions = n_events_at(spark, settings, current) - n_events_at(
                spark, settings, trained
            )
        except Exception as exc:  # noqa: BLE001 - vacuumed or missing version: retrain
            decision.new_interactions = None
            decision.train, decision.reason = (
                True,
                f"gold version {trained} is no longer readable ({type(exc).__name__})",
            )
            return decision

    if champion is None and trained is None:
        decision.train, decision.reason = True, "no model yet"
    elif decision.drift:
        decision.train, decision.reason = True, f"drift: {decision.drift.get('reason', '')}"
    elif champion is None:
        # Trained before but nothing promoted: retrain only when data warrants it.
        decision.train = (decision.new_interactions or 0) >= settings.retrain_threshold
        decision.reason = (
            f"no champion; {decision.new_interactions} new interactions "
            f"(threshold {settings.retrain_threshold})"
        )
    elif (decision.model_age_hours or 0) > settings.max_model_age_hours:
        decision.train = True
        decision.reason = (
            f"champion is {decision.model_age_hours:.0f} h old "
            f"(max {settings.max_model_age_hours:.0f} h)"
        )
    else:
        n = decision.new_interactions or 0
        decision.train = n >= settings.retrain_threshold
        decision.reason = (
            f"{n} new interactions since gold version {trained} "
            f"({'≥' if decision.train else '<'} threshold {settings.retrain_threshold})"
        )
    return decision
