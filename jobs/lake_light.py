"""Tiny reads and writes of lake tables without a JVM, through delta-rs.

Under the real scheduler every task is its own process, and a task that starts Spark pays
for a JVM and Delta's warm-up (20–60 s measured here) before it does anything: too much
for appending one audit row, reading a table's version or summing one column for the
training trigger. delta-rs reads and writes the very same Delta tables (same log, same
optimistic commits) from Python in milliseconds, so those small steps use it.

Only where the lake is a local folder (or a mounted one): on an object store, concurrent
writers need a commit coordinator that Spark's and delta-rs's S3 clients do not share, so
an ``s3a://`` lake keeps Spark for everything (``available`` says which). The big work
(bronze, silver, gold, training data) stays in Spark either way. Reads go through
DataFusion (``QueryBuilder``): delta-rs's pyarrow-dataset path aborts the interpreter at
exit with this pyarrow ("terminate called without an active exception", status 134), which
a task runner would take for a crash.

Two writers on one table: delta-rs commits with a rename that refuses to replace, Spark's
log store on a local folder checks then renames, so a Spark commit racing a delta-rs one
at the same version (maintenance's OPTIMIZE of ``ingest_audit`` during an ingest run's
audit) could replace it — the same race two Spark JVMs already had. What is at stake is
an audit row, and a batch without its ``ok`` row is reloaded by the next run's
``reload_late`` (idempotent), which writes the row again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings

if TYPE_CHECKING:
    from deltalake import DeltaTable


def available(settings: Settings) -> bool:
    """Whether the light path may be used: switched on, and the lake is a local folder."""
    lake = str(settings.lake_dir)
    return settings.light_delta and ("://" not in lake or lake.startswith("file://"))


def open_table(settings: Settings, name: str, version: int | None = None) -> DeltaTable | None:
    """The table (at ``version``), or None when no Delta table is there yet.

    A version that is gone (log files cleaned up) raises: the caller decides what a
    missing past means.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(tables.path(settings, name), version=version)
    except TableNotFoundError:
        return None


def version(settings: Settings, name: str) -> int:
    """Current version of a table, -1 when it does not exist (nothing is created)."""
    table = open_table(settings, name)
    return -1 if table is None else int(table.version())


def rows(sql: str, **registered: DeltaTable) -> list[dict[str, Any]]:
    """Run ``sql`` over the given tables (each registered under its keyword) as rows.

    Timestamps come back timezone-aware (UTC), where Spark gives naive UTC ones.
    """
    import pyarrow as pa
    from deltalake import QueryBuilder

    builder = QueryBuilder()
    for alias, table in registered.items():
        builder = builder.register(alias, table)
    return pa.table(builder.execute(sql).read_all()).to_pylist()


def merge_rows(
    settings: Settings, name: str, records: Iterable[Mapping[str, Any]], keys: tuple[str, ...]
) -> dict[str, Any] | None:
    """Upsert ``records`` into table ``name`` by ``keys`` in one commit; None when the light
    path cannot take it and Spark must (not available here, the table is missing, or it
    lacks declared columns: creating and evolving tables stays with ``jobs.tables``).

    Naive datetimes are UTC, as everywhere in the lake. Returns delta-rs's merge metrics.
    """
    if not available(settings):
        return None
    table = open_table(settings, name)
    if table is None:
        return None
    import pyarrow as pa

    schema = pa.schema(table.schema().to_arrow())
    if set(tables.TABLES[name].columns) - set(schema.names):
        return None
    batch = pa.Table.from_pylist([_arrow_ready(r, schema) for r in records], schema=schema)
    on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    return (
        table.merge(source=batch, predicate=on, source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def _arrow_ready(record: Mapping[str, Any], schema: Any) -> dict[str, Any]:
    """One record with every column of ``schema``: naive datetimes marked UTC, maps as
    (key, value) pairs, absent columns NULL."""
    import pyarrow as pa

    out: dict[str, Any] = {}
    for field in schema:
        value = record.get(field.name)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif isinstance(value, Mapping) and pa.types.is_map(field.type):
            value = list(value.items())
        out[field.name] = value
    return out


def applied_mark(table: DeltaTable, source: str) -> int | None:
    """The version of ``source`` the newest marked commit of ``table`` applied (the
    ``userMetadata`` stamp of ``jobs.tables.commit_marks``), None when no commit has one.

    Same reading as ``jobs.tables.applied_mark``; which commits lack marks (OPTIMIZE,
    VACUUM, DELETE) does not matter, the whole history is searched.
    """
    import json

    for commit in table.history():  # newest first
        try:
            marks = json.loads(commit.get("userMetadata") or "")
        except ValueError:
            continue
        if isinstance(marks, dict) and source in marks:
            return int(marks[source])
    return None
