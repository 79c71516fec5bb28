"""The drift run: the lake now against what the current champion was trained on.

Reads: the ``champion`` alias and its training run's tags (MLflow), the model artifact,
silver ``events`` (time travel to the version the champion's training read, and the
current window) and silver ``items`` (categories). Writes: the ``monitor/drift`` Delta
table (one row per metric x statistic; a rerun of a ``run_id`` replaces its rows in one
``replaceWhere`` commit) and ``<data_root>/reports/drift/<run_id>.html``.

Windows, whole UTC days only (activity and popularity are counted per user-day and
item-day, and a window cut mid-day halves its edge days' counts, which reads as drift on
unchanged data). The current window is the ``monitor_window_days`` before the run's
logical date floored to 00:00 UTC: a fixed interval (a rerun reads the same one), and a
mid-day run (triggered by gold) measures the last complete day(s). The reference is the
last ``monitor_reference_days`` whole days of the silver events the champion's training
read: silver time-travelled to ``recflow.silver_events_version`` (a tag of the training
run), or, when the tag is missing, that version is vacuumed, or an erasure committed
since (time travel would bring erased people back), the events ingested before the
training run started. Its partial last day (the day the training started) and the
partial first day of a lake that begins inside it are dropped.

Metrics: ``user_activity`` and ``item_popularity`` (PSI and KS), ``event_type_mix`` and
``category_mix`` (categorical PSI), ``score_top1`` (the champion's top-1 score, from the
same ``RecModel.recommend_rows`` that publishing and serving rank with, for a hashed
sample of each window's known users; PSI and KS) and ``unknown_user_share`` (the share of
events by users the model does not know, against the share, in the reference's last
``monitor_window_days``, of events by users first seen in that span: newcomers then
against newcomers now). And one outcome: ``rec_ctr`` (statistic ``drop``), the CTR of the
champion's recommendations (cdn and service slots, treatment group) in the current window
against the same champion's own trailing ``monitor_reference_days`` before it, read from
``monitor/rec_performance`` (so the DAG's ``feedback`` task runs first). Its training
window cannot be the baseline here: the champion was not live then. A champion with no
live days yet has no baseline, and the row is left out.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs import tables
from jobs.config import Settings
from jobs.contracts import REC_SOURCES
from jobs.monitor.drift import (
    DriftResult,
    EmptySampleError,
    categorical_result,
    ctr_drop_result,
    numeric_results,
    share_result,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from pyspark.sql import DataFrame, SparkSession

    from jobs.model.artifact import RecModel

log = logging.getLogger(__name__)

TAG_SILVER_VERSION = "recflow.silver_events_version"  # set by jobs.train.training
UNKNOWN_CATEGORY = "(none)"


@dataclass
class Window:
    """The events of one side of the comparison, aggregated small enough for the driver."""

    start: datetime | None
    end: datetime | None
    user_days: pd.DataFrame  # user_id, n: events per user and day
    item_days: pd.DataFrame  # item_id, n: events per item and day
    event_types: dict[str, float]
    categories: dict[str, float]
    n_events: int
    described: str
    # Reference only: share of the events of its last monitor_window_days made by users
    # first seen in that span (the "unknown user" share of its day; see new_user_share).
    new_user_share: float | None = None


@dataclass
class DriftRun:
    """What a drift run did: rows recorded (or why none), alerts, the report."""

    run_id: str
    recorded: bool
    reason: str
    model_version: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    alerts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: int = 0
    report: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_drift(
    spark: SparkSession,
    settings: Settings,
    client: MlflowClient,
    run_id: str,
    logical_date: datetime,
) -> DriftRun:
    """Compute, record and report drift for the window ending at ``logical_date``."""
    from jobs.model.registry import CHAMPION, alias_version, load_version

    if settings.drift_psi_warn >= settings.drift_psi_alert:
        raise ValueError(
            f"RECFLOW_DRIFT_PSI_WARN ({settings.drift_psi_warn}) must be below "
            f"RECFLOW_DRIFT_PSI_ALERT ({settings.drift_psi_alert})"
        )
    if logical_date.tzinfo is None:
        raise ValueError("logical_date needs a time zone")
    start, end = current_bounds(logical_date, settings.monitor_window_days)
    champion = alias_version(client, settings.model_name, CHAMPION)
    if champion is None:
        return _nothing(run_id, "no champion yet: nothing to compare against")
    version = str(champion.version)
    current = _current_window(spark, settings, start, end)
    if current.n_events == 0:
        return _nothing(run_id, f"no silver events in {current.described}", version)
    reference = _reference_window(spark, settings, client, champion.run_id)
    if reference.n_events == 0 or reference.new_user_share is None:
        return _nothing(run_id, f"no reference events ({reference.described})", version)
    model = load_version(settings, version)
    results, samples = _metrics(settings, model, reference, current)
    outcome = _ctr_drop(spark, settings, version, start, end)
    if outcome is not None:
        result, shares = outcome
        results.append(result)
        samples["rec_ctr"] = shares
    computed_at = datetime.now(UTC)
    rows = [_row(r, run_id, computed_at, start, end, version) for r in results]
    _write(spark, settings, run_id, rows)
    report = write_report(settings, run_id, version, reference, current, results, samples)
    out = DriftRun(
        run_id,
        True,
        f"reference: {reference.described}; current: {current.described}",
        version,
        start.isoformat(),
        end.isoformat(),
        [f"{r.metric}:{r.stat}" for r in results if r.level == "alert"],
        [f"{r.metric}:{r.stat}" for r in results if r.level == "warn"],
        len(rows),
        str(report),
    )
    log.info("drift run %s: alerts %s, warnings %s", run_id, out.alerts, out.warnings)
    return out


def _nothing(run_id: str, reason: str, version: str | None = None) -> DriftRun:
    log.info("drift run %s records nothing: %s", run_id, reason)
    return DriftRun(run_id, False, reason, version)


# -- windows -------------------------------------------------------------------------------


DAY = timedelta(days=1)


def floor_day(moment: datetime) -> datetime:
    """00:00 UTC of the moment's UTC day."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def current_bounds(logical_date: datetime, days: int) -> tuple[datetime, datetime]:
    """The ``days`` whole UTC days before ``logical_date``'s day.

    Whole days because activity and popularity are counted per user-day and item-day: a
    window cut at 12:00 splits every day in two halves with half the counts each, which
    reads as drift on unchanged data. A mid-day run (one the gold Asset triggers)
    measures the last complete day(s).
    """
    end = floor_day(logical_date)
    return end - days * DAY, end


