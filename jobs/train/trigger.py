"""Should training run now? Threshold, missing model, model age, or a drift alert.

New interactions are counted as the growth of ``sum(n_events)`` in gold ``interactions``
between the Delta version the last training read (a tag on its MLflow run) and now:
two aggregate reads through Delta time travel, whatever the lake's size.

Three rules keep a gate that rejects (or a reviewer who does not act) from turning every
gold update into a training run:

- the champion's age counts from its promotion (``recflow.promoted_at``, set by the gate,
  ``recflow promote`` and the champion watcher for changes made in the MLflow UI), not
  from its creation: rolling back to an older version does not make it "too old";
- a stale champion gets one retraining: once a training started after the champion went
  stale (accepted or not), only new data (the threshold) or drift trains again;
- no training starts within ``min_train_interval_hours`` of the last one's start.

Drift is read from the ``monitor/drift`` Delta table the monitor DAG writes (not a local
file, which distributed workers would not share). Only the NEWEST drift run counts, and
it trains only when all of these hold:

- it has alert rows (a newer run without alerts means the drift resolved);
- it read the current champion (an alert about a replaced champion says nothing about
  the new one);
- a drift episode trains once: no training that FINISHED (promoted or rejected by the
  gate) started after the first alert run of the current streak for this champion was
  computed. Both are wall-clock times (a window's end is data time, and a backfill or a
  simulated shop judges days long past). If the champion is still the same after such a
  training, its challenger was rejected (or awaits a reviewer), and training again on the
  same drift would loop; as for a stale champion, only new data (the threshold) or a
  different champion trains again. A training that crashed answers nothing: the drift
  retrains once the minimum interval has passed, up to ``DRIFT_ATTEMPTS`` starts per
  episode (a training that always crashes needs a person, not an hourly retry).

A drift table that cannot be read is reported (log, the decision's reason) and does not
count as drift.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings
from jobs.model.promotion import champion_since, last_announcement
from jobs.model.registry import CHAMPION, TAG_GOLD_VERSION, alias_version

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Trainings started for one drift episode before it is left to a person (none finished).
DRIFT_ATTEMPTS = 3


@dataclass
class Decision:
    train: bool
    reason: str
    gold_version: int
    trained_version: int | None = None
    new_interactions: int | None = None
    model_age_hours: float | None = None
    drift: dict[str, Any] | None = None
    drift_problem: str | None = None
    champion_version: str | None = None
    hours_since_last_training: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Facts:
    """What the decision rests on, read from the lake, the registry and the drift table."""

    gold_version: int
    now: float
    trained_version: int | None = None  # gold version the last finished training read
    new_interactions: int | None = None
    unreadable: str | None = None  # why the trained version could not be read
    champion_version: str | None = None
    champion_since: float | None = None  # epoch seconds of its promotion
    last_attempt_at: float | None = None  # start of the newest training run, any outcome
    last_finished_at: float | None = None  # start of the newest one that finished
    drift_attempts: int = 0  # trainings started since the drift episode's first alert
    # The newest drift run, alert or not (jobs.monitor.monitor.newest_drift: run_id,
    # window_end, model_version, alert, episode_start, metrics, reason); decide_from
    # tells whether it warrants a training.
    drift: dict[str, Any] | None = None
    drift_problem: str | None = None


def read_drift(
    spark: SparkSession | None, settings: Settings
) -> tuple[dict[str, Any] | None, str | None]:
    """The newest drift run (``jobs.monitor.monitor.newest_drift``), and a problem when
    the drift table cannot be read (then no drift: reported, not raised)."""
    from jobs.monitor.monitor import newest_drift

    try:
        return newest_drift(spark, settings), None
    except Exception as exc:  # noqa: BLE001 - see the module docstring: reported, no drift
        where = tables.path(settings, "drift")
        return None, f"drift table {where} unreadable ({type(exc).__name__}: {exc}); ignored"


def last_trained_version(client: MlflowClient, settings: Settings) -> int | None:
    """Gold version of the newest finished training run (promoted or not)."""
    runs = _training_runs(client, settings, "attributes.status = 'FINISHED'")
    return int(runs[0].data.tags[TAG_GOLD_VERSION]) if runs else None


def last_attempt_at(
    client: MlflowClient, settings: Settings, finished: bool = False
) -> float | None:
    """Start (epoch seconds) of the newest training run: finished, failed or running, or
    (``finished``) the newest that finished, whatever the gate decided."""
    runs = _training_runs(client, settings, "attributes.status = 'FINISHED'" if finished else None)
    return runs[0].info.start_time / 1000.0 if runs else None


def attempts_since(client: MlflowClient, settings: Settings, since: float) -> int:
    """Training runs started at or after ``since`` (epoch s), whatever became of them."""
    runs = _training_runs(
        client, settings, f"attributes.start_time >= {int(since * 1000)}", limit=DRIFT_ATTEMPTS
    )
    return len(runs)


def _training_runs(
    client: MlflowClient, settings: Settings, extra: str | None, limit: int = 1
) -> list[Any]:
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        return []
    where = f"tags.`{TAG_GOLD_VERSION}` != ''" + (f" and {extra}" if extra else "")
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=where,
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )


def n_events_at(spark: SparkSession | None, settings: Settings, version: int) -> int:
    """Sum of ``n_events`` in gold ``interactions`` at ``version`` (time travel); through
    delta-rs without ``spark``."""
    if spark is None:
        from jobs import lake_light

        table = lake_light.open_table(settings, "interactions", version=version)
        if table is None:
            raise FileNotFoundError(tables.path(settings, "interactions"))
        sql = "SELECT coalesce(sum(n_events), 0) AS n FROM interactions"
        return int(lake_light.rows(sql, interactions=table)[0]["n"])
    from pyspark.sql import functions as F

    frame = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(tables.path(settings, "interactions"))
    )
    return int(frame.agg(F.coalesce(F.sum("n_events"), F.lit(0))).first()[0])


def registry_facts(
    client: MlflowClient, settings: Settings, gold_version: int, now: float | None = None
) -> Facts:
    """The registry's part of the facts (no Spark; the drift table is read in decide)."""
    facts = Facts(gold_version=gold_version, now=time.time() if now is None else now)
    champion = alias_version(client, settings.model_name, CHAMPION)
    if champion is not None:
        facts.champion_version = str(champion.version)
        announced = last_announcement(client, settings.model_name)
        facts.champion_since = champion_since(champion, announced, facts.now)
    facts.trained_version = last_trained_version(client, settings)
    facts.last_attempt_at = last_attempt_at(client, settings)
    facts.last_finished_at = last_attempt_at(client, settings, finished=True)
    return facts


