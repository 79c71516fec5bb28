"""The Delta lake's tables: names, schemas, creation, versions and commit bookkeeping.

Every table lives at ``settings.table_path(layer, name)``. Tables are created on first
use with their schema, partitioning and properties, so jobs never depend on who ran
first. Incremental consumers remember which version of their source they have applied in
the ``userMetadata`` of their own commits: the progress marker and the data change land in
one atomic Delta commit, so a retried task neither loses nor double-counts a batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobs.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


@dataclass(frozen=True)
class Table:
    """One Delta table: where it lives, its schema, partitioning and properties."""

    name: str
    layer: str  # bronze | silver | gold | audit | privacy | monitor: folder under the lake root
    ddl: str  # Spark DDL of the columns, in order
    partitions: tuple[str, ...] = ()
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def columns(self) -> list[str]:
        """Column names in schema order."""
        return ddl_columns(self.ddl)


def ddl_columns(ddl: str) -> list[str]:
    """Column names of a DDL string, without Spark (commas inside ``<…>`` are skipped)."""
    return [name for name, _ in ddl_fields(ddl)]


def ddl_fields(ddl: str) -> list[tuple[str, str]]:
    """(name, upper-case type) of each column of a DDL string, without Spark."""
    fields, depth, start = [], 0, 0
    for pos, char in enumerate(ddl + ","):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "," and depth == 0:
            name, kind = ddl[start:pos].split(maxsplit=1)
            fields.append((name, kind.split(" NOT NULL")[0].strip().upper()))
            start = pos + 1
    return fields


_CDF = (("delta.enableChangeDataFeed", "true"),)
# Tables whose commits carry marks (the source version they applied, in userMetadata) keep
# their commit files: Delta deletes log files older than 30 days at checkpoints, and a
# table that got only unmarked commits (OPTIMIZE, VACUUM) for that long would otherwise
# lose its mark and refuse to update (MissingMarkError). Log files hold no row data.
_MARKED = (("delta.logRetentionDuration", "interval 3650 days"),)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "bronze_events",
            "bronze",
            "value STRING, _source_file STRING, _batch_id STRING, _fingerprint STRING, "
            "_interval_start TIMESTAMP, _interval_end TIMESTAMP, _ingested_at TIMESTAMP, _dt DATE, "
            # A line whose content must not be kept (jobs.ingest.bronze): value NULL, why,
            # and the SHA-256 of the line's bytes. Added columns: older tables gain them.
            "_redacted STRING, _line_sha256 STRING",
            ("_dt",),
            (),
        ),
        Table(
            "bronze_items",
            "bronze",
            "value STRING, _source_file STRING, _batch_id STRING, _fingerprint STRING, "
            "_ingested_at TIMESTAMP",
            (),
            _CDF,
        ),
        Table(
            "events",
            "silver",
            "event_id STRING NOT NULL, ts TIMESTAMP NOT NULL, event_date DATE NOT NULL, "
            "user_id STRING NOT NULL, item_id STRING NOT NULL, event_type STRING NOT NULL, "
            "session_id STRING, request_id STRING, position INT, quantity INT, price DOUBLE, "
            "_batch_id STRING, _source_file STRING, _ingested_at TIMESTAMP, "
            # Attribution (jobs.contracts.ATTRIBUTION_FIELDS), added by issue 15: at the end,
            # where ensure_table adds them to an older table.
            "rec_source STRING, publish_id STRING, model_version STRING",
            ("event_date",),
            _CDF,
        ),
        Table(
            "items",
            "silver",
            "item_id STRING NOT NULL, title STRING, category STRING, brand STRING, price DOUBLE, "
            "in_stock BOOLEAN, description STRING, updated_at TIMESTAMP NOT NULL, "
            "_source_file STRING, _ingested_at TIMESTAMP",
            (),
            _CDF + _MARKED,
        ),
        Table(
            "quarantine",
            "silver",
            "source STRING, value STRING, reason STRING, detail STRING, _source_file STRING, "
            "_batch_id STRING, _ingested_at TIMESTAMP, _dt DATE",
            ("_dt",),
            (),
        ),
        Table(
            "interactions",
            "gold",
            "user_id STRING NOT NULL, item_id STRING NOT NULL, weight DOUBLE NOT NULL, "
            "n_events BIGINT NOT NULL, last_ts TIMESTAMP",
            (),
            _MARKED,
        ),
        Table(
            "item_daily",
            "gold",
            "item_id STRING NOT NULL, event_date DATE NOT NULL, impressions BIGINT, views BIGINT, "
            "clicks BIGINT, add_to_carts BIGINT, purchases BIGINT, revenue DOUBLE, weight DOUBLE",
            (),
            _MARKED,
        ),
        Table(
            "item_stats",
            "gold",
            "item_id STRING NOT NULL, impressions BIGINT, clicks BIGINT, ctr DOUBLE, "
            "purchases BIGINT, revenue DOUBLE, weight_1d DOUBLE, weight_7d DOUBLE, "
            "weight_30d DOUBLE, purchases_7d BIGINT, as_of TIMESTAMP",
            (),
            (),
        ),
        Table(
            # One content vector per catalog item (jobs.content.embeddings): re-embedded
            # only when its text or the embedding model changes (content_hash says which).
            "item_content",
            "gold",
            "item_id STRING NOT NULL, content_hash STRING NOT NULL, model STRING NOT NULL, "
            "has_text BOOLEAN NOT NULL, embedding ARRAY<FLOAT> NOT NULL, "
            "embedded_at TIMESTAMP NOT NULL",
            (),
            (),
        ),
        Table(
            "user_stats",
            "gold",
            "user_id STRING NOT NULL, n_events BIGINT, impressions BIGINT, clicks BIGINT, "
            "add_to_carts BIGINT, purchases BIGINT, revenue DOUBLE, first_ts TIMESTAMP, "
            "last_ts TIMESTAMP",
            (),
            _MARKED,
        ),
        Table(
            "ingest_audit",
            "audit",
            "run_id STRING, batch_id STRING, interval_start TIMESTAMP, interval_end TIMESTAMP, "
            "fingerprint STRING, status STRING, read_lines BIGINT, bronze_rows BIGINT, "
            "quarantined BIGINT, quarantined_by_reason MAP<STRING, BIGINT>, non_consented BIGINT, "
            "duplicates_in_batch BIGINT, duplicates_existing BIGINT, silver_inserted BIGINT, "
            "balanced BOOLEAN, silver_version BIGINT, gold_versions MAP<STRING, BIGINT>, "
            "quality MAP<STRING, BOOLEAN>, started_at TIMESTAMP, finished_at TIMESTAMP, "
            "consent_withdrawn BIGINT",
            (),
            (),
        ),
        Table(
            "erasure_requests",
            "privacy",
            # user_id is held only while the request is pending: the run that completes it
            # nulls it (and VACUUM purges the old files), leaving the subject hash.
            "request_id STRING NOT NULL, subject STRING NOT NULL, user_id STRING, "
            "source STRING NOT NULL, requested_at TIMESTAMP NOT NULL, status STRING NOT NULL, "
            "run_id STRING, processed_at TIMESTAMP, detail STRING",
            (),
            (),
        ),
        Table(
            "erasure_log",
            "privacy",
            "run_id STRING NOT NULL, subject STRING NOT NULL, store STRING NOT NULL, "
            "location STRING, removed BIGINT, detail STRING, logged_at TIMESTAMP NOT NULL",
            (),
            (),
        ),
        Table(
            "data_access",
            "privacy",
            # One row per read of a person's data (jobs.access_log), by subject hash only.
            # (_source_file, _offset) is the line's place in the access log files: the
            # loader's key, so a re-run adds nothing (jobs.privacy.access).
            "ts TIMESTAMP NOT NULL, actor STRING NOT NULL, action STRING NOT NULL, "
            "subject STRING NOT NULL, outcome STRING NOT NULL, request_id STRING, "
            "dt DATE NOT NULL, _source_file STRING NOT NULL, _offset BIGINT NOT NULL, "
            "_end BIGINT NOT NULL, _loaded_at TIMESTAMP NOT NULL",
            ("dt",),
            (),
        ),
        Table(
            "consent",
            "privacy",
            # Append-only history of consent changes, by subject hash (never the user id):
            # status withdrawn | granted, changed_at when it took effect (jobs.privacy.consent).
            "subject STRING NOT NULL, status STRING NOT NULL, changed_at TIMESTAMP NOT NULL, "
            "source STRING NOT NULL, recorded_at TIMESTAMP NOT NULL",
            (),
            (),
        ),
        Table(
            "drift",
            "monitor",
            # One row per metric x statistic of a drift run (jobs.monitor.monitor); a rerun
            # of a run_id replaces its rows. statistic psi | ks | share, level ok | warn |
            # alert; the training trigger reads the alert rows.
            "run_id STRING NOT NULL, computed_at TIMESTAMP NOT NULL, window_start TIMESTAMP, "
            "window_end TIMESTAMP, metric STRING NOT NULL, statistic STRING NOT NULL, "
            "value DOUBLE, p_value DOUBLE, warn_at DOUBLE, alert_at DOUBLE, "
            "level STRING NOT NULL, n_reference BIGINT, n_current BIGINT, model_version STRING",
            (),
            (),
        ),
        # -- monitoring (issue 15): attribution, the answer log, the control group's lift --
        Table(
            "rec_performance",
            "monitor",
            # Per day x model version x source x position bucket (jobs.monitor.attribution);
            # rec_source 'organic' is the baseline. Days are replaced whole on each run.
            "day DATE NOT NULL, model_version STRING, rec_source STRING NOT NULL, "
            "position_bucket STRING NOT NULL, impressions BIGINT NOT NULL, "
            "clicks BIGINT NOT NULL, add_to_carts BIGINT NOT NULL, purchases BIGINT NOT NULL, "
            "revenue DOUBLE NOT NULL, ctr DOUBLE, conversion DOUBLE, computed_at TIMESTAMP, "
            # treatment | control (the user's keyed bucket); NULL on rows from before it.
            "ab_group STRING",
            ("day",),
            (),
        ),
        Table(
            "rec_answers",
            "monitor",
            # One row per answered item of /recommend (jobs.monitor.answers), the user by
            # subject hash only (ab_group: the answer's "group", a reserved word in SQL);
            # (_source_file, _offset, rank) is the loader's key.
            "ts TIMESTAMP NOT NULL, dt DATE NOT NULL, request_id STRING NOT NULL, "
            "subject STRING NOT NULL, model_version STRING, source STRING NOT NULL, "
            "ab_group STRING NOT NULL, item_id STRING NOT NULL, rank INT NOT NULL, "
            "_source_file STRING NOT NULL, _offset BIGINT NOT NULL, _end BIGINT NOT NULL, "
            "_loaded_at TIMESTAMP NOT NULL",
            ("dt",),
            (),
        ),
        Table(
            "lift",
            "monitor",
            # Treatment vs control per day and metric (jobs.monitor.lift), 95 % intervals.
            "day DATE NOT NULL, metric STRING NOT NULL, treatment DOUBLE, control DOUBLE, "
            "n_treatment BIGINT NOT NULL, n_control BIGINT NOT NULL, difference DOUBLE, "
            "ci_low DOUBLE, ci_high DOUBLE, relative_lift DOUBLE, method STRING NOT NULL, "
            "computed_at TIMESTAMP",
            ("day",),
            (),
        ),
    )
}


@dataclass(frozen=True)
class Interval:
    """One data interval [start, end) as Airflow hands it to a run; names the batch."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("interval bounds need a time zone")
        if self.end <= self.start:
            raise ValueError(f"empty interval {self.start} .. {self.end}")
        # Landing is partitioned by UTC hour: an interval that starts or ends inside an
        # hour would read that hour's files in two batches (quarantine counted twice).
        for bound in (self.start, self.end):
            if bound.astimezone(UTC).replace(minute=0, second=0, microsecond=0) != bound:
                raise ValueError(
                    f"interval bound {bound.isoformat()} is not on a whole UTC hour; landing "
                    "is partitioned by hour, so ingest intervals (and RECFLOW_INGEST_SCHEDULE) "
                    "must start and end on whole hours"
                )

    @classmethod
    def parse(cls, start: str | datetime, end: str | datetime) -> Interval:
        def as_dt(v: str | datetime) -> datetime:
            d = datetime.fromisoformat(v) if isinstance(v, str) else v
            return d.astimezone(UTC)

        return cls(as_dt(start), as_dt(end))

    @property
    def batch_id(self) -> str:
        return f"{self.start:%Y%m%dT%H%M}-{self.end:%Y%m%dT%H%M}"


