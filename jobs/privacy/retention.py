"""Retention: each store keeps what it holds for a configured time, then loses it.

Reads the settings ``RECFLOW_RETENTION_*`` (and ``RECFLOW_PUBLISH_KEEP``) and each store's
own listing. Deletes: landing hour and catalog folders, ``bronze_events`` and
``quarantine`` days (a partition-aligned DELETE; the next VACUUM, which the maintenance
DAG runs after this, removes the files once ``RECFLOW_VACUUM_RETENTION_HOURS`` have
passed), Great Expectations validation results and their Data Docs pages, Feast parquet
snapshots, staged publish scores, publishes beyond ``publish_keep`` and registered model
versions. The README's "Retention" table lists every store and the rule it follows.

Each function handles one store, takes ``now`` from its caller (never the clock, so a
test or a rerun decides the cut-off) and returns a :class:`Swept`: what it removed, or
with ``dry_run`` what it would remove. What a pipeline may still read back is never
removed, whatever its age:

- a landing file bronze does not hold (never ingested) stays, reported as ``kept``;
- a Feast view's newest snapshot stays (its entities' latest values may be there);
- the live publish, its staged scores, and the model versions behind an alias
  (champion, challenger, best or any other), the live publish and the champion's
  predecessor (what ``recflow rollback-model`` restores) stay.

A second run right after the first removes nothing.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from jobs.publish.storage import ObjectStore

log = logging.getLogger(__name__)

GX_RUN_TIME = "%Y%m%dT%H%M%S.%fZ"  # a GX run_time folder, e.g. 20261129T174544.325091Z
PUBLISH_STAMP = "%Y%m%dT%H%M%SZ"  # the time part of a publish id


@dataclass
class Swept:
    """What retention did to (or, in a dry run, would do to) one store."""

    store: str
    setting: str  # the RECFLOW_* variable of the limit
    limit: int  # its value (0: the store is kept for ever)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # past the limit, kept for a reason
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "limit": self.limit,
            "removed": self.removed,
            "kept": self.kept,
            **self.detail,
        }


SparkFor = Callable[[], "SparkSession"]


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"now={now} needs a time zone")
    return now.astimezone(UTC)


def _remove_empty_parents(path: Path, stop: Path) -> None:
    """Remove ``path``'s parents up to (not including) ``stop`` while they are empty."""
    parent = path.parent
    while parent != stop and parent.is_relative_to(stop) and parent.is_dir():
        if any(parent.iterdir()):
            break
        parent.rmdir()
        parent = parent.parent


# -- landing ---------------------------------------------------------------------------------


def _folder_day(name: str) -> date | None:
    try:
        return date.fromisoformat(name.removeprefix("dt="))
    except ValueError:
        return None


