"""Consent withdrawals and re-grants: the consent table and what ingest reads from it.

Reads and writes ``privacy/consent`` (an append-only history: subject hash, ``withdrawn``
or ``granted``, when it took effect, where it came from); writes erasure requests through
:func:`jobs.privacy.requests.request_erasure`.

Where withdrawals come from. A shop's consent platform records a withdrawal on its
server, in an authenticated call; it reaches recflow as ``recflow withdraw-consent USER…``
(or :func:`withdraw_consent` from a backend job), not as a clickstream event. The
collector is the wrong channel for it: its files arrive late, twice or never, and a
legal request must not depend on that. A landing event's ``"consent": false`` means only
"do not keep *this* event" (a visitor who never consented); it is not a withdrawal and
triggers no erasure (there is nothing recorded to erase, and recording it would keep the
visitor's id in the erasure requests).

What a withdrawal does:

- every event of the person *up to* the withdrawal belongs to the past the erasure
  deletes: one erasure request (source ``consent``) is recorded per withdrawal, and ingest
  drops any of those events that still arrives later (a late file, a backfill) so the
  erased past is never loaded again;
- from the withdrawal on, ingest drops the person's events (counted ``consent_withdrawn``,
  no content kept) until consent is granted again: events at or after the re-grant come
  in as usual. Formally an event of the subject is dropped when its ``ts`` is earlier than
  the first grant after the subject's latest withdrawal (or always, without such a grant).

Exactly once: a withdrawal of someone already withdrawn adds nothing; an erasure request is
recorded when the subject's latest withdrawal has none requested since it was recorded, so
a call that died between its two writes is completed by running it again, and a second
run adds no second request.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings
from jobs.privacy.requests import clean_ids, request_erasure
from jobs.subjects import subject_hasher, subject_key

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

WITHDRAWN = "withdrawn"
GRANTED = "granted"
SOURCES = ("cli", "api")
STATE_DDL = "subject STRING, withdrawn_at TIMESTAMP, regranted_at TIMESTAMP"


def _utc(at: datetime | None) -> datetime:
    """An instant as naive UTC (how the lake stores TIMESTAMPs); now when not given."""
    if at is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if at.tzinfo is None:
        raise ValueError("a consent change needs a time zone (or none at all: now)")
    return at.astimezone(UTC).replace(tzinfo=None)


def _latest(spark: SparkSession, settings: Settings, subjects: list[str]) -> dict[str, Any]:
    """The newest change of each given subject (by when it took effect, then recorded)."""
    from pyspark.sql import functions as F

    rows = (
        tables.read_or_create(spark, settings, "consent")
        .where(F.col("subject").isin(subjects))
        .groupBy("subject")
        .agg(F.max_by(F.struct("status", "recorded_at"), F.struct("changed_at", "recorded_at")))
        .collect()
    )
    return {r[0]: r[1] for r in rows}


def _append(
    spark: SparkSession,
    settings: Settings,
    subjects: list[str],
    status: str,
    at: datetime,
    source: str,
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [(s, status, at, source, now) for s in subjects]
    frame = spark.createDataFrame(rows, tables.TABLES["consent"].ddl.replace(" NOT NULL", ""))
    frame.write.format("delta").mode("append").save(tables.ensure_table(spark, settings, "consent"))


def withdraw_consent(
    spark: SparkSession,
    settings: Settings,
    user_ids: Iterable[str],
    at: datetime | None = None,
    source: str = "cli",
) -> dict[str, int]:
    """Record withdrawals (effective ``at``, default now) and one erasure request each."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    ids = clean_ids(user_ids)
    if not ids:
        return {"withdrawn": 0, "already_withdrawn": 0, "erasure_requested": 0}
    from pyspark.sql import functions as F

    hasher = subject_hasher(settings)
    by_subject = {hasher(u): u for u in ids}
    latest = _latest(spark, settings, list(by_subject))
    new = [s for s in by_subject if s not in latest or latest[s]["status"] != WITHDRAWN]
    if new:
        _append(spark, settings, new, WITHDRAWN, _utc(at), source)
    # Each subject's latest withdrawal (as recorded) against the requests made since.
    withdrawals = (
        tables.read_or_create(spark, settings, "consent")
        .where(F.col("subject").isin(list(by_subject)) & (F.col("status") == WITHDRAWN))
        .groupBy("subject")
        .agg(F.max("recorded_at").alias("recorded_at"))
    )
    requested = {
        r["subject"]
        for r in withdrawals.join(
            tables.read_or_create(spark, settings, "erasure_requests").select(
                "subject", "requested_at"
            ),
            "subject",
        )
        .where(F.col("requested_at") >= F.col("recorded_at"))
        .select("subject")
        .distinct()
        .collect()
    }
    todo = [u for s, u in by_subject.items() if s not in requested]
    erasure = request_erasure(spark, settings, todo, source="consent") if todo else {}
    return {
        "withdrawn": len(new),
        "already_withdrawn": len(by_subject) - len(new),
        "erasure_requested": erasure.get("requested", 0),
    }


