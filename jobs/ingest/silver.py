"""Silver: typed, validated, de-duplicated events and the current catalog.

Reads: one batch of ``bronze_events`` (by batch id), new rows of ``bronze_items`` (change
data feed), ``privacy/consent``. Writes: ``silver/events`` (MERGE on ``event_id``,
insert-only: the first delivery of an event wins and redeliveries are counted, not
stored), ``silver/items`` (upsert by ``item_id``, newest ``updated_at`` wins),
``silver/quarantine`` (every rejected line with its reason, as valid UTF-8 text with
undecodable bytes escaped; replaced per batch so reruns do not pile up) and, rarely,
``bronze_events`` (see Consent).

Every line of a batch ends in exactly one of: quarantined, not consented (dropped and
counted), consent withdrawn (dropped and counted), duplicate within the batch, already in
silver, inserted. The counts are returned for the audit, which checks that they add up to
the lines read.

Consent. Bronze stores lines that must not be kept without their content (see
:mod:`jobs.ingest.bronze`): silver counts them by their ``_redacted`` reason and never
parses them, so neither silver nor the quarantine can receive them. A valid line bronze
did keep is checked again on its typed fields: ``"consent": false`` that bronze's JSON
reading missed (a key given twice: Python keeps the last), or a withdrawal recorded
between the bronze and the silver step. Such a line is dropped and counted like the
others, and its bronze row is redacted in place (value NULL, reason, hash) in this step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobs import tables
from jobs.config import Settings
from jobs.contracts import ATTRIBUTION_FIELDS, MAX_LINE_BYTES, Redaction
from jobs.contracts import ITEM_FIELDS as ITEM_CONTRACT
from jobs.ingest.validate import Rejected, TimeWindow, parse_event, parse_item, shown

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

# What the parsers add to each bronze row (the lineage columns it keeps come first).
EVENT_LINEAGE = (
    "value STRING, _source_file STRING, _batch_id STRING, _ingested_at TIMESTAMP, _dt DATE, "
    "_redacted STRING"
)
EVENT_FIELDS = (
    "reason STRING, detail STRING, event_id STRING, ts_ms BIGINT, user_id STRING, "
    "item_id STRING, event_type STRING, session_id STRING, request_id STRING, position INT, "
    "quantity INT, price DOUBLE, consent BOOLEAN, rec_source STRING, publish_id STRING, "
    "model_version STRING"
)
ITEM_LINEAGE = "value STRING, _source_file STRING, _ingested_at TIMESTAMP"
ITEM_FIELDS = (
    "reason STRING, detail STRING, item_id STRING, title STRING, category STRING, "
    "brand STRING, price DOUBLE, in_stock BOOLEAN, description STRING, updated_at_ms BIGINT"
)
PARSED_EVENTS = f"{EVENT_LINEAGE}, {EVENT_FIELDS}"
PARSED_ITEMS = f"{ITEM_LINEAGE}, {ITEM_FIELDS}"


@dataclass
class SilverResult:
    batch_id: str
    bronze_rows: int = 0
    quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    non_consented: int = 0
    consent_withdrawn: int = 0
    duplicates_in_batch: int = 0
    duplicates_existing: int = 0
    inserted: int = 0
    silver_version: int = -1
    quality: dict[str, bool] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.bronze_rows == (
            self.quarantined
            + self.non_consented
            + self.consent_withdrawn
            + self.duplicates_in_batch
            + self.duplicates_existing
            + self.inserted
        )


def time_window(settings: Settings, interval: tables.Interval) -> TimeWindow:
    """Plausible event times for a batch: not before the configured floor, not later than
    the interval's end plus the allowed clock skew."""
    floor = datetime.fromisoformat(settings.min_event_ts)
    ceiling = interval.end + timedelta(hours=settings.max_future_skew_hours)
    return TimeWindow(int(floor.timestamp() * 1000), int(ceiling.timestamp() * 1000))


# The pandas dtype of each silver type: nullable and explicit, so a column that no record
# of a batch sets (all None) or a batch of only rejected lines still converts to its Arrow
# type instead of being guessed as float NaN.
PANDAS_DTYPES = {
    "STRING": "string",
    "INT": "Int32",
    "BIGINT": "Int64",
    "DOUBLE": "Float64",
    "BOOLEAN": "boolean",
}