def reference_bounds(
    first: datetime, last: datetime, read_at: datetime | None, days: int
) -> tuple[datetime, datetime] | None:
    """The last ``days`` whole UTC days of events spanning ``[first, last]`` read at
    ``read_at`` (None when nothing whole is left).

    The day of ``read_at`` is partial (the training read it mid-day), and so is the first
    day of a lake that begins inside the span (its first event is past 00:00); both are
    dropped, so reference and current count the same kind of user-days.
    """
    end = floor_day(last) + DAY
    if read_at is not None:
        end = min(end, floor_day(read_at))
    start = end - days * DAY
    if first > start:
        start = floor_day(first) if floor_day(first) == first else floor_day(first) + DAY
    return (start, end) if start < end else None


def erased_since(history: list[dict[str, Any]], version: int) -> int | None:
    """The newest commit after ``version`` that removed rows (an erasure), else None.

    ``jobs.privacy.erasure`` deletes with a MERGE (``whenMatchedDelete``: its metrics
    count ``numTargetRowsDeleted``) and then purges deletion vectors (``REORG``); a plain
    DELETE counts too. Time travel to a version before such a commit would read erased
    people's events again, so the reference must not.
    """
    newest = None
    for commit in history:
        if commit["version"] <= version:
            continue
        metrics = commit.get("operationMetrics") or {}
        operation = str(commit.get("operation") or "")
        removed = (
            operation == "DELETE"
            or operation.startswith("REORG")
            or int(metrics.get("numTargetRowsDeleted", 0) or 0) > 0
            or int(metrics.get("numDeletedRows", 0) or 0) > 0
        )
        if removed and (newest is None or commit["version"] > newest):
            newest = int(commit["version"])
    return newest