def grant_consent(
    spark: SparkSession,
    settings: Settings,
    user_ids: Iterable[str],
    at: datetime | None = None,
    source: str = "cli",
) -> dict[str, int]:
    """Record that withdrawn people consent again from ``at`` (default now) on.

    Only a withdrawn subject gets a row: consent is the default, so granting it to someone
    who never withdrew records nothing (and no hash of a stranger's id).
    """
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    ids = clean_ids(user_ids)
    hasher = subject_hasher(settings)
    subjects = [hasher(u) for u in ids]
    latest = _latest(spark, settings, subjects) if subjects else {}
    todo = [s for s in subjects if s in latest and latest[s]["status"] == WITHDRAWN]
    if todo:
        _append(spark, settings, todo, GRANTED, _utc(at), source)
    return {"granted": len(todo), "not_withdrawn": len(subjects) - len(todo)}


def withdrawn_state(spark: SparkSession, settings: Settings) -> DataFrame | None:
    """Per subject that ever withdrew: its latest withdrawal and the first grant after it
    (NULL while still withdrawn); None when nobody ever withdrew (ingest then needs no
    subject hashes, nor the secret they are keyed with).

    Small (one row per person who withdrew): collected and handed back as a local frame
    for a broadcast join.
    """
    from pyspark.sql import functions as F

    consent = tables.read_or_create(spark, settings, "consent")
    last = (
        consent.where(F.col("status") == WITHDRAWN)
        .groupBy("subject")
        .agg(F.max("changed_at").alias("withdrawn_at"))
    )
    grants = consent.where(F.col("status") == GRANTED).select(
        "subject", F.col("changed_at").alias("granted_at")
    )
    rows = (
        last.join(grants, "subject", "left")
        .groupBy("subject", "withdrawn_at")
        .agg(
            F.min(F.when(F.col("granted_at") > F.col("withdrawn_at"), F.col("granted_at"))).alias(
                "regranted_at"
            )
        )
        .collect()
    )
    if not rows:
        return None
    return spark.createDataFrame([tuple(r) for r in rows], STATE_DDL)


def subject_column(settings: Settings, user_id: Column) -> Column:
    """The subject hash of a user id column, as :func:`jobs.subjects.subject_hash`."""
    from pyspark.sql import functions as F

    key = subject_key(settings.subject_secret_value())
    return F.substring(F.sha2(F.concat(F.lit(key), user_id), 256), 1, 32)


def with_withdrawn(
    frame: DataFrame, settings: Settings, state: DataFrame, user_id: Column, ts: Column
) -> DataFrame:
    """``frame`` plus a boolean ``_withdrawn``: the row's user withdrew consent and its
    ``ts`` is before the first grant after that (or it has no usable ``ts``: dropped too,
    on the safe side). Broadcast left join on the subject hash; nothing else is added."""
    from pyspark.sql import functions as F

    state = F.broadcast(
        state.select(
            F.col("subject").alias("_c_subject"), F.col("regranted_at").alias("_c_regranted")
        )
    )
    joined = frame.withColumn("_c_key", subject_column(settings, user_id)).join(
        state, F.col("_c_key") == F.col("_c_subject"), "left"
    )
    withdrawn = F.col("_c_subject").isNotNull() & (
        F.col("_c_regranted").isNull() | ts.isNull() | (ts < F.col("_c_regranted"))
    )
    return joined.withColumn("_withdrawn", F.coalesce(withdrawn, F.lit(False))).drop(
        "_c_key", "_c_subject", "_c_regranted"
    )