def _parser(
    parse: Callable[[bytes], dict[str, object]], fields_ddl: str
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function: validate each line, keep lineage, add typed fields.

    The line comes in as BINARY (Arrow hands Python the bytes, never decoding them, so a
    file that is not UTF-8 cannot fail the batch) and goes out as STRING: the text of the
    line, with undecodable bytes escaped (see :func:`jobs.ingest.validate.shown`).
    """
    fields = [(name, PANDAS_DTYPES[kind]) for name, kind in tables.ddl_fields(fields_ddl)]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for batch in batches:
            texts, records = [], []
            for raw in batch["value"]:
                try:
                    rec = parse(raw)
                except Rejected as bad:
                    rec = {"reason": str(bad.reason), "detail": shown(bad.detail)}
                records.append(rec)
                texts.append(None if raw is None else shown(raw))
            out = {"value": pd.array(texts, dtype="string")}
            for name in batch.columns.drop("value"):
                out[name] = batch[name].reset_index(drop=True)
            for name, dtype in fields:
                out[name] = pd.array([rec.get(name) for rec in records], dtype=dtype)
            yield pd.DataFrame(out)

    return run


def validate_events(
    bronze: DataFrame, window: TimeWindow, max_line_bytes: int = MAX_LINE_BYTES
) -> DataFrame:
    """Bronze rows plus a reason (rejected) or typed contract fields (accepted).

    A redacted row (value NULL) is not parsed: it gets neither a reason nor fields.
    """
    from pyspark.sql import functions as F

    def parse(line: bytes | None) -> dict[str, object]:
        return {} if line is None else parse_event(line, window, max_line_bytes)

    fn = _parser(parse, EVENT_FIELDS)
    lineage = bronze.select(
        F.col("value").cast("binary").alias("value"), *tables.ddl_columns(EVENT_LINEAGE)[1:]
    )
    return lineage.mapInPandas(fn, PARSED_EVENTS)


def _quarantine(parsed: DataFrame, source: str, batch_id: str) -> DataFrame:
    from pyspark.sql import functions as F

    rejected = parsed.where(F.col("reason").isNotNull())
    return rejected.select(
        F.lit(source).alias("source"),
        "value",
        "reason",
        "detail",
        "_source_file",
        F.lit(batch_id).alias("_batch_id"),
        "_ingested_at",
        F.col("_dt") if "_dt" in parsed.columns else F.to_date("_ingested_at").alias("_dt"),
    )


def refine_events(
    spark: SparkSession,
    settings: Settings,
    interval: tables.Interval,
    gate: Callable[[DataFrame, tables.Interval], dict[str, bool]] | None = None,
) -> SilverResult:
    """Validate one bronze batch; quarantine the bad, merge the good into silver.

    ``gate(frame, interval)`` runs the silver data-quality suite on the candidate rows
    before anything reaches silver; it returns per-suite success and raises
    (``jobs.ingest.quality.QualityGateError``) on a critical failure.
    """
    result = SilverResult(interval.batch_id)
    bronze = _bronze_batch(spark, settings, interval)
    window = time_window(settings, interval)
    validated = validate_events(bronze, window, settings.max_line_bytes)
    with _persisted(_with_outcome(spark, settings, validated)) as parsed:
        _count_outcomes(parsed, result)
        _redact_late(spark, settings, parsed, interval)
        _write_quarantine(spark, settings, parsed, interval)
        with _persisted(_first_of_each_event(parsed)) as candidates:
            n_candidates = candidates.count()
            result.duplicates_in_batch = (
                result.bronze_rows
                - result.quarantined
                - result.non_consented
                - result.consent_withdrawn
                - n_candidates
            )
            if gate is not None:
                result.quality.update(gate(candidates, interval))
            result.inserted = _merge_new_events(spark, settings, candidates, n_candidates)
            result.duplicates_existing = n_candidates - result.inserted
            result.silver_version = tables.version(spark, settings, "events")
    return result


@contextmanager
def _persisted(frame: DataFrame) -> Iterator[DataFrame]:
    """A frame computed once for the several actions of the block, released after it."""
    frame = frame.persist()
    try:
        yield frame
    finally:
        frame.unpersist()


def _bronze_batch(spark: SparkSession, settings: Settings, interval: tables.Interval) -> DataFrame:
    from pyspark.sql import functions as F

    day = f"{interval.start:%Y-%m-%d}"
    return tables.read_or_create(spark, settings, "bronze_events").where(
        (F.col("_dt") == F.lit(day).cast("date")) & (F.col("_batch_id") == interval.batch_id)
    )


QUARANTINED, NON_CONSENTED, WITHDRAWN, ACCEPTED = (
    "quarantined",
    "non_consented",
    "consent_withdrawn",
    "accepted",
)


def _with_outcome(spark: SparkSession, settings: Settings, parsed: DataFrame) -> DataFrame:
    """Parsed rows plus ``_outcome``: quarantined, non_consented, consent_withdrawn or
    accepted (a candidate for silver), with consent deciding before validation."""
    from pyspark.sql import functions as F

    from jobs.privacy.consent import with_withdrawn, withdrawn_state

    state = withdrawn_state(spark, settings)
    if state is None:
        marked = parsed.withColumn("_withdrawn", F.lit(False))
    else:
        ts = F.timestamp_millis("ts_ms")
        marked = with_withdrawn(parsed, settings, state, F.col("user_id"), ts)
    redacted = F.col("_redacted")
    outcome = (
        F.when(redacted == str(Redaction.CONSENT_WITHDRAWN), F.lit(WITHDRAWN))
        .when(redacted.isNotNull(), F.lit(NON_CONSENTED))
        .when(F.col("reason").isNotNull(), F.lit(QUARANTINED))
        .when(~F.col("consent"), F.lit(NON_CONSENTED))
        .when(F.col("_withdrawn"), F.lit(WITHDRAWN))
        .otherwise(F.lit(ACCEPTED))
    )
    return marked.withColumn("_outcome", outcome).drop("_withdrawn")


def _count_outcomes(parsed: DataFrame, result: SilverResult) -> None:
    """Bronze rows, quarantined by reason, non-consented and withdrawn, in one aggregation."""
    from pyspark.sql import functions as F

    counts = {
        (r["_outcome"], r["reason"]): r["n"]
        for r in parsed.groupBy("_outcome", "reason").agg(F.count("*").alias("n")).collect()
    }
    result.bronze_rows = sum(counts.values())
    result.quarantined_by_reason = {
        str(reason): int(n) for (outcome, reason), n in counts.items() if outcome == QUARANTINED
    }
    result.quarantined = sum(result.quarantined_by_reason.values())
    result.non_consented = int(counts.get((NON_CONSENTED, None), 0))
    result.consent_withdrawn = int(counts.get((WITHDRAWN, None), 0))


def _redact_late(
    spark: SparkSession, settings: Settings, parsed: DataFrame, interval: tables.Interval
) -> int:
    """Redact in bronze the dropped lines bronze still holds in full (see the module
    docstring); returns how many. Rare, so the lines are named by their hashes."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    late = (
        parsed.where(F.col("_outcome").isin(NON_CONSENTED, WITHDRAWN) & F.col("_redacted").isNull())
        .select(F.sha2("value", 256).alias("h"), "_outcome")
        .distinct()
        .collect()
    )
    if not late:
        return 0
    day = f"{interval.start:%Y-%m-%d}"
    bronze = DeltaTable.forPath(spark, tables.path(settings, "bronze_events"))
    line_hash = F.sha2(F.col("value"), 256)
    for outcome, reason in (
        (NON_CONSENTED, Redaction.NOT_CONSENTED),
        (WITHDRAWN, Redaction.CONSENT_WITHDRAWN),
    ):
        hashes = sorted({r["h"] for r in late if r["_outcome"] == outcome})
        if hashes:
            bronze.update(
                (F.col("_dt") == F.lit(day).cast("date"))
                & (F.col("_batch_id") == interval.batch_id)
                & F.col("_redacted").isNull()
                & line_hash.isin(hashes),
                {
                    "value": F.lit(None).cast("string"),
                    "_redacted": F.lit(str(reason)),
                    "_line_sha256": line_hash,
                },
            )
    return len(late)