def _loaded_files(spark: SparkSession, settings: Settings, name: str, until: date | None) -> set:
    """Landing paths bronze holds (``until``: only days up to it, bronze_events only)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from jobs.ingest.bronze import source_path

    location = tables.path(settings, name)
    if not DeltaTable.isDeltaTable(spark, location):
        return set()  # nothing loaded yet (and a dry run creates no table)
    frame = spark.read.format("delta").load(location)
    if until is not None:
        frame = frame.where(F.col("_dt") <= F.lit(until.isoformat()).cast("date"))
    rows = frame.select("_source_file").distinct().collect()
    return {source_path(r["_source_file"]) for r in rows if r["_source_file"]}


def landing(settings: Settings, now: datetime, spark_for: SparkFor, dry_run: bool = False) -> Swept:
    """Delete landing hour folders (events) and day folders (catalog) older than the limit.

    A folder goes only when bronze holds every ``.jsonl`` file in it: bronze keeps working
    without landing (``landing_expired``), but a file that never reached bronze exists
    nowhere else. Such folders are reported as kept.
    """
    out = Swept("landing", "RECFLOW_RETENTION_LANDING_DAYS", settings.retention_landing_days)
    days = settings.retention_landing_days
    if not days:
        return out
    cutoff = _utc(now) - timedelta(days=days)
    candidates: list[tuple[Path, str]] = []  # (folder, bronze table)
    for day_dir in sorted(settings.events_dir.glob("dt=*")):
        day = _folder_day(day_dir.name)
        if day is None:
            continue
        for hour_dir in sorted(day_dir.glob("hr=*")):
            try:
                hour = int(hour_dir.name.removeprefix("hr="))
            except ValueError:
                continue
            start = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hour)
            if start + timedelta(hours=1) <= cutoff:
                candidates.append((hour_dir, "bronze_events"))
    for day_dir in sorted(settings.catalog_dir.glob("dt=*")):
        day = _folder_day(day_dir.name)
        if (
            day is not None
            and datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) <= cutoff
        ):
            candidates.append((day_dir, "bronze_items"))
    if not candidates:
        return out
    spark = spark_for()
    known = {
        "bronze_events": _loaded_files(spark, settings, "bronze_events", cutoff.date()),
        "bronze_items": _loaded_files(spark, settings, "bronze_items", None),
    }
    assert settings.landing_dir is not None
    for folder, table in candidates:
        files = {str(f.absolute()) for f in folder.glob("*.jsonl")}
        rel = str(folder.relative_to(settings.landing_dir))
        if not files <= known[table]:
            out.kept.append(f"{rel} (not in {table}: {len(files - known[table])} file(s))")
            continue
        out.removed.append(rel)
        if not dry_run:
            shutil.rmtree(folder)
            _remove_empty_parents(folder, settings.landing_dir)
    return out


# -- lake tables partitioned by day ----------------------------------------------------------


def _drop_days(
    spark_for: SparkFor,
    settings: Settings,
    name: str,
    days: int,
    setting: str,
    now: datetime,
    dry_run: bool,
    column: str = "_dt",
) -> Swept:
    """DELETE the table's day partitions (``column``) older than ``days`` (whole ones only)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    out = Swept(name, setting, days)
    if not days:
        return out
    spark = spark_for()
    location = tables.path(settings, name)
    if not DeltaTable.isDeltaTable(spark, location):
        return out
    cutoff = (_utc(now) - timedelta(days=days)).date()
    # The day is the partition column: the predicate drops whole files (no rewrite).
    old = F.col(column) < F.lit(cutoff.isoformat()).cast("date")
    found = spark.read.format("delta").load(location).where(old).groupBy(column).count().collect()
    out.removed = sorted(f"{column}={r[column]:%Y-%m-%d}" for r in found)
    out.detail["rows"] = sum(int(r["count"]) for r in found)
    if found and not dry_run:
        DeltaTable.forPath(spark, location).delete(old)
    return out


def bronze(settings: Settings, now: datetime, spark_for: SparkFor, dry_run: bool = False) -> Swept:
    """Delete bronze_events days older than ``retention_bronze_days``."""
    return _drop_days(
        spark_for,
        settings,
        "bronze_events",
        settings.retention_bronze_days,
        "RECFLOW_RETENTION_BRONZE_DAYS",
        now,
        dry_run,
    )


def quarantine(
    settings: Settings, now: datetime, spark_for: SparkFor, dry_run: bool = False
) -> Swept:
    """Delete quarantine days older than ``retention_quarantine_days``."""
    return _drop_days(
        spark_for,
        settings,
        "quarantine",
        settings.retention_quarantine_days,
        "RECFLOW_RETENTION_QUARANTINE_DAYS",
        now,
        dry_run,
    )


# -- the service's answer log ------------------------------------------------------------------


def answers(settings: Settings, now: datetime, spark_for: SparkFor, dry_run: bool = False) -> Swept:
    """Answer-log day folders and ``rec_answers`` days older than ``retention_answers_days``.

    Each line names a person by subject hash and lists what they were shown: personal
    data with a use (lift, answer audits) that fades in weeks. The files go whole by their
    ``dt=`` folder, loaded or not (past the limit an unloaded answer is of no use either);
    the table loses whole ``dt`` partitions.
    """
    from jobs.answer_log import answers_dir

    days = settings.retention_answers_days
    out = _drop_days(
        spark_for,
        settings,
        "rec_answers",
        days,
        "RECFLOW_RETENTION_ANSWERS_DAYS",
        now,
        dry_run,
        column="dt",
    )
    out.store = "answers"
    root = answers_dir(settings)
    if not days or not root.exists():
        return out
    cutoff = (_utc(now) - timedelta(days=days)).date()
    for folder in sorted(root.glob("dt=*")):
        day = _folder_day(folder.name)
        if day is None or day >= cutoff or not folder.is_dir():
            continue
        out.removed.append(folder.relative_to(root.parent).as_posix())
        if not dry_run:
            shutil.rmtree(folder)
    return out


# -- Great Expectations ------------------------------------------------------------------------


def _gx_runs(root: Path) -> list[tuple[Path, datetime]]:
    """``<suite>/<run_name>/<run_time>`` folders under ``root`` with their run time."""
    found = []
    for folder in sorted(root.glob("*/*/*")):
        try:
            stamp = datetime.strptime(folder.name, GX_RUN_TIME).replace(tzinfo=UTC)
        except ValueError:
            continue  # not a run folder GX wrote: not ours to delete
        if folder.is_dir():
            found.append((folder, stamp))
    return found