def decide(
    spark: SparkSession | None, settings: Settings, client: MlflowClient, now: float | None = None
) -> Decision:
    """Train or not, and why. Without ``spark`` the lake is read through delta-rs
    (``jobs.lake_light``): the decision then starts no JVM, which under the real scheduler
    is most of what a skipping ``should_train`` task costs."""
    if spark is None:
        from jobs import lake_light

        current = lake_light.version(settings, "interactions")
    else:
        current = tables.version(spark, settings, "interactions")
    if current < 0:
        return Decision(False, "no gold interactions yet", current)
    facts = registry_facts(client, settings, current, now)
    facts.drift, facts.drift_problem = read_drift(spark, settings)
    if facts.drift_problem:
        log.warning("%s", facts.drift_problem)
    episode = (facts.drift or {}).get("episode_computed_at")
    if episode is not None:
        facts.drift_attempts = attempts_since(client, settings, float(episode))
    if facts.trained_version is not None:
        try:
            facts.new_interactions = n_events_at(spark, settings, current) - n_events_at(
                spark, settings, facts.trained_version
            )
        except Exception as exc:  # noqa: BLE001 - vacuumed or missing version: retrain
            facts.unreadable = (
                f"gold version {facts.trained_version} is no longer readable ({type(exc).__name__})"
            )
    return decide_from(facts, settings)