def sync_properties(spark: SparkSession, settings: Settings, name: str) -> dict[str, str]:
    """Set the table's declared properties that an existing table lacks (or has changed).

    New tables get them at creation; this brings tables created by an older recflow up to
    date (run by maintenance). Returns what was set.
    """
    from delta.tables import DeltaTable

    location = path(settings, name)
    current = DeltaTable.forPath(spark, location).detail().first()["properties"] or {}
    missing = {k: v for k, v in TABLES[name].properties if current.get(k) != v}
    if missing:
        pairs = ", ".join(f"'{k}' = '{v}'" for k, v in missing.items())
        spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ({pairs})")
    return missing


def path(settings: Settings, name: str) -> str:
    return settings.table_path(TABLES[name].layer, name)


# Tables this process has brought up to their declared columns (location, ddl): the
# schema is compared once per process, not at every call.
_EVOLVED: set[tuple[str, str]] = set()


def ensure_table(spark: SparkSession, settings: Settings, name: str) -> str:
    """Create the table if missing, or add the declared columns an older one lacks; return
    its path."""
    from delta.tables import DeltaTable
    from pyspark.sql.types import StructType

    table = TABLES[name]
    location = path(settings, name)
    if not DeltaTable.isDeltaTable(spark, location):
        builder = DeltaTable.createIfNotExists(spark).location(location)
        builder = builder.addColumns(StructType.fromDDL(table.ddl))
        if table.partitions:
            builder = builder.partitionedBy(*table.partitions)
        for key, value in table.properties:
            builder = builder.property(key, value)
        builder.execute()
    elif (location, table.ddl) not in _EVOLVED:
        add_missing_columns(spark, location, table)
    _EVOLVED.add((location, table.ddl))
    return location