def quality(settings: Settings, now: datetime, dry_run: bool = False) -> Swept:
    """Delete validation results and their Data Docs pages older than the limit.

    Results may quote unexpected values (user ids among them). The index page is
    rendered again afterwards, so it links only to pages that are left.
    """
    out = Swept("quality", "RECFLOW_RETENTION_QUALITY_DAYS", settings.retention_quality_days)
    days = settings.retention_quality_days
    if not days:
        return out
    cutoff = _utc(now) - timedelta(days=days)
    uncommitted = settings.gx_dir / "uncommitted"
    roots = (uncommitted / "validations", uncommitted / "data_docs" / "local_site" / "validations")
    for root in roots:
        for folder, stamp in _gx_runs(root):
            if stamp < cutoff:
                out.removed.append(str(folder.relative_to(settings.gx_dir)))
                if not dry_run:
                    shutil.rmtree(folder)
                    _remove_empty_parents(folder, root)
    if out.removed and not dry_run and (uncommitted / "data_docs").is_dir():
        from jobs.ingest.quality import refresh_docs_index

        refresh_docs_index(settings)
    return out


# -- Feast -----------------------------------------------------------------------------------


def feast_snapshots(settings: Settings, now: datetime, dry_run: bool = False) -> Swept:
    """Delete each view's parquet snapshots older than the limit, never its newest.

    Export writes every live entity again at least every half TTL, and the limit exceeds
    the TTL, so older snapshots hold only values that newer ones replaced (or the values
    of entities gone since). Left-over temporaries of a crashed export go the same way.
    """
    from jobs.features.definitions import sources_dir
    from jobs.features.export import STAMP_FORMAT, exported_stamps, stamp_name

    out = Swept(
        "feast_snapshots",
        "RECFLOW_RETENTION_FEAST_SNAPSHOT_DAYS",
        settings.retention_feast_snapshot_days,
    )
    days = settings.retention_feast_snapshot_days
    root = sources_dir(settings)
    if not days or not root.is_dir():
        return out
    cutoff = _utc(now) - timedelta(days=days)
    for view in sorted(p for p in root.iterdir() if p.is_dir()):
        stamps = exported_stamps(view)
        old = [view / stamp_name(s) for s in stamps[:-1] if s < cutoff]
        for tmp in sorted(view.glob("_tmp-*")):
            try:
                stamp = datetime.strptime(tmp.name.split("-")[1], STAMP_FORMAT)
            except (IndexError, ValueError):
                continue
            if stamp.replace(tzinfo=UTC) < cutoff:
                old.append(tmp)
        for folder in old:
            out.removed.append(str(folder.relative_to(root)))
            if not dry_run:
                shutil.rmtree(folder)
    return out


# -- publishing --------------------------------------------------------------------------------


def _publish_time(publish_id: str) -> datetime:
    return datetime.strptime(publish_id.split("-")[0], PUBLISH_STAMP).replace(tzinfo=UTC)


def staging(settings: Settings, now: datetime, store: ObjectStore, dry_run: bool = False) -> Swept:
    """Delete staged scores of publishes older than the limit, except the live one's.

    A stage is what an upload is (re)run from; a day after its publish was scored the
    upload has succeeded or been given up. Pruning drops stages with their publishes too.
    """
    from jobs.publish import layout
    from jobs.publish.steps import current, drop_stage

    out = Swept("staging", "RECFLOW_RETENTION_STAGING_HOURS", settings.retention_staging_hours)
    hours = settings.retention_staging_hours
    if not hours:
        return out
    cutoff = _utc(now) - timedelta(hours=hours)
    prefix = settings.publish_prefix
    live = (current(settings, store) or {}).get("publish_id")
    staged = sorted(
        {
            pid
            for key, _ in store.list(f"{prefix}_staging/")
            if (pid := layout.staged_id_of(key, prefix))
        }
    )
    for pid in staged:
        if _publish_time(pid) >= cutoff:
            continue
        if pid == live:
            out.kept.append(f"{pid} (live)")
            continue
        out.removed.append(pid)
        if not dry_run:
            drop_stage(settings, store, pid)
    return out


def publishes(settings: Settings, store: ObjectStore, dry_run: bool = False) -> Swept:
    """Delete publishes beyond the newest ``publish_keep`` (never the live one)."""
    from jobs.publish.steps import prune_step

    out = Swept("publishes", "RECFLOW_PUBLISH_KEEP", settings.publish_keep)
    out.removed = prune_step(store, settings, dry_run=dry_run)
    return out