def new_user_share(span: pd.DataFrame, span_start: datetime) -> float | None:
    """Share of a span's events made by users first seen in it (None for no events).

    ``span``: one row per user active in the span, ``n`` (its events there) and
    ``first_ts`` (its first event in all the data read, naive UTC). This is the
    reference for the current share of users the model does not know: training windows
    hold every user they saw, so their own unknown share is 0, and a shop that gains,
    say, 30 % of each day's events from newcomers would alert every day. Users new in the
    training window's last days are the newcomers of its time: like for like.
    """
    total = float(span["n"].sum())
    if not total:
        return None
    new = span["first_ts"] >= _naive(span_start)
    return float(span.loc[new, "n"].sum()) / total


_EPOCH = datetime(1970, 1, 1)


def _naive(moment: datetime) -> datetime:
    """The lake's timestamps are naive UTC (jobs.spark runs every process in UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _current_window(
    spark: SparkSession, settings: Settings, start: datetime, end: datetime
) -> Window:
    from pyspark.sql import functions as F

    events = tables.read_or_create(spark, settings, "events").where(
        (F.col("ts") >= F.lit(_naive(start))) & (F.col("ts") < F.lit(_naive(end)))
    )
    # Pruned to the window's partitions (event_date) before the ts filter.
    events = events.where(F.col("event_date").between(F.lit(start.date()), F.lit(end.date())))
    return _aggregate(
        spark, settings, events, start, end, f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC"
    )


def _reference_window(
    spark: SparkSession, settings: Settings, client: MlflowClient, training_run: str | None
) -> Window:
    """The last ``monitor_reference_days`` whole days of the silver events the champion
    trained on."""
    from pyspark.sql import functions as F

    location = tables.path(settings, "events")
    run = client.get_run(training_run) if training_run else None
    tag = run.data.tags.get(TAG_SILVER_VERSION) if run else None
    started = datetime.fromtimestamp(run.info.start_time / 1000, UTC) if run else None
    events: DataFrame | None = None
    described, span_ts = "", None
    if tag not in (None, "", "-1"):
        try:
            erased = _erased_since(spark, location, int(tag))
            if erased is not None:
                raise LookupError(f"erasure commit v{erased} is newer")
            events = spark.read.format("delta").option("versionAsOf", int(tag)).load(location)
            span_ts = events.agg(F.min("ts"), F.max("ts")).first()  # vacuumed: fails here
            described = f"silver events v{tag}"
        except Exception as exc:  # noqa: BLE001 - vacuumed, missing or erased: fall back below
            log.warning("silver events v%s not used (%s); using ingestion time", tag, exc)
            events = None
    if events is None:
        # No tag (a model registered by hand), a vacuumed version or one older than an
        # erasure: what had been ingested when the training run started is what it could
        # have read (minus the erased rows, which are gone from the current version).
        events = tables.read_or_create(spark, settings, "events")
        if started is not None:
            events = events.where(F.col("_ingested_at") <= F.lit(_naive(started)))
            described = f"silver events ingested by {started:%Y-%m-%d %H:%M} UTC"
        else:
            described = "all silver events (no training run)"
        span_ts = events.agg(F.min("ts"), F.max("ts")).first()
    first, last = span_ts
    bounds = None
    if last is not None:
        bounds = reference_bounds(
            first.replace(tzinfo=UTC),
            last.replace(tzinfo=UTC),
            started,
            settings.monitor_reference_days,
        )
    if bounds is None:
        described += ", no whole day"
        return _aggregate(spark, settings, events.limit(0), None, None, described)
    start, end = bounds
    span_start = max(start, end - settings.monitor_window_days * DAY)
    firsts = events.groupBy("user_id").agg(F.min("ts").alias("first_ts"))
    span = (
        events.where(
            (F.col("ts") >= F.lit(_naive(span_start))) & (F.col("ts") < F.lit(_naive(end)))
        )
        .groupBy("user_id")
        .agg(F.count("*").alias("n"))
        .join(firsts, "user_id")
        .toPandas()
    )
    window = events.where(
        (F.col("ts") >= F.lit(_naive(start))) & (F.col("ts") < F.lit(_naive(end)))
    )
    described += f", whole days [{start:%Y-%m-%d}, {end:%Y-%m-%d}) UTC"
    out = _aggregate(spark, settings, window, start, end, described)
    out.new_user_share = new_user_share(span, span_start)
    return out


def _erased_since(spark: SparkSession, location: str, version: int) -> int | None:
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, location).history().collect()
    return erased_since([r.asDict() for r in history], version)


def _aggregate(
    spark: SparkSession,
    settings: Settings,
    events: DataFrame,
    start: datetime | None,
    end: datetime | None,
    described: str,
) -> Window:
    """Per user-day and item-day counts (to the driver) and the two mixes (counts)."""
    from pyspark.sql import functions as F

    events = events.select("user_id", "item_id", "event_type", "event_date").cache()
    try:
        user_days = events.groupBy("user_id", "event_date").agg(F.count("*").alias("n"))
        item_days = events.groupBy("item_id", "event_date").agg(F.count("*").alias("n"))
        items = tables.read_or_create(spark, settings, "items").select("item_id", "category")
        # Both mixes from one job: counts by (event type, category).
        mixes = (
            events.join(items, "item_id", "left")
            .groupBy(
                "event_type",
                F.coalesce(F.col("category"), F.lit(UNKNOWN_CATEGORY)).alias("category"),
            )
            .count()
            .collect()
        )
        event_types: dict[str, float] = {}
        categories: dict[str, float] = {}
        for r in mixes:
            event_types[r["event_type"]] = event_types.get(r["event_type"], 0.0) + r["count"]
            categories[r["category"]] = categories.get(r["category"], 0.0) + r["count"]
        return Window(
            start,
            end,
            user_days.select("user_id", "n").toPandas(),
            item_days.select("item_id", "n").toPandas(),
            event_types,
            categories,
            int(sum(event_types.values())),
            described,
        )
    finally:
        events.unpersist()


# -- metrics -------------------------------------------------------------------------------


def _metrics(
    settings: Settings, model: RecModel, reference: Window, current: Window
) -> tuple[list[DriftResult], dict[str, tuple[Any, Any]]]:
    """Every metric's results, and the samples behind them (for the report)."""
    thresholds = {
        "psi_warn": settings.drift_psi_warn,
        "psi_alert": settings.drift_psi_alert,
        "ks_alpha": settings.drift_ks_alpha,
        "ks_alert": settings.drift_ks_alert,
    }
    samples: dict[str, tuple[Any, Any]] = {
        "user_activity": (reference.user_days["n"].to_numpy(), current.user_days["n"].to_numpy()),
        "item_popularity": (
            reference.item_days["n"].to_numpy(),
            current.item_days["n"].to_numpy(),
        ),
    }
    results: list[DriftResult] = []
    for metric in ("user_activity", "item_popularity"):
        results += numeric_results(metric, *samples[metric], **thresholds)
    for metric, ref, cur in (
        ("event_type_mix", reference.event_types, current.event_types),
        ("category_mix", reference.categories, current.categories),
    ):
        samples[metric] = (ref, cur)
        results.append(categorical_result(metric, ref, cur, **_psi_only(thresholds)))
    ref_scores = top1_scores(model, reference.user_days, settings)
    cur_scores = top1_scores(model, current.user_days, settings)
    if ref_scores.size and cur_scores.size:
        samples["score_top1"] = (ref_scores, cur_scores)
        results += numeric_results("score_top1", ref_scores, cur_scores, **thresholds)
    else:
        # Nobody the model knows in one window: no score distribution to compare; the
        # unknown-user share below is what moves then.
        log.warning("score_top1 skipped: no known users in one of the windows")
    # Like for like: newcomers' share then (the reference's users are all known to the
    # model, so its unknown share would be ~0) against unknown users' share now.
    assert reference.new_user_share is not None
    ref_share, cur_share = reference.new_user_share, unknown_share(model, current)
    samples["unknown_user_share"] = (
        {"unknown": ref_share, "known": 1 - ref_share},
        {"unknown": cur_share, "known": 1 - cur_share},
    )
    results.append(
        share_result(
            "unknown_user_share",
            ref_share,
            cur_share,
            settings.drift_unknown_share_alert,
            reference.n_events,
            current.n_events,
        )
    )
    return results, samples


