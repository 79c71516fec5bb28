"""Ingest of one data interval: landing → bronze → silver → gold, with an audit row.

These are the steps the ``ingest`` DAG runs as tasks (each returns a small JSON-able dict
for XCom) and that ``recflow ingest`` runs in one process. Each step is a transaction:
it reads what earlier steps committed and can be retried on its own.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs import tables
from jobs.config import Settings, get_settings

log = logging.getLogger(__name__)


class UnbalancedBatchError(RuntimeError):
    """The audit counts of a batch do not add up: something was lost or double-counted."""


def _spark(settings: Settings):
    from jobs.spark import get_spark

    return get_spark(settings)


def _already_done(spark: Any, settings: Settings, batch_id: str, fingerprint: str) -> bool:
    from pyspark.sql import functions as F

    audit = tables.read_or_create(spark, settings, "ingest_audit")
    return (
        audit.where(
            (F.col("batch_id") == batch_id)
            & (F.col("fingerprint") == fingerprint)
            & (F.col("status") == "ok")
        )
        .limit(1)
        .count()
        > 0
    )


def bronze_step(
    start: str, end: str, force: bool = False, settings: Settings | None = None
) -> dict[str, Any]:
    """Land the interval's files in bronze; says whether there is anything new to refine."""
    from jobs.ingest.bronze import load_events

    settings = settings or get_settings()
    spark = _spark(settings)
    interval = tables.Interval.parse(start, end)
    result = load_events(spark, settings, interval, force=force)
    done = not result.changed and _already_done(
        spark, settings, interval.batch_id, result.fingerprint
    )
    if not result.changed and not done and not result.landing_expired:
        # Bronze holds these files but no run finished them (a failed or unbalanced run):
        # load them again, since bronze itself may be what went wrong. Not when landing has
        # lost some of them: bronze's copy is then the only one (silver refines from it).
        result = load_events(spark, settings, interval, force=True)
    out = asdict(result)
    if settings.quality_enabled:
        from jobs.ingest.quality import check_bronze

        # Data Docs wait for the gold step's one render of the run (see quality's docstring).
        out["quality"] = check_bronze(spark, settings, interval, render=False)
    out["skip"] = not force and done
    return out


@dataclass
class RecentBatch:
    """A recent interval as bronze holds it: its fingerprint and source files."""

    interval: tables.Interval
    fingerprints: set[str]
    files: set[str]


def recent_batches(
    spark: Any | None, settings: Settings, before: tables.Interval
) -> list[RecentBatch]:
    """Intervals bronze holds that ended within ``late_data_hours`` before ``before``.

    Read from bronze (not the audit), so an interval whose run died after bronze, before
    its audit row, is among them too.
    """
    from jobs.ingest.bronze import source_path

    since = before.start - timedelta(hours=settings.late_data_hours)
    if spark is None:
        rows = _recent_rows_light(settings, since, before)
    else:
        rows = _recent_rows(spark, settings, since, before)
    batches: dict[str, RecentBatch] = {}
    for r in rows:
        interval = tables.Interval(
            r["_interval_start"].replace(tzinfo=UTC), r["_interval_end"].replace(tzinfo=UTC)
        )
        batch = batches.setdefault(r["_batch_id"], RecentBatch(interval, set(), set()))
        batch.fingerprints.add(r["_fingerprint"])
        if r["_source_file"]:
            batch.files.add(source_path(r["_source_file"]))
    # Intervals that were empty when they ran left no bronze row, only their audit row: a
    # file that lands in one of them later (a stream consumer that was down, the last
    # batch of an hour renamed into place after the run listed its folder) is late too.
    for r in _recent_audit(spark, settings, since, before):
        if r["batch_id"] not in batches:
            interval = tables.Interval(
                r["interval_start"].replace(tzinfo=UTC), r["interval_end"].replace(tzinfo=UTC)
            )
            batches[r["batch_id"]] = RecentBatch(interval, set(), set())
    return sorted(batches.values(), key=lambda b: (b.interval.start, b.interval.end))