# -- the model registry ----------------------------------------------------------------------


def model_versions(
    settings: Settings, store: ObjectStore | None = None, dry_run: bool = False
) -> Swept:
    """Delete registered versions beyond the newest ``retention_model_versions``.

    Never one behind an alias (MLflow would drop the alias with it), the one the live
    publish serves, the champion's predecessor or the version recflow last set ``best``
    to. A deleted version's logged model is deleted too (artifacts stay until
    ``mlflow gc``), unless a kept version shares it.
    """
    from mlflow.exceptions import MlflowException

    from jobs.model.promotion import MODEL_TAG_BEST, TAG_PROMOTED_FROM
    from jobs.model.registry import CHAMPION, setup

    out = Swept(
        "model_versions", "RECFLOW_RETENTION_MODEL_VERSIONS", settings.retention_model_versions
    )
    keep_n = settings.retention_model_versions
    if not keep_n:
        return out
    client = setup(settings)
    name = settings.model_name
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return out
        raise
    versions = sorted(
        client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True
    )
    by_number = {str(v.version): v for v in versions}
    reasons: dict[str, str] = {}
    for alias, number in (model.aliases or {}).items():
        reasons.setdefault(str(number), f"alias {alias}")
    champion = (model.aliases or {}).get(CHAMPION)
    if champion is not None and str(champion) in by_number:
        before = (by_number[str(champion)].tags or {}).get(TAG_PROMOTED_FROM)
        if before and before != "none":
            reasons.setdefault(before, "champion's predecessor (rollback-model)")
    best = (model.tags or {}).get(MODEL_TAG_BEST)
    if best:
        reasons.setdefault(best, "last best")
    if store is not None:
        from jobs.publish.steps import current

        live = current(settings, store)
        if live is not None:
            reasons.setdefault(str(live["model"]["version"]), "live publish")
    kept = {str(v.version) for v in versions[:keep_n]}
    doomed = []
    for v in versions[keep_n:]:
        number = str(v.version)
        if number in reasons:
            out.kept.append(f"v{number} ({reasons[number]})")
        else:
            doomed.append(v)
    shared = {by_number[n].model_id for n in kept | set(reasons) if n in by_number}
    for v in doomed:
        out.removed.append(f"v{v.version}")
        if dry_run:
            continue
        if v.model_id and v.model_id not in shared:
            try:
                client.delete_logged_model(v.model_id)
            except MlflowException as exc:  # the version goes regardless
                log.warning("logged model %s of v%s not deleted: %s", v.model_id, v.version, exc)
        client.delete_model_version(name, str(v.version))
    return out


# -- all of them -------------------------------------------------------------------------------


def enforce(
    settings: Settings,
    now: datetime,
    dry_run: bool = False,
    spark: SparkSession | None = None,
    store: ObjectStore | None = None,
) -> dict[str, Swept]:
    """Every store's retention, landing before bronze (landing is checked against bronze).

    Spark starts only when a lake table has to be read.
    """
    from jobs.publish.storage import open_store

    now = _utc(now)
    session: list[SparkSession] = [spark] if spark is not None else []

    def spark_for() -> SparkSession:
        if not session:
            from jobs.spark import get_spark

            session.append(get_spark(settings))
        return session[0]

    store = store or open_store(settings)
    done = [
        landing(settings, now, spark_for, dry_run),
        bronze(settings, now, spark_for, dry_run),
        quarantine(settings, now, spark_for, dry_run),
        answers(settings, now, spark_for, dry_run),
        quality(settings, now, dry_run),
        feast_snapshots(settings, now, dry_run),
        staging(settings, now, store, dry_run),
        publishes(settings, store, dry_run),
        model_versions(settings, store, dry_run),
    ]
    return {s.store: s for s in done}


def retention_step(
    settings: Settings | None = None, now: str | datetime | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Enforce every store's retention (the ``maintenance`` DAG's first task).

    ``now`` is the instant retention counts back from: the DAG passes its run's data
    interval end, ``recflow retention`` the current time.
    """
    settings = settings or get_settings()
    if now is None:
        now = datetime.now(UTC)
    elif isinstance(now, str):
        now = datetime.fromisoformat(now)
    swept = enforce(settings, now, dry_run=dry_run)
    result = {name: s.as_dict() for name, s in swept.items()}
    removed = {name: len(s.removed) for name, s in swept.items() if s.removed}
    log.info("retention%s: %s", " (dry run)" if dry_run else "", removed or "nothing to remove")
    return result