def decide_from(facts: Facts, settings: Settings) -> Decision:
    """The decision from its facts (pure: every rule is testable without Spark or MLflow)."""
    decision = Decision(
        False,
        "",
        facts.gold_version,
        trained_version=facts.trained_version,
        new_interactions=facts.new_interactions,
        # Only drift that warrants a training is this decision's drift.
        drift=facts.drift if _drift_trains(facts) is None else None,
        drift_problem=facts.drift_problem,
        champion_version=facts.champion_version,
    )
    if facts.champion_since is not None:
        decision.model_age_hours = (facts.now - facts.champion_since) / 3600
    if facts.last_attempt_at is not None:
        decision.hours_since_last_training = (facts.now - facts.last_attempt_at) / 3600
    decision.train, decision.reason = _rule(facts, decision, settings)
    if facts.drift_problem:
        decision.reason += f"; {facts.drift_problem}"
    return decision


def _drift_trains(facts: Facts) -> str | None:
    """None when the newest drift run warrants a training, else why it does not."""
    drift = facts.drift
    if not drift:
        return "no drift run"
    if not drift.get("alert"):
        return f"{drift.get('reason', 'newest drift run has no alert')}"
    if drift.get("model_version") != facts.champion_version:
        return (
            f"drift run {drift.get('run_id')} alerts on champion v{drift.get('model_version')}, "
            f"not the current champion v{facts.champion_version}"
        )
    # Training starts are wall-clock times: compare them with when the episode's first
    # alert run was computed, not with its window's end (data time: a backfill or a
    # simulated shop judges days long past, which every training would seem to answer).
    episode = drift.get("episode_computed_at")
    if episode is None:  # a summary from before that key: the window's end, the latest
        episode = drift.get("episode_start") or drift.get("window_end") or drift.get("computed_at")
    # Only a finished training answers: one that crashed decided nothing.
    answered = facts.last_finished_at is not None and episode is not None
    if answered and facts.last_finished_at >= float(episode):
        return (
            f"drift on champion v{facts.champion_version} first alerted at "
            f"{_iso(float(episode))} was answered by a training that was not promoted; "
            "waiting for new data or a different champion"
        )
    if facts.drift_attempts >= DRIFT_ATTEMPTS:
        return (
            f"{facts.drift_attempts} trainings started for the drift on champion "
            f"v{facts.champion_version} and none finished: see the train DAG's logs"
        )
    return None


def _iso(epoch: float) -> str:
    return f"{datetime.fromtimestamp(epoch, UTC):%Y-%m-%d %H:%M} UTC"


def _rule(facts: Facts, d: Decision, settings: Settings) -> tuple[bool, str]:
    since_last = d.hours_since_last_training
    if since_last is not None and since_last < settings.min_train_interval_hours:
        return False, (
            f"last training started {since_last:.2f} h ago "
            f"(min interval {settings.min_train_interval_hours:g} h)"
        )
    if facts.unreadable:
        return True, facts.unreadable
    if facts.champion_version is None and facts.trained_version is None:
        return True, "no model yet"
    held_back = _drift_trains(facts)
    if held_back is None:
        assert facts.drift is not None
        return True, f"drift: {facts.drift.get('reason', '')}"
    n = facts.new_interactions or 0
    by_data = n >= settings.retrain_threshold
    data_reason = (
        f"{n} new interactions since gold version {facts.trained_version} "
        f"({'≥' if by_data else '<'} threshold {settings.retrain_threshold})"
    )
    if facts.drift and facts.drift.get("alert"):
        data_reason += f"; {held_back}"  # say why an alerting drift run did not train
    if facts.champion_version is None:
        # Trained before but nothing promoted: retrain only when data warrants it.
        return by_data, f"no champion; {data_reason}"
    age = d.model_age_hours or 0.0
    if age > settings.max_model_age_hours and not by_data:
        assert facts.champion_since is not None
        stale_since = facts.champion_since + settings.max_model_age_hours * 3600
        if facts.last_attempt_at is not None and facts.last_attempt_at >= stale_since:
            return False, (
                f"champion v{facts.champion_version} is {age:.0f} h old, but a training "
                f"since it went stale was not promoted; waiting for new data: {data_reason}"
            )
        return True, (
            f"champion v{facts.champion_version} was promoted {age:.0f} h ago "
            f"(max {settings.max_model_age_hours:g} h)"
        )
    return by_data, data_reason