def _ctr_drop(
    spark: SparkSession, settings: Settings, version: str, start: datetime, end: datetime
) -> tuple[DriftResult, tuple[dict[str, float], dict[str, float]]] | None:
    """The champion's recommendation CTR in [start, end) against its trailing days.

    None (and a log line) when there is nothing to compare: no attribution table yet, no
    recommended impressions in the window, or none of this champion's before it.
    """
    from pyspark.sql import functions as F

    baseline = start - timedelta(days=settings.monitor_reference_days)
    rows = (
        tables.read_or_create(spark, settings, "rec_performance")
        .where(
            (F.col("model_version") == version)
            & F.col("rec_source").isin(list(REC_SOURCES))
            & (F.col("ab_group").isNull() | (F.col("ab_group") == "treatment"))
            & (F.col("day") >= F.lit(baseline.date()))
            & (F.col("day") < F.lit(end.date()))
        )
        .groupBy("day")
        .agg(
            F.sum("clicks").alias("c"),
            F.sum("impressions").alias("n"),
            F.min("computed_at").alias("computed_at"),  # days are replaced whole
        )
        .collect()
    )
    reference = [(int(r["c"]), int(r["n"])) for r in rows if r["day"] < start.date()]
    current = [r for r in rows if r["day"] >= start.date()]
    # Attribution computed before the window closed (an earlier run of the day, or a
    # feedback task that failed this time) would judge a day by its first hours.
    stale = [r["day"] for r in current if (r["computed_at"] or _EPOCH) < _naive(end)]
    if stale:
        log.info("rec_ctr skipped: attribution of %s computed before the window ended", stale)
        return None
    now = (sum(int(r["c"]) for r in current), sum(int(r["n"]) for r in current))
    try:
        result = ctr_drop_result(
            "rec_ctr", reference, now, settings.drift_ctr_drop_alert, settings.drift_ctr_alpha
        )
    except EmptySampleError as e:
        # Expected for a champion's first live day and before any attribution: the row is
        # left out rather than recorded as "no drift".
        log.info("rec_ctr skipped: %s", e)
        return None
    ref = (sum(c for c, _ in reference), sum(n for _, n in reference))
    shares = tuple({"clicked": c / n, "not clicked": 1 - c / n} for c, n in (ref, now))
    return result, shares  # type: ignore[return-value]


