"""Erasure requests: recorded in a Delta table, processed by the privacy DAG.

A request is a row (``privacy/erasure_requests``) with the person's subject hash and,
while it is pending, their user id: the processing run needs the id to find their rows.
The run that completes a request nulls the id in the same table; from then on only the
hash remains (and VACUUM removes the files that held the id, see the erasure deadline in
the README). Asking twice for the same person while a request is pending adds nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from jobs import tables
from jobs.config import Settings
from jobs.subjects import subject_hasher

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SOURCES = ("cli", "file", "consent", "api")
MAX_USER_ID_CHARS = 512


class RequestError(ValueError):
    """A request that cannot be recorded (an empty or implausible user id)."""


def clean_ids(user_ids: Iterable[str]) -> list[str]:
    """The ids as given, blank lines skipped, each checked; duplicates removed in order."""
    seen: dict[str, None] = {}
    for raw in user_ids:
        user_id = raw.strip() if isinstance(raw, str) else raw
        if not isinstance(user_id, str):
            raise RequestError(f"user id {raw!r} is not a string")
        if not user_id:
            continue
        if (
            len(user_id) > MAX_USER_ID_CHARS
            or any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in user_id)
            or "\ufeff" in user_id
        ):
            raise RequestError(
                "not a user id: control characters, a byte-order mark, bytes that are not"
                f" UTF-8 or more than {MAX_USER_ID_CHARS} characters (line of {len(user_id)})"
            )
        seen.setdefault(user_id, None)
    return list(seen)


def read_id_file(path: Path) -> list[str]:
    """One user id a line (UTF-8); ``#`` starts a comment line."""
    # utf-8-sig: an editor's byte-order mark would otherwise become part of the first id,
    # which then matches nobody, and the request would complete having erased nothing.
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [line for line in lines if not line.lstrip().startswith("#")]


def request_erasure(
    spark: SparkSession, settings: Settings, user_ids: Iterable[str], source: str = "cli"
) -> dict[str, int]:
    """Record an erasure request per user; those already pending are not added twice."""
    if source not in SOURCES:
        raise RequestError(f"source {source!r} is not one of {SOURCES}")
    ids = clean_ids(user_ids)
    if not ids:
        return {"requested": 0, "already_pending": 0}
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    hasher = subject_hasher(settings)
    now = datetime.now(UTC)
    rows = [(uuid.uuid4().hex, hasher(u), u, source, now, "pending") for u in ids]
    new = spark.createDataFrame(
        rows,
        "request_id STRING, subject STRING, user_id STRING, source STRING, "
        "requested_at TIMESTAMP, status STRING",
    )
    location = tables.ensure_table(spark, settings, "erasure_requests")
    target = DeltaTable.forPath(spark, location)
    before = tables.version(spark, settings, "erasure_requests")
    (
        target.alias("t")
        .merge(new.alias("n"), "t.subject = n.subject AND t.status = 'pending'")
        .whenNotMatchedInsert(values={c: F.col(f"n.{c}") for c in new.columns})
        .execute()
    )
    inserted = tables.operation_metrics(spark, location, before).get("numTargetRowsInserted", 0)
    return {"requested": inserted, "already_pending": len(ids) - inserted}


def pending(
    spark: SparkSession, settings: Settings, limit: int | None = None
) -> list[tuple[str, str, str]]:
    """(request_id, subject, user_id) of pending requests, oldest first."""
    df = (
        tables.read_or_create(spark, settings, "erasure_requests")
        .where("status = 'pending'")
        .orderBy("requested_at", "request_id")
        .select("request_id", "subject", "user_id")
    )
    if limit is not None:
        df = df.limit(limit)
    return [(r[0], r[1], r[2]) for r in df.collect()]
