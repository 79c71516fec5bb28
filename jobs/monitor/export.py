"""Batch metrics for Prometheus: computed from the lake and the registry, pushed to a Pushgateway.

Reads: silver ``events`` (newest event), ``ingest_audit`` (last successful run, quarantine
rates), the published ``recs/latest.json`` (jobs.publish.storage), the champion's
promotion (jobs.model.promotion, read only), and — when they exist —
``monitor/rec_performance`` (CTR and conversion by source) and ``monitor/drift`` (drift
values of the newest run).
Writes: two Pushgateway groups of job ``RECFLOW_METRICS_JOB``, each replaced whole on every
push, so a rerun leaves exactly the figures of the rerun (no stale series of an older push):

- ``group="ingest"``: ingest freshness and quarantine, pushed by :func:`ingest_push_step` at
  the end of every ingest run (hourly), so the 3-hour ingest alerts see hourly figures
  rather than the monitor's daily ones;
- the job's own group: everything else, pushed by :func:`export_step` once per monitor run.

Ages (ingest lag, time since publish, training age) are pushed both as the instant they
count from (``*_timestamp_seconds``) and as an age at export time. The alert rules use the
timestamps (``time() - x``): an age frozen in the Pushgateway stops growing between pushes
and would hide a DAG that stopped running; the timestamp keeps ageing.

A source that is not there (a fresh lake, no champion, nothing published, the tables of
issue 15's other parts not created yet) is skipped with its reason in the step's result:
its gauges are absent, and the rules catch the absences that matter (``unless on()``,
``absent_over_time()``). A registry that cannot be read is not "no champion": the export
pushes the rest and then fails (see :func:`export_step`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings, get_settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Every gauge collect() can push (the dashboard test pushes each of them).
BATCH_METRIC_NAMES: frozenset[str] = frozenset(
    {
        "recflow_silver_newest_event_timestamp_seconds",
        "recflow_ingest_last_success_timestamp_seconds",
        "recflow_ingest_lag_seconds",
        "recflow_ingest_quarantine_ratio",
        "recflow_ingest_covered_until_timestamp_seconds",
        "recflow_publish_timestamp_seconds",
        "recflow_publish_age_seconds",
        "recflow_model_promoted_timestamp_seconds",
        "recflow_model_age_seconds",
        "recflow_champion_info",
        "recflow_rec_day_timestamp_seconds",
        "recflow_rec_impressions",
        "recflow_rec_clicks",
        "recflow_rec_purchases",
        "recflow_rec_revenue",
        "recflow_rec_ctr",
        "recflow_rec_conversion",
        "recflow_drift_timestamp_seconds",
        "recflow_drift_value",
        "recflow_drift_alert",
        "recflow_export_timestamp_seconds",
    }
)

# The ingest figures' own Pushgateway group (beside the job's group of the monitor export).
INGEST_GROUP: dict[str, str] = {"group": "ingest"}
# The gauge that tells the next ingest push which runs the previous one already covered.
COVERED_UNTIL = "recflow_ingest_covered_until_timestamp_seconds"

# Tables of issue 15's other parts (attribution, drift): read only when present.
REC_PERFORMANCE = "rec_performance"
DRIFT = "drift"
MONITOR_LAYER = "monitor"


class ExportIncompleteError(RuntimeError):
    """A source could not be read (not merely absent); the rest was pushed."""


@dataclass(frozen=True)
class Sample:
    """One gauge value: metric name, help text, labels."""

    name: str
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class Collected:
    """What one export computed, and which sources it skipped and why."""

    samples: list[Sample] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # Sources that could not be read because something is broken (not merely absent).
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, help: str, value: float, **labels: str) -> None:
        self.samples.append(Sample(name, help, float(value), tuple(sorted(labels.items()))))

    def values(self) -> dict[str, float]:
        """``name{a="x"}`` → value, for logs, the step's result and tests."""
        out = {}
        for s in self.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels)
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out


def table_location(settings: Settings, name: str) -> str:
    """Where table ``name`` lives: its registered path, else ``<lake>/monitor/<name>``.

    The monitor tables are being added by other parts of issue 15; until they are in
    ``jobs.tables.TABLES`` they are looked for where the issue says they will be.
    """
    if name in tables.TABLES:
        return tables.path(settings, name)
    return settings.table_path(MONITOR_LAYER, name)