def _recent_audit(
    spark: Any | None, settings: Settings, since: datetime, before: tables.Interval
) -> list[Any]:
    """Intervals with an ``ok`` audit row within the window (empty ones included)."""
    if spark is None:
        from jobs import lake_light

        audit = lake_light.open_table(settings, "ingest_audit")
        if audit is None:
            return []
        sql = (
            "SELECT DISTINCT batch_id, interval_start, interval_end FROM a "
            f"WHERE status = 'ok' "
            f"AND interval_start >= TIMESTAMP '{since.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z' "
            f"AND interval_end <= TIMESTAMP '{before.start.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z'"
        )
        return lake_light.rows(sql, a=audit)
    from pyspark.sql import functions as F

    return (
        tables.read_or_create(spark, settings, "ingest_audit")
        .where(
            (F.col("status") == "ok")
            & (F.col("interval_start") >= F.lit(since.replace(tzinfo=None)))
            & (F.col("interval_end") <= F.lit(before.start.replace(tzinfo=None)))
        )
        .select("batch_id", "interval_start", "interval_end")
        .distinct()
        .collect()
    )


_RECENT_COLUMNS = ("_batch_id", "_interval_start", "_interval_end", "_fingerprint", "_source_file")


def _recent_rows(
    spark: Any, settings: Settings, since: datetime, before: tables.Interval
) -> list[Any]:
    from pyspark.sql import functions as F

    return (
        tables.read_or_create(spark, settings, "bronze_events")
        .where(
            (F.col("_dt") >= F.lit(f"{since:%Y-%m-%d}").cast("date"))
            & (F.col("_interval_start") >= F.lit(since.replace(tzinfo=None)))
            & (F.col("_interval_end") <= F.lit(before.start.replace(tzinfo=None)))
        )
        .select(*_RECENT_COLUMNS)
        .distinct()
        .collect()
    )


def _recent_rows_light(
    settings: Settings, since: datetime, before: tables.Interval
) -> list[dict[str, Any]]:
    """``_recent_rows`` through delta-rs: the same filter (the day partition first)."""
    from jobs import lake_light

    bronze = lake_light.open_table(settings, "bronze_events")
    if bronze is None:
        return []  # no bronze yet: no batch to reload
    sql = (
        f"SELECT DISTINCT {', '.join(_RECENT_COLUMNS)} FROM b "
        f"WHERE _dt >= DATE '{since:%Y-%m-%d}' "
        f"AND _interval_start >= TIMESTAMP '{since.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z' "
        f"AND _interval_end <= TIMESTAMP '{before.start.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z'"
    )
    return lake_light.rows(sql, b=bronze)


def _finished(spark: Any | None, settings: Settings, batch_ids: list[str]) -> set[tuple[str, str]]:
    """(batch, fingerprint) pairs that have an ``ok`` audit row (through delta-rs without
    ``spark``)."""
    if spark is None:
        from jobs import lake_light

        audit = lake_light.open_table(settings, "ingest_audit")
        if audit is None or not batch_ids:
            return set()
        ids = ", ".join("'" + b.replace("'", "''") + "'" for b in batch_ids)
        sql = (
            "SELECT DISTINCT batch_id, fingerprint FROM a "
            f"WHERE status = 'ok' AND batch_id IN ({ids})"
        )
        return {(r["batch_id"], r["fingerprint"]) for r in lake_light.rows(sql, a=audit)}
    from pyspark.sql import functions as F

    rows = (
        tables.read_or_create(spark, settings, "ingest_audit")
        .where(F.col("batch_id").isin(batch_ids) & (F.col("status") == "ok"))
        .select("batch_id", "fingerprint")
        .distinct()
        .collect()
    )
    return {(r["batch_id"], r["fingerprint"]) for r in rows}