def add_missing_columns(spark: SparkSession, location: str, table: Table) -> list[str]:
    """ALTER TABLE ADD COLUMNS for declared columns the table at ``location`` lacks.

    Columns are only ever added (nullable, at the end: old rows read NULL), never dropped
    or retyped, so a table written by an older recflow keeps every row. Returns the added
    names.
    """
    from delta.tables import DeltaTable

    present = {f.name for f in DeltaTable.forPath(spark, location).toDF().schema.fields}
    missing = [(n, k) for n, k in ddl_fields(table.ddl) if n not in present]
    if not missing:
        return []
    required = [n for n, _ in missing if _not_null(table.ddl, n)]
    if required:
        raise RuntimeError(
            f"table {table.name!r} at {location} lacks NOT NULL columns {required}: "
            "they cannot be added to existing rows; migrate it by hand"
        )
    columns = ", ".join(f"{n} {k}" for n, k in missing)
    spark.sql(f"ALTER TABLE delta.`{location}` ADD COLUMNS ({columns})")
    return [n for n, _ in missing]


def _not_null(ddl: str, column: str) -> bool:
    for part in ddl.split(","):
        words = part.split()
        if words and words[0] == column:
            return "NOT NULL" in part.upper()
    return False


def read_or_create(spark: SparkSession, settings: Settings, name: str) -> DataFrame:
    """The table's current contents; an empty table is created first if it is missing."""
    return spark.read.format("delta").load(ensure_table(spark, settings, name))