def _read(spark: SparkSession, location: str) -> Any | None:
    """The Delta table at ``location``, or None when there is none (never creates it)."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, location):
        return None
    return spark.read.format("delta").load(location)


# -- the sources --------------------------------------------------------------------------


def ingest_metrics(
    spark: SparkSession,
    settings: Settings,
    now: float,
    out: Collected,
    covered_until: float | None = None,
) -> None:
    """Ingest lag (newest silver event, last successful run) and quarantine rates.

    ``covered_until`` is the ``finished_at`` of the newest run the previous push covered
    (None: unknown, e.g. the first push or a Pushgateway that lost its groups). The
    quarantine share pushed is the worst of the runs since then, so a spike in a run whose
    own push failed (the Pushgateway down for an hour) is still reported by the next push.
    """
    from pyspark.sql import functions as F

    events = _read(spark, tables.path(settings, "events"))
    if events is None:
        out.skipped["silver_events"] = "table not there yet (nothing ingested)"
    else:
        # The newest day first (a partition column: a metadata-cheap max), then its rows.
        day = events.agg(F.max("event_date")).first()[0]
        newest = (
            None
            if day is None
            else events.where(F.col("event_date") == day).agg(F.max("ts").cast("double")).first()[0]
        )
        if newest is None:
            out.skipped["silver_events"] = "no events yet"
        else:
            out.add(
                "recflow_silver_newest_event_timestamp_seconds",
                "Event time of the newest silver event (epoch seconds).",
                newest,
            )
            out.add(
                "recflow_ingest_lag_seconds",
                "At export: seconds from the newest silver event, or from the end of the"
                " last successful ingest run, to now.",
                now - newest,
                reference="newest_event",
            )

    audit = _read(spark, tables.path(settings, "ingest_audit"))
    if audit is None:
        out.skipped["ingest_audit"] = "table not there yet (no ingest run)"
        return
    done = audit.where(F.col("status").isin("ok", "unchanged"))
    finished = done.agg(F.max("finished_at").cast("double")).first()[0]
    if finished is not None:
        out.add(
            "recflow_ingest_last_success_timestamp_seconds",
            "When the last successful ingest run finished (epoch seconds).",
            finished,
        )
        out.add(
            "recflow_ingest_lag_seconds",
            "At export: seconds from the newest silver event, or from the end of the last"
            " successful ingest run, to now.",
            now - finished,
            reference="last_ingest",
        )
    # Runs that read something, newest first: those since the previous push against the
    # window of runs before them.
    read = (
        audit.where((F.col("status") == "ok") & (F.col("read_lines") > 0))
        .select("read_lines", "quarantined", F.col("finished_at").cast("double").alias("at"))
        .orderBy(F.col("at").desc())
    )
    if covered_until is None:
        since = read.limit(1).collect()
    else:
        since = read.where(F.col("at") > covered_until).collect()
    newest_run = read.select("at").first()
    if newest_run is None:
        out.skipped["quarantine"] = "no ingest run read any line yet"
        return
    out.add(
        COVERED_UNTIL,
        "finished_at of the newest ingest run this push covers (epoch seconds); the next"
        " push reports the quarantine of the runs after it.",
        newest_run["at"],
    )
    if not since:
        # Nothing read since the previous push: the newest run's figure stands (a push
        # replaces the whole group, so leaving it out would drop it).
        since = read.limit(1).collect()
    help_ = (
        "Quarantined share of the lines read: the worst ingest run since the previous push"
        " (window=since_last_push) and the runs before those (window=baseline,"
        " RECFLOW_QUARANTINE_WINDOW_RUNS)."
    )
    out.add(
        "recflow_ingest_quarantine_ratio",
        help_,
        max((r["quarantined"] or 0) / r["read_lines"] for r in since),
        window="since_last_push",
    )
    oldest = min(r["at"] for r in since)
    before = read.where(F.col("at") < oldest).limit(settings.quarantine_window_runs).collect()
    if before:
        lines = sum(r["read_lines"] for r in before)
        out.add(
            "recflow_ingest_quarantine_ratio",
            help_,
            sum(r["quarantined"] or 0 for r in before) / lines,
            window="baseline",
        )


def publish_metrics(settings: Settings, now: float, out: Collected) -> None:
    """Time since the live publish was generated (``recs/latest.json``)."""
    from jobs.publish.layout import decode, latest_key
    from jobs.publish.storage import open_store

    data = open_store(settings).get(latest_key(settings.publish_prefix))
    if data is None:
        out.skipped["publish"] = "nothing published yet (no recs/latest.json)"
        return
    pointer = decode(data)
    generated = datetime.fromisoformat(pointer["generated_at"].replace("Z", "+00:00"))
    stamp = generated.timestamp()
    out.add(
        "recflow_publish_timestamp_seconds",
        "When the live publish (recs/latest.json) was generated (epoch seconds).",
        stamp,
    )
    out.add(
        "recflow_publish_age_seconds", "At export: seconds since the live publish.", now - stamp
    )


def training_metrics(settings: Settings, now: float, out: Collected) -> None:
    """Training age: since the champion was promoted (its promotion, not its creation).

    Read only: a monitoring export must not create the MLflow experiment or a store (the
    registry's ``setup`` does both). A registry that cannot be read is recorded in
    ``out.failed`` rather than raised, so the lake's figures are still pushed.
    """
    from mlflow import MlflowClient

    from jobs.model import promotion
    from jobs.model.registry import CHAMPION, alias_version

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        out.skipped["training"] = "no MLflow store yet (nothing trained)"
        return
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        client = MlflowClient(uri, uri)
        champion = alias_version(client, settings.model_name, CHAMPION)
        announced = (
            None if champion is None else promotion.last_announcement(client, settings.model_name)
        )
    except Exception as exc:  # noqa: BLE001 - an outage of any kind: reported, see docstring
        out.failed["training"] = f"registry unreadable ({type(exc).__name__}: {exc})"[:300]
        return
    if champion is None:
        out.skipped["training"] = f"{settings.model_name!r} has no champion yet"
        return
    since = promotion.champion_since(champion, announced, now)
    out.add(
        "recflow_model_promoted_timestamp_seconds",
        "When the current champion became champion (epoch seconds).",
        since,
    )
    out.add(
        "recflow_model_age_seconds",
        "At export: seconds since the champion's promotion.",
        now - since,
    )
    out.add(
        "recflow_champion_info",
        "The champion of the registry (value 1): its version and MLflow run.",
        1,
        model_version=str(champion.version),
        run_id=str(champion.run_id or ""),
    )


def performance_metrics(
    spark: SparkSession, settings: Settings, now: float, out: Collected
) -> None:
    """CTR and conversion by source on the newest complete day of ``rec_performance``.

    Complete: before today (UTC) at ``now``. Attribution may already have written part of
    today, whose CTR (few impressions, clicks still to come) would read as a drop.

    Summed over model versions and position buckets before dividing, so a source's CTR is
    clicks over impressions of all its slots (not a mean of bucket ratios). Conversion is
    purchases per impression, the same denominator for every source.

    Treatment users only: the control group is served popularity under the same
    ``rec_source``, so counting it would dilute the CTR the alerts watch by the control
    share (its comparison is the ``lift`` table's job). Rows from before the group column
    (NULL) count, as they did.
    """
    from pyspark.sql import functions as F

    frame = _read(spark, table_location(settings, REC_PERFORMANCE))
    if frame is None:
        out.skipped[REC_PERFORMANCE] = "table not there yet (attribution not run)"
        return
    if "ab_group" in frame.columns:
        frame = frame.where(F.col("ab_group").isNull() | (F.col("ab_group") == "treatment"))
    today = datetime.fromtimestamp(now, UTC).date()
    day = frame.where(F.col("day") < F.lit(today)).agg(F.max("day")).first()[0]
    if day is None:
        out.skipped[REC_PERFORMANCE] = f"no complete day yet (none before {today})"
        return
    rows = (
        frame.where(F.col("day") == day)
        .groupBy("rec_source")
        .agg(
            F.sum("impressions").alias("impressions"),
            F.sum("clicks").alias("clicks"),
            F.sum("purchases").alias("purchases"),
            F.sum("revenue").alias("revenue"),
        )
        .collect()
    )
    out.add(
        "recflow_rec_day_timestamp_seconds",
        "Start of the day the recflow_rec_* figures are for (epoch seconds, UTC).",
        datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp(),
    )
    for row in rows:
        source = str(row["rec_source"])
        shown = int(row["impressions"] or 0)
        counts = {
            "impressions": shown,
            "clicks": int(row["clicks"] or 0),
            "purchases": int(row["purchases"] or 0),
        }
        for what, value in counts.items():
            out.add(
                f"recflow_rec_{what}",
                f"{what.capitalize()} of the day's slots, by rec_source (cdn, service, organic).",
                value,
                rec_source=source,
            )
        out.add(
            "recflow_rec_revenue",
            "Revenue attributed to the day's slots, by rec_source.",
            float(row["revenue"] or 0.0),
            rec_source=source,
        )
        if shown:
            out.add(
                "recflow_rec_ctr",
                "Clicks per impression on the day, by rec_source (organic: the baseline).",
                counts["clicks"] / shown,
                rec_source=source,
            )
            out.add(
                "recflow_rec_conversion",
                "Purchases per impression on the day, by rec_source.",
                counts["purchases"] / shown,
                rec_source=source,
            )


def drift_metrics(spark: SparkSession, settings: Settings, out: Collected) -> None:
    """Every drift value of the newest drift run, and whether it reached the alert level."""
    from pyspark.sql import functions as F

    frame = _read(spark, table_location(settings, DRIFT))
    if frame is None:
        out.skipped[DRIFT] = "table not there yet (no drift run)"
        return
    newest = frame.orderBy(F.col("computed_at").desc()).select("run_id", "computed_at").first()
    if newest is None:
        out.skipped[DRIFT] = "table is empty"
        return
    rows = frame.where(F.col("run_id") == newest["run_id"]).collect()
    out.add(
        "recflow_drift_timestamp_seconds",
        "When the newest drift run computed its values (epoch seconds).",
        frame.where(F.col("run_id") == newest["run_id"])
        .agg(F.max("computed_at").cast("double"))
        .first()[0],
    )
    for row in rows:
        if row["value"] is None:
            continue
        labels = {"metric": str(row["metric"]), "statistic": str(row["statistic"])}
        out.add(
            "recflow_drift_value",
            "Drift of a metric against the champion's training window (PSI, KS), newest run.",
            float(row["value"]),
            **labels,
        )
        out.add(
            "recflow_drift_alert",
            "1 when the newest drift run put this metric at its alert level, else 0.",
            1.0 if str(row["level"]).lower() == "alert" else 0.0,
            **labels,
        )


# -- collect, push, step --------------------------------------------------------------------


def collect(
    settings: Settings, spark: SparkSession | None = None, now: float | None = None
) -> Collected:
    """The monitor export's gauges: publish, training, performance, drift (not ingest)."""
    from jobs.spark import get_spark

    now = time.time() if now is None else now
    spark = spark or get_spark(settings)
    out = Collected()
    publish_metrics(settings, now, out)
    training_metrics(settings, now, out)
    performance_metrics(spark, settings, now, out)
    drift_metrics(spark, settings, out)
    out.add(
        "recflow_export_timestamp_seconds",
        "When jobs.monitor.export last computed these figures (epoch seconds).",
        now,
    )
    return out


def collect_ingest(
    settings: Settings,
    spark: SparkSession | None = None,
    now: float | None = None,
    covered_until: float | None = None,
) -> Collected:
    """The ingest group's gauges (see :func:`ingest_metrics`)."""
    from jobs.spark import get_spark

    now = time.time() if now is None else now
    out = Collected()
    ingest_metrics(spark or get_spark(settings), settings, now, out, covered_until)
    return out


def registry_of(samples: list[Sample]) -> CollectorRegistry:
    """A fresh prometheus_client registry holding ``samples`` as gauges."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for s in samples:
        names = tuple(k for k, _ in s.labels)
        gauge = gauges.get(s.name)
        if gauge is None:
            gauge = gauges[s.name] = Gauge(s.name, s.help, names, registry=registry)
        (gauge.labels(**dict(s.labels)) if names else gauge).set(s.value)
    return registry


def push(
    settings: Settings,
    samples: list[Sample],
    url: str | None = None,
    grouping_key: dict[str, str] | None = None,
) -> str | None:
    """Replace one Pushgateway group of recflow's batch metrics; returns the URL pushed to.

    ``push_to_gateway`` is a PUT: the group's earlier metrics are dropped, so a gauge whose
    source disappeared does not linger with an old value. Groups with another grouping key
    (the ingest group beside the monitor's) are left alone.
    """
    from prometheus_client import push_to_gateway

    url = url or settings.pushgateway_url
    if not url:
        return None
    push_to_gateway(
        url,
        job=settings.metrics_job,
        registry=registry_of(samples),
        grouping_key=grouping_key or {},
        timeout=10,
    )
    return url


def pushed_covered_until(settings: Settings, url: str) -> float | None:
    """What the previous ingest push covered (its :data:`COVERED_UNTIL`), None if unknown."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/metrics", timeout=10) as answer:
        groups = json.load(answer).get("data") or []
    wanted = {"job": settings.metrics_job, **INGEST_GROUP}
    for group in groups:
        if group.get("labels") == wanted and COVERED_UNTIL in group:
            return float(group[COVERED_UNTIL]["metrics"][0]["value"])
    return None


def ingest_push_step(settings: Settings | None = None, now: float | None = None) -> dict[str, Any]:
    """The ingest DAG's last task: push the ingest group (freshness, quarantine).

    Never fails the ingest run over monitoring: the lake is already written and audited,
    and a retry would redo nothing but this push. A Pushgateway that is down is logged
    and named in the result; the ``RecflowPushgatewayDown`` and ``absent_over_time``
    alerts are what report it, and the next run's push covers the runs it missed.
    """
    settings = settings or get_settings()
    url = settings.pushgateway_url
    if not url:
        # Nowhere to push: not worth a Spark session (under the scheduler, a JVM start per
        # hourly run); the monitor export still logs the lake's figures.
        return {"metrics": 0, "pushed_to": "not pushed: RECFLOW_PUSHGATEWAY_URL is unset"}
    covered: float | None = None
    try:
        covered = pushed_covered_until(settings, url)
    except OSError as exc:  # URLError, refused, timed out: down, so nothing to compute for
        return _not_pushed(url, exc, 0)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        # An answer that is not the API's: only "since the previous push" is lost; the
        # newest run alone is reported, as on a first push.
        log.warning("previous ingest push unreadable, reporting the newest run: %s", exc)
    collected = collect_ingest(settings, now=now, covered_until=covered)
    try:
        push(settings, collected.samples, grouping_key=INGEST_GROUP)
    except OSError as exc:  # went down between the read and the push
        return _not_pushed(url, exc, len(collected.samples))
    log.info("pushed %d ingest metrics to %s", len(collected.samples), url)
    return {"metrics": len(collected.samples), "pushed_to": url, "skipped": collected.skipped}


def _not_pushed(url: str, exc: OSError, metrics: int) -> dict[str, Any]:
    """Result and warning of an ingest push the Pushgateway refused or never answered."""
    outcome = f"not pushed: Pushgateway at {url} unreachable ({type(exc).__name__}: {exc})"
    log.warning("ingest metrics %s; the ingest run itself succeeded", outcome[:300])
    return {"metrics": metrics, "pushed_to": outcome[:300]}


def export_step(settings: Settings | None = None, now: float | None = None) -> dict[str, Any]:
    """The monitor DAG's export task: compute the batch gauges, push them when configured.

    Returns a small summary for XCom: how many gauges, where they went (or that
    RECFLOW_PUSHGATEWAY_URL is unset), and each skipped source with its reason.

    Raises after pushing when a source could not be read (the registry down): the other
    figures are pushed first so the dashboard keeps them, and the task then fails so the
    outage is visible in Airflow instead of hidden in a result nobody reads.
    """
    settings = settings or get_settings()
    collected = collect(settings, now=now)
    pushed = push(settings, collected.samples)
    if pushed is None:
        log.info(
            "RECFLOW_PUSHGATEWAY_URL is unset: %d batch metrics computed, not pushed",
            len(collected.samples),
        )
    else:
        log.info("pushed %d batch metrics to %s", len(collected.samples), pushed)
    for source, why in collected.skipped.items():
        log.info("metrics of %s skipped: %s", source, why)
    if collected.failed:
        raise ExportIncompleteError(
            f"pushed {len(collected.samples)} batch metrics"
            f" ({pushed or 'not pushed: RECFLOW_PUSHGATEWAY_URL is unset'}) without: "
            + "; ".join(f"{k}: {v}" for k, v in collected.failed.items())
        )
    return {
        "metrics": len(collected.samples),
        "pushed_to": pushed or "not pushed: RECFLOW_PUSHGATEWAY_URL is unset",
        "skipped": collected.skipped,
    }
