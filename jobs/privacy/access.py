"""The data access log as a Delta table: load the JSON lines, query by subject and time.

Reads: the access log files ``<privacy_dir>/access_log/dt=*/*.jsonl`` written by
:mod:`jobs.access_log` (the online service, the CLI). Writes: ``privacy/data_access``.

The loading itself (complete lines only, offsets remembered in the table, a MERGE on the
line's place so a re-run adds nothing twice, bad lines counted and skipped) is
:func:`jobs.linelog_load.load_lines`, shared with the answer log.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.access_log import FIELDS, access_log_dir
from jobs.config import Settings
from jobs.linelog_load import complete_lines, load_lines, loaded_offsets

__all__ = ["complete_lines", "load_access_log", "loaded_offsets", "parse_line", "read_access_log"]

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TABLE = "data_access"
REQUIRED = ("ts", "actor", "action", "subject", "outcome")


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One access record from one line, or None when it is not one."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) - set(FIELDS):
        return None
    if not all(isinstance(data.get(f), str) and data[f] for f in REQUIRED):
        return None
    if data.get("request_id") is not None and not isinstance(data["request_id"], str):
        return None
    try:
        ts = datetime.fromisoformat(data["ts"])
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    return {**data, "ts": ts.astimezone(UTC), "request_id": data.get("request_id")}


def _rows(line: bytes) -> list[dict[str, Any]] | None:
    record = parse_line(line)
    return None if record is None else [record]


def load_access_log(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Append the access log's new complete lines to ``data_access``; returns counts."""
    import pyarrow as pa

    fields = pa.schema(
        [
            ("ts", pa.timestamp("us", tz="UTC")),
            ("actor", pa.string()),
            ("action", pa.string()),
            ("subject", pa.string()),
            ("outcome", pa.string()),
            ("request_id", pa.string()),
        ]
    )
    # offsets= looked up here, at call time: a test replays a load by replacing it.
    return load_lines(
        spark, settings, TABLE, access_log_dir(settings), _rows, fields, offsets=loaded_offsets
    )


def read_access_log(
    spark: SparkSession,
    settings: Settings,
    subject: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Rows of ``data_access``, newest first, for one subject and/or from an instant on."""
    from pyspark.sql import functions as F

    df = tables.read_or_create(spark, settings, TABLE)
    if subject is not None:
        df = df.where(F.col("subject") == subject)
    if since is not None:
        since = since.astimezone(UTC)
        df = df.where((F.col("dt") >= F.lit(since.date())) & (F.col("ts") >= F.lit(since)))
    rows = df.select(*FIELDS).orderBy(F.col("ts").desc()).limit(limit).collect()
    return [row.asDict() for row in rows]