def version(spark: SparkSession, settings: Settings, name: str) -> int:
    """Current Delta version of a table (creating it if missing)."""
    from delta.tables import DeltaTable

    location = ensure_table(spark, settings, name)
    return int(DeltaTable.forPath(spark, location).history(1).first()["version"])


class MissingMarkError(RuntimeError):
    """A table holds data but none of its commits says which source version it applied."""


def applied_mark(
    spark: SparkSession, settings: Settings, name: str, source: str
) -> dict[str, Any] | None:
    """The marks of table ``name``'s newest commit that stamped ``source`` (None if none).

    The whole history is searched (only the ``userMetadata`` column is kept): OPTIMIZE,
    DELETE or property changes commit without marks and may push the last mark back by any
    number of commits. History is the Delta log, so this stays cheap for thousands of
    commits.
    """
    from delta.tables import DeltaTable

    location = ensure_table(spark, settings, name)
    rows = (
        DeltaTable.forPath(spark, location)
        .history()
        .where("userMetadata IS NOT NULL")
        .select("version", "userMetadata")
        .orderBy("version", ascending=False)
        .collect()
    )
    for row in rows:
        try:
            marks = json.loads(row["userMetadata"])
        except ValueError:
            continue
        if isinstance(marks, dict) and source in marks:
            return marks
    return None