def _psi_only(thresholds: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in thresholds.items() if k.startswith("psi_")}


def unknown_share(model: RecModel, window: Window) -> float:
    """Share of the window's events made by users absent from the model."""
    known = window.user_days["user_id"].map(model.user_index).notna()
    total = float(window.user_days["n"].sum())
    return float(window.user_days.loc[~known, "n"].sum()) / total if total else 0.0


def top1_scores(model: RecModel, user_days: pd.DataFrame, settings: Settings) -> np.ndarray:
    """Top-1 score of a sample of the window's known users, ranked as serving ranks.

    The sample is the ``drift_score_sample`` users with the smallest seeded hash of their
    id: the same users whenever they are active, whatever the order rows arrive in.
    """
    from pandas.util import hash_pandas_object

    users = user_days["user_id"].drop_duplicates()
    rows = users.map(model.user_index).dropna().astype(np.int64)
    if rows.empty:
        return np.array([], dtype=np.float64)
    keys = hash_pandas_object(users.loc[rows.index], index=False, hash_key=_hash_key(settings))
    chosen = rows.to_numpy()[np.argsort(keys.to_numpy(), kind="stable")][
        : settings.drift_score_sample
    ]
    _, scores = model.recommend_rows(np.sort(chosen), 1)
    top = scores[:, 0].astype(np.float64)
    return top[np.isfinite(top)]


def _hash_key(settings: Settings) -> str:
    return f"{settings.seed:016d}"[-16:]


# -- the table -----------------------------------------------------------------------------


def _row(
    r: DriftResult,
    run_id: str,
    computed_at: datetime,
    start: datetime,
    end: datetime,
    version: str,
) -> tuple[Any, ...]:
    def number(x: float | None) -> float | None:
        return None if x is None or not np.isfinite(x) else float(x)

    return (
        run_id,
        _naive(computed_at),
        _naive(start),
        _naive(end),
        r.metric,
        r.stat,
        number(r.value),
        number(r.p_value),
        number(r.warn_at),
        number(r.alert_at),
        r.level,
        r.n_reference,
        r.n_current,
        version,
    )


def _write(spark: SparkSession, settings: Settings, run_id: str, rows: list[tuple]) -> None:
    """Replace the run's rows in one commit (a rerun never leaves both old and new)."""
    location = tables.ensure_table(spark, settings, "drift")
    frame = spark.createDataFrame(rows, tables.TABLES["drift"].ddl)
    quoted = run_id.replace("\\", "\\\\").replace("'", "\\'")
    (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"run_id = '{quoted}'")
        .save(location)
    )


