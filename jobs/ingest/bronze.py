"""Bronze: landing files of one data interval, raw and append-only, with lineage.

Reads: ``<landing>/events/dt=…/hr=…/*.jsonl`` for the hours of the interval,
``<landing>/catalog/dt=…/*.jsonl`` and ``privacy/consent``. Writes:
``bronze/bronze_events`` (one row a line, the line untouched unless it must not be kept,
see below) and ``bronze/bronze_items``.

Lines that must not be kept. A line whose event did not get consent is stored without
its content: ``value`` NULL, ``_redacted`` the reason (:class:`jobs.contracts.Redaction`)
and ``_line_sha256`` the SHA-256 of the line's bytes (proof of what was received and
dropped, and enough to find the same line again; an event id makes a line unguessable, so
the hash does not reveal it). The rules, decided here on the raw text with Spark's JSON
functions (no Python, one pass):

- ``"consent": false`` or ``"false"`` (any case) → ``not_consented``;
- any other consent value but ``true`` or ``null`` (``0``, ``"no"``, ``{}``, even
  ``"True"``) → ``consent_unclear``: the line is not a clear yes, and the validator would
  only have quarantined it with its content. The string ``"true"`` is kept (the validator
  quarantines it as ``wrong_type``: a yes, so its content may be shown);
- a line that is not valid JSON (truncated, a stray byte-order mark) or names ``consent``
  twice, and that textually holds ``"consent": <anything but true or null>`` →
  ``consent_unclear``: a broken line is never kept when it may carry a refusal;
- the user withdrew consent (``privacy/consent``, by subject hash) and the event's ``ts``
  is before their re-grant, or unreadable → ``consent_withdrawn``.

These win over validation: a line with ``"consent": false`` and a bad timestamp is a
non-consented line, not a quarantined one. Silver counts redacted lines without parsing
them, so the audit still balances. The landing file itself still holds the line until
landing retention removes it (a separate setting): bronze is the copy kept for ever, and
the one this rule protects.

Lines are split by Spark's text reader: at LF, CRLF or a bare CR, with a UTF-8
byte-order mark at the start of a file skipped. The bytes of a line are kept as they are,
even when they are not UTF-8 (Delta stores them; the validator quarantines such a line as
``bad_encoding``). Empty lines are rows too, so bronze and the fingerprint's count agree.

A batch is the interval; its fingerprint hashes the names and bytes of its files. Loading
the same interval again replaces exactly that batch's rows (``replaceWhere``) or, when the
fingerprint is unchanged, writes nothing at all, so bronze never holds a line twice.

Late files. A file may land in an hour folder after that hour's run finished. Each run
therefore re-scans the landing folders of the intervals the audit recorded in the last
``late_data_hours`` (:func:`jobs.ingest.steps.late_step`): an interval whose folders now
hold a file name that bronze does not know for its batch is loaded again as a whole (its
fingerprint changed), refined and audited like any batch. Silver's MERGE on ``event_id``
inserts only the late events (the others count as already in silver), so they reach silver
and gold exactly once. The re-scan lists folders only (no bytes are read unless a name is
new); a file rewritten in place under the same name is not noticed this way (landing files
are written once), only by rerunning its interval. Files later than ``late_data_hours``
wait for such a rerun.

Expired landing. Landing folders are kept for a while only. When a file that bronze holds
for a batch is no longer in landing, a rerun of the interval keeps the batch's bronze rows
(and so the quarantine rows silver derives from them) instead of replacing them with what
is left: the result says ``landing_expired`` and carries the loaded fingerprint and row
count, so the batch still balances and an interval already done is still skipped. Only
``force`` replaces the batch with what landing holds now (possibly nothing).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from jobs import tables
from jobs.config import Settings
from jobs.contracts import Redaction, hour_partition

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


UTF8_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass
class LandingBatch:
    """The files of one interval and what they hold."""

    files: list[Path]
    fingerprint: str
    lines: int


@dataclass
class BronzeResult:
    batch_id: str
    fingerprint: str
    read_lines: int
    bronze_rows: int
    files: int
    changed: bool
    landing_expired: bool = False  # bronze kept: files it loaded are gone from landing


def interval_files(settings: Settings, interval: tables.Interval) -> list[Path]:
    """Landing event files whose hour folder falls inside the interval."""
    files: list[Path] = []
    hour = interval.start.replace(minute=0, second=0, microsecond=0)
    while hour < interval.end:
        folder = settings.events_dir / hour_partition(hour)
        if folder.is_dir():
            files.extend(sorted(folder.glob("*.jsonl")))
        hour += timedelta(hours=1)
    return files


def count_lines(data: bytes) -> int:
    """Lines of a file as Spark's text reader (Hadoop's LineRecordReader) splits them.

    A line ends at LF, CRLF or a bare CR; a last line without an ending still counts; a
    UTF-8 byte-order mark at the start of the file is skipped, not a line of its own. Empty
    and whitespace-only lines are lines (the validator quarantines them as empty_line).
    """
    data = data.removeprefix(UTF8_BOM)
    endings = len(_LINE_END.findall(data))
    return endings + (0 if not data or data.endswith((b"\n", b"\r")) else 1)


def fingerprint(files: list[Path], root: Path) -> LandingBatch:
    """Hash of names and contents, and the number of lines Spark's text reader will see."""
    digest = hashlib.sha256()
    lines = 0
    for file in files:
        data = file.read_bytes()
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(data).digest())
        lines += count_lines(data)
    return LandingBatch(files, digest.hexdigest(), lines)


