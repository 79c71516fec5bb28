"""Loading the JSON-line logs of :mod:`jobs.linelog` into Delta tables (Spark side).

Used by :mod:`jobs.privacy.access` (the access log) and :mod:`jobs.monitor.answers` (the
answer log); the rules are in :mod:`jobs.linelog`'s docstring.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


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


def day_of(folder: str) -> date | None:
    """The day of a ``dt=YYYY-MM-DD`` folder, None for anything else."""
    try:
        return date.fromisoformat(folder.removeprefix("dt="))
    except ValueError:
        return None


def log_files(root: Path) -> dict[Path, date]:
    """Every log file under ``root`` with the day of its folder."""
    return {
        p: day
        for p in sorted(root.glob("dt=*/*.jsonl"))
        if (day := day_of(p.parent.name)) is not None
    }


def loaded_offsets(spark: SparkSession, location: str, days: list[date]) -> dict[str, int]:
    """Per log file (path under the log folder), the byte offset loaded up to."""
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


def marker_path(root: Path, table: str) -> Path:
    """The loader's own record of how far it read each file (see :mod:`jobs.linelog`)."""
    return root / "_loaded" / f"{table}.json"


def read_marker(root: Path, table: str) -> dict[str, int]:
    path = marker_path(root, table)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        # A damaged marker only costs a re-read (the MERGE keeps rows single): say so, go on.
        log.warning("ignoring unreadable loader marker %s", path)
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_marker(root: Path, table: str, reached: dict[str, int]) -> None:
    """Replace the marker atomically (temporary file + rename)."""
    path = marker_path(root, table)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(reached, sort_keys=True))
    os.replace(tmp, path)


def usable_rows(
    parse: Callable[[bytes], Iterable[dict[str, Any]] | None], raw: bytes
) -> list[dict[str, Any]] | None:
    """``parse``'s rows of one line, or None when the line cannot be stored.

    A line the parser's own checks let through can still not be written: a time zone that
    moves year 1 out of range (``OverflowError``), or a lone surrogate, which JSON's
    ``\\ud800`` escapes allow but Arrow cannot encode. One such line would otherwise stop
    the load on every run (the offset never moves past it); it counts as a bad line.
    """
    try:
        rows = parse(raw)
        if rows is None:
            return None
        rows = list(rows)
    except (ValueError, OverflowError, RecursionError):
        # See the docstring: a bad line, not a stuck loader (RecursionError: a line of
        # 100,000 nested brackets is valid input to nothing but the JSON parser's stack).
        return None
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return None
    return rows


def _with_place(fields: pa.Schema) -> pa.Schema:
    """A log's row fields plus where each row's line sits (what a rerun merges on)."""
    import pyarrow as pa

    return pa.schema(
        [
            *fields,
            ("dt", pa.date32()),
            ("_source_file", pa.string()),
            ("_offset", pa.int64()),
            ("_end", pa.int64()),
            ("_loaded_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def load_lines(
    spark: SparkSession,
    settings: Settings,
    table: str,
    root: Path,
    parse: Callable[[bytes], Iterable[dict[str, Any]] | None],
    fields: pa.Schema,
    key: tuple[str, ...] = (),
    offsets: Callable[[SparkSession, str, list[date]], dict[str, int]] = loaded_offsets,
) -> dict[str, Any]:
    """Append the new complete lines of the log under ``root`` to ``table``.

    ``parse`` turns one line into the rows it stands for (None: not a valid record), of
    the types in ``fields``; each row gets ``dt``, ``_source_file``, ``_offset``, ``_end``
    and ``_loaded_at`` (:func:`_with_place`). The
    MERGE key is the line's place plus ``key`` (for logs with several rows per line).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from delta.tables import DeltaTable

    location = tables.ensure_table(spark, settings, table)
    files = log_files(root)
    result: dict[str, Any] = {"files": len(files), "new_lines": 0, "bad_lines": 0, "inserted": 0}
    if not files:
        return result
    days = sorted(set(files.values()))
    loaded = offsets(spark, location, days)
    marker = read_marker(root, table)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    reached: dict[str, int] = {}
    for path, day in files.items():
        rel = path.relative_to(root).as_posix()
        start = max(loaded.get(rel, 0), marker.get(rel, 0))
        reached[rel] = start
        if path.stat().st_size <= start:
            continue
        lines, reached[rel] = complete_lines(path, start)
        for offset, end, raw in lines:
            if not raw.strip():
                continue  # a line erasure blanked in place (or an empty one): nothing to load
            parsed = usable_rows(parse, raw)
            if parsed is None:
                result["bad_lines"] += 1
                continue
            result["new_lines"] += 1
            place = {"dt": day, "_source_file": rel, "_offset": offset, "_end": end}
            rows.extend({**row, **place, "_loaded_at": now} for row in parsed)
    if not rows:
        # Only rowless lines (or none) were new: remember them so they are not re-counted.
        write_marker(root, table, reached)
        return result
    before = tables.version(spark, settings, table)
    # Through parquet, not createDataFrame: a day of a busy service is many rows.
    with tempfile.TemporaryDirectory(prefix=f"{table}-load-") as tmp:
        staged = Path(tmp) / "rows.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=_with_place(fields)), staged)
        source = spark.read.parquet(str(staged))
        day_list = ", ".join(f"DATE'{d.isoformat()}'" for d in days)
        on = " AND ".join(f"t.{c} = s.{c}" for c in ("dt", "_source_file", "_offset", *key))
        (
            DeltaTable.forPath(spark, location)
            .alias("t")
            .merge(source.alias("s"), f"t.dt IN ({day_list}) AND {on}")
            .whenNotMatchedInsertAll()
            .execute()
        )
        metrics = tables.operation_metrics(spark, location, before)
    result["inserted"] = metrics.get("numTargetRowsInserted", 0)
    # After the MERGE: a crash before this re-reads the lines, which the MERGE dedupes.
    write_marker(root, table, reached)
    return result