def late_step(
    start: str, end: str, settings: Settings | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Reload the recent intervals that gained files or never finished.

    An interval is read again when its landing folders hold a file name new to its bronze
    batch (a late file), or when what bronze holds for it has no ``ok`` audit row (a
    reload or a run that died after bronze): deciding from the audit, not from bronze's
    file names alone, means a reload that fails after its bronze write is retried by the
    next attempt instead of being skipped for ever. Cost: one listing of each recent
    interval's hour folders and two small queries (bronze's batches of those days, their
    audit rows). Each reloaded interval gets its own audit row (a retry with the same
    ``run_id`` replaces it); gold picks its new silver rows up with the next gold step.
    """
    from jobs import lake_light
    from jobs.ingest.bronze import interval_files

    settings = settings or get_settings()
    if not settings.late_data_hours:
        return {"checked": 0, "reloaded": [], "failed": []}
    # The check itself reads two small slices: through delta-rs where it can, so a run
    # with nothing late starts no JVM (the reloads below start Spark when needed).
    spark = None if lake_light.available(settings) else _spark(settings)
    recent = recent_batches(spark, settings, tables.Interval.parse(start, end))
    if not recent:
        return {"checked": 0, "reloaded": [], "failed": []}
    finished = _finished(spark, settings, [b.interval.batch_id for b in recent])
    reloaded, failed = [], []
    for batch in recent:
        interval = batch.interval
        names = {str(f.absolute()) for f in interval_files(settings, interval) if f.stat().st_size}
        unfinished = any((interval.batch_id, fp) not in finished for fp in batch.fingerprints)
        if not (names - batch.files) and not unfinished:
            continue
        s, e = interval.start.isoformat(), interval.end.isoformat()
        try:
            bronze = bronze_step(s, e, settings=settings)
            if bronze["skip"]:
                continue
            silver = silver_step(s, e, settings=settings)
            reloaded.append(
                audit_step(s, e, bronze, silver, None, settings=settings, run_id=run_id)
            )
        except Exception as exc:
            # Swallowed on purpose: an old interval that cannot be reloaded must not stop
            # this run's gold update. It has no ``ok`` audit row, so the next run tries it
            # again (for ``late_data_hours``); the failure is logged and in the result.
            log.exception("reloading %s failed; the next run retries it", interval.batch_id)
            failed.append({"batch_id": interval.batch_id, "error": f"{type(exc).__name__}: {exc}"})
    return {"checked": len(recent), "reloaded": reloaded, "failed": failed}


def catalog_step(settings: Settings | None = None) -> dict[str, Any]:
    """Load new catalog files into bronze, upsert them into silver items, and embed the
    items whose text changed (``jobs.content.embeddings``).

    Most runs find no new catalog file: that is checked without a JVM first (delta-rs),
    and only a new file, or bronze items silver has not applied, starts Spark.
    """
    from jobs.ingest.bronze import load_catalog
    from jobs.ingest.silver import upsert_items

    settings = settings or get_settings()
    unchanged = _catalog_unchanged(settings)
    if unchanged is not None:
        return unchanged
    spark = _spark(settings)
    files = load_catalog(spark, settings)
    result = {"files": len(files), **upsert_items(spark, settings), "embedded": 0}
    if settings.content_embeddings:
        from jobs.content.embeddings import embed_catalog

        result["embedded"] = embed_catalog(spark, settings)["embedded"]
    return result


def _catalog_unchanged(settings: Settings) -> dict[str, Any] | None:
    """``catalog_step``'s answer when there is nothing to do, read through delta-rs; None
    when there may be (a landing catalog file bronze lacks by path and content, bronze
    items silver has not applied) or the light path cannot tell (``jobs.lake_light``)."""
    import hashlib

    from jobs import lake_light
    from jobs.ingest.bronze import source_path

    if not lake_light.available(settings):
        return None
    bronze = lake_light.open_table(settings, "bronze_items")
    items = lake_light.open_table(settings, "items")
    if bronze is None or items is None:
        return None
    rows = lake_light.rows("SELECT DISTINCT _source_file, _fingerprint FROM b", b=bronze)
    known = {(source_path(r["_source_file"]), r["_fingerprint"]) for r in rows}
    for file in sorted(settings.catalog_dir.glob("dt=*/*.jsonl")):
        if (str(file.absolute()), hashlib.sha256(file.read_bytes()).hexdigest()) not in known:
            return None
    current = int(bronze.version())
    if lake_light.applied_mark(items, "bronze_items") != current:
        return None
    if settings.content_embeddings:
        from jobs.content.embeddings import light_up_to_date

        if not light_up_to_date(settings):
            return None
    return {
        "files": 0,
        "applied": 0,
        "quarantined": 0,
        "bronze_items_version": current,
        "embedded": 0,
    }


def silver_step(
    start: str, end: str, skip: bool = False, settings: Settings | None = None
) -> dict[str, Any]:
    """Validate, quarantine, de-duplicate and merge the batch (quality-gated)."""
    from jobs.ingest.silver import refine_events

    settings = settings or get_settings()
    interval = tables.Interval.parse(start, end)
    if skip:
        return {"batch_id": interval.batch_id, "skipped": True}
    spark = _spark(settings)
    gate = None
    if settings.quality_enabled:
        from jobs.ingest.quality import gate_silver

        def gate(frame: Any, batch: tables.Interval) -> dict[str, bool]:
            return gate_silver(spark, settings, frame, batch, render=False)

    result = refine_events(spark, settings, interval, gate=gate)
    return {**asdict(result), "balanced": result.balanced, "skipped": False}


def gold_step(settings: Settings | None = None) -> dict[str, Any]:
    """Apply every silver change not yet in gold (quality-gated)."""
    from jobs.ingest.gold import update

    settings = settings or get_settings()
    spark = _spark(settings)
    gate = None
    if settings.quality_enabled:
        from jobs.ingest.quality import gate_changes

        def gate(settings: Settings, inserted: Any) -> dict[str, bool]:
            return gate_changes(settings, inserted, render=False)

    result = update(spark, settings, gate=gate)
    out = asdict(result)
    if settings.quality_enabled:
        from jobs.ingest.quality import check_gold, render_docs

        out["quality"] = {**result.quality, **check_gold(spark, settings, render=False)}
        # The run's one Data Docs build: this run's bronze, silver and gold results (and
        # any an earlier, interrupted run left unrendered).
        try:
            out["data_docs_rendered"] = render_docs(settings)
        except Exception as exc:
            # Gold is committed and every verdict is in the results and the audit; a
            # broken render (a result file truncated by a killed run, a full disk) must not
            # fail the run after the fact, nor every later one. Logged, and in the result.
            log.exception("rendering Data Docs failed; the validation results are stored")
            out["data_docs_rendered"] = 0
            out["data_docs_error"] = f"{type(exc).__name__}: {exc}"
    return out


def rebuild_gold_step(
    version: int | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Recompute every gold table from silver at a pinned version (quality-checked)."""
    from jobs.ingest.gold import rebuild

    settings = settings or get_settings()
    spark = _spark(settings)
    out = asdict(rebuild(spark, settings, version=version))
    if settings.quality_enabled:
        from jobs.ingest.quality import check_gold

        out["quality"] = check_gold(spark, settings)  # renders the Data Docs once
    return out