def read_drift(spark: SparkSession, settings: Settings, run_id: str | None = None) -> pd.DataFrame:
    """The drift table (one run's rows when ``run_id`` is given), as pandas."""
    from pyspark.sql import functions as F

    frame = tables.read_or_create(spark, settings, "drift")
    if run_id is not None:
        frame = frame.where(F.col("run_id") == run_id)
    return frame.toPandas()


# One row per drift run, newest data first: a backfill (or a rerun) of an old window,
# computed today, is not the lake's present state. NULLS LAST spelled out: Spark and
# DataFusion (delta-rs) disagree on where NULLs go by default.
_DRIFT_RUNS_SQL = (
    "SELECT run_id, max(computed_at) AS at, max(window_end) AS window_end, "
    "max(model_version) AS model_version, "
    "max(CASE WHEN level = 'alert' THEN 1 ELSE 0 END) AS alert "
    "FROM {drift} GROUP BY run_id "
    "ORDER BY window_end DESC NULLS LAST, at DESC NULLS LAST, run_id DESC NULLS LAST"
)
_DRIFT_ALERTS_SQL = (
    "SELECT metric, statistic, value FROM {drift} WHERE run_id = {run_id} AND level = 'alert'"
)


def newest_drift(spark: SparkSession | None, settings: Settings) -> dict[str, Any] | None:
    """The newest drift run overall (alert or not), summarised for the training trigger.

    The newest run, not the newest with an alert: an alert a later run no longer shows is
    resolved, and training on it would answer a question nobody asks any more. Keys:
    ``run_id``, ``computed_at`` (epoch s, ordering only), ``window_end`` (epoch s: the
    moment the run's data ends, what the trigger compares training starts with, since a
    training that started after it read every event the run judged), ``model_version``
    (the champion the run read), ``alert`` (bool), ``metrics`` (its alert rows),
    ``reason``, and ``episode_start``: the ``window_end`` of the first alert run of the
    unbroken streak of alert runs for that model version that ends with this run (None
    when this run does not alert), so the trigger can train once per drift episode;
    ``episode_computed_at``: when that first run was computed (epoch s, wall clock), which
    the trigger compares with training starts (also wall clock) — a window's end is data
    time, and a backfill or a simulated shop judges days long past.
    Small: one row per run reaches the caller. Without ``spark`` the table is read
    through delta-rs (``jobs.lake_light``: no JVM), with the same SQL.
    """
    query = _drift_query(spark, settings)
    if query is None:
        return None  # no drift run yet
    runs = query(_DRIFT_RUNS_SQL, {})
    if not runs:
        return None
    top = runs[0]
    alert = bool(top["alert"])
    metrics: list[str] = []
    episode_start = episode_computed_at = None
    if alert:
        rows = query(_DRIFT_ALERTS_SQL, {"run_id": top["run_id"]})
        metrics = sorted(f"{r['metric']}:{r['statistic']}={r['value']:.3g}" for r in rows)
        first = episode_first(runs)
        episode_start, episode_computed_at = _epoch(first["window_end"]), _epoch(first["at"])
    reason = (
        f"drift run {top['run_id']} (champion v{top['model_version']}) alerts on "
        f"{', '.join(metrics)}"
        if alert
        else f"newest drift run {top['run_id']} (champion v{top['model_version']}) has no alert"
    )
    return {
        "run_id": top["run_id"],
        "computed_at": _epoch(top["at"]),
        "window_end": _epoch(top["window_end"]),
        "model_version": top["model_version"],
        "alert": alert,
        "metrics": metrics,
        "episode_start": episode_start,
        "episode_computed_at": episode_computed_at,
        "reason": reason,
    }


def _drift_query(spark: SparkSession | None, settings: Settings) -> Any:
    """A function running one of the drift SQL texts over the drift table (string
    parameters quoted), through Spark or delta-rs; None when there is no table yet."""

    def quoted(params: dict[str, str]) -> dict[str, str]:
        return {k: "'" + str(v).replace("'", "''") + "'" for k, v in params.items()}

    if spark is None:
        from jobs import lake_light

        table = lake_light.open_table(settings, "drift")
        if table is None:
            return None
        return lambda sql, params: lake_light.rows(
            sql.format(drift="drift", **quoted(params)), drift=table
        )
    from delta.tables import DeltaTable

    location = tables.path(settings, "drift")
    if not DeltaTable.isDeltaTable(spark, location):
        return None
    source = "delta.`" + location.replace("`", "``") + "`"
    return lambda sql, params: spark.sql(sql.format(drift=source, **quoted(params))).collect()