@dataclass
class LoadedBatch:
    """What bronze holds for one batch: its fingerprint, rows and source files."""

    fingerprint: str | None
    rows: int
    files: set[str]


def source_path(uri: str) -> str:
    """A ``_source_file`` URI (``file:///…``, escaped) as a local path."""
    return unquote(urlparse(uri).path)


def loaded_batch(spark: SparkSession, location: str, batch_id: str, day: str) -> LoadedBatch:
    """Bronze's rows of one batch, summed per file (one small aggregation)."""
    from pyspark.sql import functions as F

    rows = (
        spark.read.format("delta")
        .load(location)
        .where((F.col("_dt") == F.lit(day).cast("date")) & (F.col("_batch_id") == batch_id))
        .groupBy("_fingerprint", "_source_file")
        .count()
        .collect()
    )
    return LoadedBatch(
        rows[0]["_fingerprint"] if rows else None,
        sum(int(r["count"]) for r in rows),
        {source_path(r["_source_file"]) for r in rows if r["_source_file"]},
    )


def load_events(
    spark: SparkSession, settings: Settings, interval: tables.Interval, force: bool = False
) -> BronzeResult:
    """Append the interval's landing lines to bronze, replacing an earlier load of it.

    Unless ``force``, an unchanged batch is not written again, and a batch whose loaded
    files have left landing is kept as it is (``landing_expired``).
    """
    from pyspark.sql import functions as F

    location = tables.ensure_table(spark, settings, "bronze_events")
    assert settings.landing_dir is not None
    batch = fingerprint(interval_files(settings, interval), settings.landing_dir)
    day = f"{interval.start:%Y-%m-%d}"
    loaded = loaded_batch(spark, location, interval.batch_id, day)
    if loaded.fingerprint == batch.fingerprint and not force:
        return BronzeResult(
            interval.batch_id,
            batch.fingerprint,
            batch.lines,
            batch.lines,
            len(batch.files),
            changed=False,
        )
    present = {str(f.absolute()) for f in batch.files}
    if loaded.fingerprint is not None and not loaded.files <= present and not force:
        # Rows bronze loaded from files landing no longer has: replacing the batch would
        # lose them for good. Report what bronze holds; the lines were read when loaded.
        return BronzeResult(
            interval.batch_id,
            loaded.fingerprint,
            loaded.rows,
            loaded.rows,
            len(loaded.files),
            changed=False,
            landing_expired=True,
        )

    where = f"_dt = DATE'{day}' AND _batch_id = '{interval.batch_id}'"
    if batch.files:
        raw = spark.read.text([str(f) for f in batch.files]).select(
            F.col("value"),
            F.col("_metadata.file_path").alias("_source_file"),
        )
    else:
        raw = spark.createDataFrame([], "value STRING, _source_file STRING")
    now = datetime.now(UTC).replace(tzinfo=None)
    redacted = redact(spark, settings, raw)
    rows = redacted.select(
        F.when(F.col("_redacted").isNull(), F.col("value")).alias("value"),
        "_source_file",
        F.lit(interval.batch_id).alias("_batch_id"),
        F.lit(batch.fingerprint).alias("_fingerprint"),
        F.lit(interval.start.replace(tzinfo=None)).cast("timestamp").alias("_interval_start"),
        F.lit(interval.end.replace(tzinfo=None)).cast("timestamp").alias("_interval_end"),
        F.lit(now).cast("timestamp").alias("_ingested_at"),
        F.lit(day).cast("date").alias("_dt"),
        "_redacted",
        F.when(F.col("_redacted").isNotNull(), F.sha2(F.col("value"), 256)).alias("_line_sha256"),
    )
    before = tables.version(spark, settings, "bronze_events")
    rows.write.format("delta").mode("overwrite").option("replaceWhere", where).save(location)
    written = tables.operation_metrics(spark, location, before).get("numOutputRows", 0)
    return BronzeResult(
        interval.batch_id, batch.fingerprint, batch.lines, written, len(batch.files), changed=True
    )


