"""The data access log as a Delta table: load the JSON lines, query by subject and time.

Reads: the access log files ``<privacy_dir>/access_log/dt=*/*.jsonl`` written by
:mod:`jobs.access_log` (the online service, the CLI). Writes: ``privacy/data_access``.

Each row keeps where its line sits (``_source_file``, ``_offset``, ``_end`` in bytes), so a
load reads each file only from the end of what the table already holds, and inserts with a
MERGE on (file, offset): a re-run, or two loads at once, add nothing twice. Only complete
lines (ending in a newline) are loaded; the half-written last line of a file that a
process is still appending to stays for the next load. A complete line that is not a
valid record is counted (``bad_lines``) and skipped, never guessed at.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.access_log import FIELDS, access_log_dir
from jobs.config import Settings

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


def complete_lines(path: Path, start: int) -> tuple[list[tuple[int, int, bytes]], int]:
    """(offset, end, line) of every complete line from byte ``start``; and where they end."""
    with path.open("rb") as f:
        f.seek(start)
        data = f.read()
    cut = data.rfind(b"\n") + 1  # 0 when there is no complete line yet
    out, pos = [], 0
    for raw in data[:cut].splitlines(keepends=True):
        out.append((start + pos, start + pos + len(raw), raw.rstrip(b"\n")))
        pos += len(raw)
    return out, start + cut


def _day_of(folder: str) -> date | None:
    try:
        return date.fromisoformat(folder.removeprefix("dt="))
    except ValueError:
        return None


def loaded_offsets(spark: SparkSession, location: str, days: list[date]) -> dict[str, int]:
    """Per access log file (path under the log folder), the byte offset loaded up to."""
    from pyspark.sql import functions as F

    return {
        row["_source_file"]: int(row["end"])
        for row in spark.read.format("delta")
        .load(location)
        .where(F.col("dt").isin(days))  # partition pruning: only the days still on disk
        .groupBy("_source_file")
        .agg(F.max("_end").alias("end"))
        .collect()
    }


def load_access_log(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Append the access log's new complete lines to ``data_access``; returns counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from delta.tables import DeltaTable

    root = access_log_dir(settings)
    location = tables.ensure_table(spark, settings, TABLE)
    files = {
        p: day
        for p in sorted(root.glob("dt=*/*.jsonl"))
        if (day := _day_of(p.parent.name)) is not None
    }
    result: dict[str, Any] = {"files": len(files), "new_lines": 0, "bad_lines": 0, "inserted": 0}
    if not files:
        return result
    days = sorted(set(files.values()))
    loaded = loaded_offsets(spark, location, days)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for path, day in files.items():
        rel = path.relative_to(root).as_posix()
        start = loaded.get(rel, 0)
        if path.stat().st_size <= start:
            continue
        lines, _ = complete_lines(path, start)
        for offset, end, raw in lines:
            record = parse_line(raw)
            if record is None:
                result["bad_lines"] += 1
                continue
            rows.append(
                {
                    **record,
                    "dt": day,
                    "_source_file": rel,
                    "_offset": offset,
                    "_end": end,
                    "_loaded_at": now,
                }
            )
    result["new_lines"] = len(rows)
    if not rows:
        return result

    schema = pa.schema(
        [
            ("ts", pa.timestamp("us", tz="UTC")),
            ("actor", pa.string()),
            ("action", pa.string()),
            ("subject", pa.string()),
            ("outcome", pa.string()),
            ("request_id", pa.string()),
            ("dt", pa.date32()),
            ("_source_file", pa.string()),
            ("_offset", pa.int64()),
            ("_end", pa.int64()),
            ("_loaded_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    before = tables.version(spark, settings, TABLE)
    # Through parquet, not createDataFrame: a day of a busy service is many rows.
    with tempfile.TemporaryDirectory(prefix="access-load-") as tmp:
        staged = Path(tmp) / "rows.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), staged)
        source = spark.read.parquet(str(staged))
        day_list = ", ".join(f"DATE'{d.isoformat()}'" for d in days)
        (
            DeltaTable.forPath(spark, location)
            .alias("t")
            .merge(
                source.alias("s"),
                f"t.dt IN ({day_list}) AND t.dt = s.dt AND t._source_file = s._source_file"
                " AND t._offset = s._offset",
            )
            .whenNotMatchedInsertAll()
            .execute()
        )
        metrics = tables.operation_metrics(spark, location, before)
    result["inserted"] = metrics.get("numTargetRowsInserted", 0)
    return result


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