def applied_version(spark: SparkSession, settings: Settings, name: str, source: str) -> int:
    """Version of ``source`` that table ``name`` has applied (-1 if it holds nothing yet).

    Never guesses: a table that holds rows but carries no mark anywhere in its history
    (written by hand, or its log cleaned up past the last mark) raises
    :class:`MissingMarkError` instead of replaying the source from the start, which would
    count everything twice. Rebuild such a table (``recflow rebuild-gold`` for gold).
    """
    marks = applied_mark(spark, settings, name, source)
    if marks is not None:
        return int(marks[source])
    if read_or_create(spark, settings, name).limit(1).count() == 0:
        return -1
    raise MissingMarkError(
        f"table {name!r} holds rows but no commit in its history records the {source!r} "
        f"version it applied; replaying {source!r} from the start would count rows twice. "
        "Rebuild it (for gold: `recflow rebuild-gold`)."
    )


@contextmanager
def commit_marks(spark: SparkSession, **marks: Any) -> Iterator[None]:
    """Stamp the Delta commits made inside the block with ``marks`` (JSON userMetadata)."""
    spark.conf.set(USER_METADATA_CONF, json.dumps(marks, sort_keys=True))
    try:
        yield
    finally:
        spark.conf.unset(USER_METADATA_CONF)


def operation_metrics(spark: SparkSession, location: str, after: int) -> dict[str, int]:
    """Metrics of a table's latest commit if it is newer than version ``after``.

    A MERGE that changes nothing commits nothing, so the latest commit may be an older
    operation's: its metrics must not be taken for this one's.
    """
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, location).history(1).first()
    if row is None or int(row["version"]) <= after:
        return {}
    metrics = row["operationMetrics"] or {}
    return {k: int(v) for k, v in metrics.items() if v.isascii() and v.isdigit()}


def content_hash(df: DataFrame, exclude: tuple[str, ...] = ()) -> str:
    """Order-independent hash of a frame's rows (for idempotency checks)."""
    from pyspark.sql import functions as F

    cols = sorted(c for c in df.columns if c not in exclude)
    row_hash = F.xxhash64(*[F.coalesce(F.col(c).cast("string"), F.lit("\u0000")) for c in cols])
    agg = (
        df.select(row_hash.alias("h"))
        .agg(
            F.count("*").alias("n"),
            F.sum(F.col("h") % 1_000_000_007).alias("s"),
            F.sum((F.col("h") % 999_999_937) * (F.col("h") % 1_000_003)).alias("q"),
        )
        .first()
    )
    return f"{agg['n']}:{agg['s']}:{agg['q']}"