def episode_first(runs: list[Any]) -> Any:
    """The first run of the drift episode the newest run (``runs[0]``, which alerts) is in.

    ``runs`` are newest first, each with ``model_version`` and ``alert``. Walks back while
    the runs alert on the same champion: a run without alert ends the episode (the drift
    resolved), and so does a run of another champion (after a rollback to this one, its
    new alerts are a new episode, not the old one a training may already have answered).
    """
    first = runs[0]
    for run in runs:
        if run["model_version"] != runs[0]["model_version"] or not run["alert"]:
            break
        first = run
    return first


def _epoch(naive_utc: datetime | None) -> float | None:
    """Epoch seconds of a naive UTC timestamp (None stays None: rows written before
    ``window_end`` was filled in)."""
    return None if naive_utc is None else naive_utc.replace(tzinfo=UTC).timestamp()


# -- the report ----------------------------------------------------------------------------


def write_report(
    settings: Settings,
    run_id: str,
    version: str,
    reference: Window,
    current: Window,
    results: list[DriftResult],
    samples: dict[str, tuple[Any, Any]],
) -> Path:
    """A standalone HTML page (PNG histograms inlined as base64), written atomically."""
    target = settings.drift_reports_dir / f"{_file_name(run_id)}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(
        f"<tr class='{r.level}'><td>{html.escape(r.metric)}</td><td>{r.stat}</td>"
        f"<td>{r.value:.4g}</td><td>{'' if r.p_value is None else f'{r.p_value:.3g}'}</td>"
        f"<td>{_fmt(r.warn_at)}</td><td>{_fmt(r.alert_at)}</td><td>{r.level}</td>"
        f"<td>{r.n_reference}</td><td>{r.n_current}</td></tr>"
        for r in results
    )
    figures = "".join(
        f"<h2>{html.escape(metric)}</h2><img alt='{html.escape(metric)}' "
        f"src='data:image/png;base64,{_histogram(metric, ref, cur)}'>"
        for metric, (ref, cur) in samples.items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>recflow drift {html.escape(run_id)}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px}} .alert{{background:#f8d0d0}}
.warn{{background:#fbeec8}}</style></head><body>
<h1>Drift run {html.escape(run_id)}</h1>
<p>Champion v{html.escape(version)}. Reference: {html.escape(reference.described)}
({reference.n_events} events). Current: {html.escape(current.described)}
({current.n_events} events).</p>
<table><tr><th>metric</th><th>statistic</th><th>value</th><th>p-value</th><th>warn at</th>
<th>alert at</th><th>level</th><th>n reference</th><th>n current</th></tr>{rows}</table>
{figures}</body></html>
"""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target


def _file_name(run_id: str) -> str:
    """Airflow run ids hold ':' and '+': keep a file name portable."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def report_path(settings: Settings, run_id: str) -> Path:
    return settings.drift_reports_dir / f"{_file_name(run_id)}.html"


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.3g}"


def _histogram(metric: str, ref: Any, cur: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.8))
    try:
        if isinstance(ref, dict):
            keys = sorted(set(ref) | set(cur))[:40]
            r_total, c_total = sum(ref.values()) or 1.0, sum(cur.values()) or 1.0
            x = np.arange(len(keys))
            ax.bar(x - 0.2, [ref.get(k, 0) / r_total for k in keys], 0.4, label="reference")
            ax.bar(x + 0.2, [cur.get(k, 0) / c_total for k in keys], 0.4, label="current")
            ax.set_xticks(x, [str(k)[:12] for k in keys], rotation=45, ha="right", fontsize=7)
        else:
            lo, hi = float(min(ref.min(), cur.min())), float(max(ref.max(), cur.max()))
            edges = np.linspace(lo, hi if hi > lo else lo + 1, 31)
            ax.hist(ref, edges, density=True, alpha=0.5, label="reference")
            ax.hist(cur, edges, density=True, alpha=0.5, label="current")
        ax.set_title(metric)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        return base64.b64encode(buf.getvalue()).decode("ascii")
    finally:
        plt.close(fig)