# "consent": followed by anything but true or null (a refusal or an unclear value). The
# blanks are matched possessively: backtracking would let `\s*` stop before " null".
_CONSENT_NOT_YES = r'"consent"\s*+:\s*+(?!true\b|null\b)'
_KEY = '"consent"'
# Epoch milliseconds up to 15 digits: the range of Spark's TIMESTAMP (years 1-9999).
_EPOCH_MS = r"^[0-9]{1,15}$"


def event_ts(value: Column) -> Column:
    """The ``ts`` of a raw line as a TIMESTAMP (NULL when unreadable): ISO-8601 or epoch
    milliseconds, as the validator reads it, for the withdrawal rule only."""
    from pyspark.sql import functions as F

    raw = F.trim(F.get_json_object(value, "$.ts"))
    return F.when(raw.rlike(_EPOCH_MS), F.timestamp_millis(raw.cast("bigint"))).otherwise(
        F.try_to_timestamp(raw)
    )


def redaction_reason(column: str = "value") -> Column:
    """Why a raw line must not be kept (a :class:`Redaction` value), NULL when it may be.

    The consent rules of the module docstring; the withdrawal rule is added by
    :func:`redact`. ``get_json_object`` stops at the first ``consent`` key, so a line that
    names it twice gets the textual check as well.
    """
    from pyspark.sql import functions as F

    value = F.col(column)
    consent = F.get_json_object(value, "$.consent")
    first = F.instr(value, _KEY)
    again = F.expr(f"locate('{_KEY}', `{column}`, instr(`{column}`, '{_KEY}') + 1)")
    return (
        F.when(F.lower(F.trim(consent)) == "false", F.lit(str(Redaction.NOT_CONSENTED)))
        .when(consent.isNotNull() & (consent != "true"), F.lit(str(Redaction.CONSENT_UNCLEAR)))
        .when(
            (first > 0) & (consent.isNull() | (again > 0)) & value.rlike(_CONSENT_NOT_YES),
            F.lit(str(Redaction.CONSENT_UNCLEAR)),
        )
    )


def redact(spark: SparkSession, settings: Settings, raw: DataFrame) -> DataFrame:
    """``raw`` (a ``value`` column) plus ``_redacted``: the reason its line is not kept."""
    from pyspark.sql import functions as F

    from jobs.privacy.consent import with_withdrawn, withdrawn_state

    reason = redaction_reason("value")
    state = withdrawn_state(spark, settings)
    if state is None:  # nobody ever withdrew: no subject hashes needed
        return raw.withColumn("_redacted", reason)
    user_id = F.trim(F.get_json_object(F.col("value"), "$.user_id"))
    marked = with_withdrawn(raw, settings, state, user_id, event_ts(F.col("value")))
    withdrawn = F.when(F.col("_withdrawn"), F.lit(str(Redaction.CONSENT_WITHDRAWN)))
    return marked.withColumn("_redacted", F.coalesce(reason, withdrawn)).drop("_withdrawn")


def load_catalog(spark: SparkSession, settings: Settings) -> list[str]:
    """Bring catalog files not loaded before (by content) into bronze; return their paths."""
    from pyspark.sql import functions as F

    location = tables.ensure_table(spark, settings, "bronze_items")
    assert settings.landing_dir is not None
    known = {
        (source_path(r["_source_file"]), r["_fingerprint"])
        for r in spark.read.format("delta")
        .load(location)
        .select("_source_file", "_fingerprint")
        .distinct()
        .collect()
    }
    new: list[tuple[str, str]] = []
    for file in sorted(settings.catalog_dir.glob("dt=*/*.jsonl")):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if (str(file.absolute()), digest) not in known:
            new.append((str(file.absolute()), digest))
    if not new:
        return []
    now = datetime.now(UTC).replace(tzinfo=None)
    frames = [
        spark.read.text(p).select(
            "value",
            F.col("_metadata.file_path").alias("_source_file"),
            F.lit(f"catalog-{Path(p).parent.name}").alias("_batch_id"),
            F.lit(d).alias("_fingerprint"),
            F.lit(now).cast("timestamp").alias("_ingested_at"),
        )
        for p, d in new
    ]
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame)
    rows.write.format("delta").mode("append").save(location)
    return [p for p, _ in new]