def maintain_step(settings: Settings | None = None) -> dict[str, Any]:
    """OPTIMIZE and VACUUM every lake table (the ``maintenance`` DAG's one task)."""
    from jobs.ingest.maintenance import maintain

    settings = settings or get_settings()
    done = maintain(_spark(settings), settings)
    return {m.table: {"files_before": m.files_before, "files_after": m.files_after} for m in done}


def audit_step(
    start: str,
    end: str,
    bronze: dict[str, Any],
    silver: dict[str, Any],
    gold: dict[str, Any] | None,
    settings: Settings | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Record the batch's counts; fail loudly when they do not balance.

    The row says ``ok`` only when the counts balance; otherwise it says ``unbalanced`` and
    the step raises, so a later run does not take the interval for done. ``run_id`` names
    the run (Airflow's run id): a retried task replaces its run's row instead of adding a
    second one. Without it (``recflow ingest``) each call is a run of its own.
    """
    settings = settings or get_settings()
    interval = tables.Interval.parse(start, end)
    row = audit_row(interval, bronze, silver, gold, run_id or uuid.uuid4().hex)
    _write_audit(settings, row)
    if row["status"] == "unbalanced":
        raise UnbalancedBatchError(f"batch {interval.batch_id} does not balance: {row}")
    return {k: v for k, v in row.items() if not isinstance(v, datetime)}


def audit_row(
    interval: tables.Interval,
    bronze: dict[str, Any],
    silver: dict[str, Any],
    gold: dict[str, Any] | None,
    run_id: str,
) -> dict[str, Any]:
    """The audit row of one run: counts, versions, quality, and a status decided last."""
    skipped = silver.get("skipped", False)
    balanced = skipped or (
        bool(silver.get("balanced"))
        and bronze["read_lines"] == bronze["bronze_rows"] == silver.get("bronze_rows")
    )
    return {
        "run_id": run_id,
        "batch_id": interval.batch_id,
        "interval_start": interval.start.replace(tzinfo=None),
        "interval_end": interval.end.replace(tzinfo=None),
        "fingerprint": bronze["fingerprint"],
        "status": "unchanged" if skipped else "ok" if balanced else "unbalanced",
        "read_lines": bronze["read_lines"],
        "bronze_rows": bronze["bronze_rows"],
        "quarantined": silver.get("quarantined", 0),
        "quarantined_by_reason": silver.get("quarantined_by_reason", {}),
        "non_consented": silver.get("non_consented", 0),
        "consent_withdrawn": silver.get("consent_withdrawn", 0),
        "duplicates_in_batch": silver.get("duplicates_in_batch", 0),
        "duplicates_existing": silver.get("duplicates_existing", 0),
        "silver_inserted": silver.get("inserted", 0),
        "balanced": balanced,
        "silver_version": silver.get("silver_version", -1),
        "gold_versions": (gold or {}).get("versions", {}),
        "quality": {
            # False when bronze kept rows whose landing files are gone (not reloaded).
            "landing_complete": not bronze.get("landing_expired", False),
            **bronze.get("quality", {}),
            **silver.get("quality", {}),
            **(gold or {}).get("quality", {}),
        },
        "started_at": None,
        "finished_at": datetime.now(UTC).replace(tzinfo=None),
    }


def _write_audit(settings: Settings, row: dict[str, Any]) -> None:
    """Upsert the row by (run_id, batch_id): one row per run and batch, however often the
    task is retried.

    Through delta-rs when it can (a task that only records the audit then starts no JVM:
    ``jobs.lake_light``), otherwise through Spark, which also creates or evolves the table.
    """
    from jobs.lake_light import merge_rows

    if merge_rows(settings, "ingest_audit", [row], ("run_id", "batch_id")) is not None:
        return
    from delta.tables import DeltaTable

    spark = _spark(settings)
    location = tables.ensure_table(spark, settings, "ingest_audit")
    frame = spark.createDataFrame([row], tables.TABLES["ingest_audit"].ddl)
    (
        DeltaTable.forPath(spark, location)
        .alias("t")
        .merge(frame.alias("s"), "t.run_id = s.run_id AND t.batch_id = s.batch_id")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


def run_interval(
    start: str, end: str, force: bool = False, settings: Settings | None = None
) -> dict[str, Any]:
    """All steps of one interval in this process (what the DAG does, task by task), with
    the recent intervals that gained late files."""
    settings = settings or get_settings()
    bronze = bronze_step(start, end, force=force, settings=settings)
    catalog = catalog_step(settings=settings)
    silver = silver_step(start, end, skip=bronze["skip"], settings=settings)
    late = late_step(start, end, settings=settings)
    gold = gold_step(settings=settings)
    audit = audit_step(start, end, bronze, silver, gold, settings=settings)
    return {
        "bronze": bronze,
        "catalog": catalog,
        "silver": silver,
        "late": late,
        "gold": gold,
        "audit": audit,
    }