def _write_quarantine(
    spark: SparkSession, settings: Settings, parsed: DataFrame, interval: tables.Interval
) -> None:
    """Replace this batch's quarantine rows (a retry rewrites them, never adds twice)."""
    day = f"{interval.start:%Y-%m-%d}"
    quarantine = tables.ensure_table(spark, settings, "quarantine")
    _quarantine(parsed, "events", interval.batch_id).write.format("delta").mode("overwrite").option(
        "replaceWhere",
        f"_dt = DATE'{day}' AND _batch_id = '{interval.batch_id}' AND source = 'events'",
    ).save(quarantine)


def _first_of_each_event(parsed: DataFrame) -> DataFrame:
    """Accepted, consented rows, one per event id (the earliest), in silver's columns."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    accepted = parsed.where(F.col("_outcome") == ACCEPTED)
    first = Window.partitionBy("event_id").orderBy("ts_ms", "_source_file", "value")
    ts = F.timestamp_millis("ts_ms")  # exact: no float division (1 µs early otherwise)
    return (
        accepted.withColumn("_n", F.row_number().over(first))
        .where("_n = 1")
        .select(
            "event_id",
            ts.alias("ts"),
            F.to_date(ts).alias("event_date"),
            "user_id",
            "item_id",
            "event_type",
            "session_id",
            "request_id",
            "position",
            "quantity",
            "price",
            "_batch_id",
            "_source_file",
            "_ingested_at",
            *ATTRIBUTION_FIELDS,
        )
    )


def _merge_new_events(
    spark: SparkSession, settings: Settings, candidates: DataFrame, n_candidates: int
) -> int:
    """Insert events silver does not hold yet; returns how many were inserted."""
    from delta.tables import DeltaTable

    location = tables.ensure_table(spark, settings, "events")
    before = tables.version(spark, settings, "events")
    if not n_candidates:
        return 0
    days = _days_to_match(spark, location, candidates)
    # Only the days that can hold a match are read by the MERGE (partition pruning).
    dates = ", ".join(f"DATE'{d}'" for d in days)
    on = f"t.event_date IN ({dates}) AND t.event_id = s.event_id"
    (
        DeltaTable.forPath(spark, location)
        .alias("t")
        .merge(candidates.alias("s"), on)
        .whenNotMatchedInsertAll()
        .execute()
    )
    return tables.operation_metrics(spark, location, before).get("numTargetRowsInserted", 0)


def _days_to_match(spark: SparkSession, location: str, candidates: DataFrame) -> list[str]:
    """Silver days the MERGE must read: the day of every candidate id silver already holds,
    wherever it lies, and the candidates' own days.

    A redelivered event may carry a ``ts`` moved by days (a client clock reset, a replay),
    so pruning to the batch's days (±1) would miss its original and insert it twice. The look-up
    is a semi-join of silver's ``event_id, event_date`` columns with the batch's ids
    (broadcast: a batch is small): Parquet reads those two columns only, so its cost is one
    scan of silver's ids (~20-40 bytes a row compressed, a few seconds per hundred million
    events), not of its rows; the MERGE that follows then reads only the days found.
    """
    from pyspark.sql import functions as F

    found = (
        spark.read.format("delta")
        .load(location)
        .select("event_id", "event_date")
        .join(F.broadcast(candidates.select("event_id")), "event_id", "left_semi")
        .select("event_date")
        .distinct()
        .collect()
    )
    # The candidates' own days too: a concurrent writer adding one of these ids there
    # then conflicts with this MERGE (Delta checks the partitions it read).
    own = candidates.select("event_date").distinct().collect()
    return sorted({str(r["event_date"]) for r in found + own})


def upsert_items(spark: SparkSession, settings: Settings) -> dict[str, int]:
    """Apply catalog lines added to bronze since the last upsert; newest update wins."""
    from delta.tables import DeltaTable
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    source = tables.ensure_table(spark, settings, "bronze_items")
    target = tables.ensure_table(spark, settings, "items")
    done = tables.applied_version(spark, settings, "items", "bronze_items")
    current = tables.version(spark, settings, "bronze_items")
    if current <= done:
        return {"applied": 0, "quarantined": 0, "bronze_items_version": current}
    new_files = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", done + 1)
        .option("endingVersion", current)
        .load(source)
        .where("_change_type = 'insert'")
        .select("_source_file", "_fingerprint")
        .distinct()
    )
    # The change feed says which files are new; their lines are read from the table itself,
    # because Delta's change-feed reader turns bytes that are not UTF-8 into U+FFFD (the
    # validator must see them as they are). load_catalog appends a (file, fingerprint) once.
    changes = (
        spark.read.format("delta")
        .option("versionAsOf", current)
        .load(source)
        .join(F.broadcast(new_files), ["_source_file", "_fingerprint"])
        .select(F.col("value").cast("binary").alias("value"), "_source_file", "_ingested_at")
    )
    limit = settings.max_line_bytes
    fn = _parser(lambda line: parse_item(line, limit), ITEM_FIELDS)
    parsed = changes.mapInPandas(fn, PARSED_ITEMS).persist()
    try:
        batch = f"items-{done + 1}-{current}"
        rejected = _quarantine(parsed, "items", batch)
        n_bad = rejected.count()
        # Keyed by the bronze versions applied, so a retried upsert replaces, not appends.
        rejected.write.format("delta").mode("overwrite").option(
            "replaceWhere", f"source = 'items' AND _batch_id = '{batch}'"
        ).save(tables.ensure_table(spark, settings, "quarantine"))
        newest = Window.partitionBy("item_id").orderBy(
            F.col("updated_at_ms").desc(), F.col("_source_file").desc()
        )
        items = (
            parsed.where(F.col("reason").isNull())
            .withColumn("_n", F.row_number().over(newest))
            .where("_n = 1")
            .select(
                # The catalog contract's fields in order; updated_at arrives as epoch ms.
                *(f for f in ITEM_CONTRACT if f != "updated_at"),
                F.timestamp_millis("updated_at_ms").alias("updated_at"),
                "_source_file",
                "_ingested_at",
            )
        )
        with tables.commit_marks(spark, bronze_items=current):
            (
                DeltaTable.forPath(spark, target)
                .alias("t")
                .merge(items.alias("s"), "t.item_id = s.item_id")
                .whenMatchedUpdateAll(condition="s.updated_at >= t.updated_at")
                .whenNotMatchedInsertAll()
                .execute()
            )
        return {"applied": items.count(), "quarantined": n_bad, "bronze_items_version": current}
    finally:
        parsed.unpersist()
