"""Consent on real Spark and Delta: lines without consent are never kept, withdrawals stop
a person's events and request the erasure of their past, and a re-grant lets them in."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.contracts import events_file
from jobs.ingest.steps import audit_step, bronze_step, run_interval, silver_step
from jobs.privacy.consent import grant_consent, withdraw_consent
from jobs.subjects import subject_hasher

pytestmark = [pytest.mark.spark, pytest.mark.long]  # a ~2 min lake set-up

MARK = "MARK-7f3a"  # in every line that must not be kept, nowhere else


def hour(h: int) -> tables.Interval:
    return tables.Interval.parse(
        f"2026-11-01T{h:02d}:00:00+00:00", f"2026-11-01T{h + 1:02d}:00:00+00:00"
    )


def event(eid: str, user: str = "u1", ts: str = "2026-11-01T09:30:00Z", **extra: Any) -> dict:
    return {
        "event_id": eid,
        "ts": ts,
        "user_id": user,
        "item_id": "i1",
        "event_type": "view",
        **extra,
    }


def dumps(rec: dict) -> bytes:
    return json.dumps(rec).encode()


def marked(case: str, **extra: Any) -> dict:
    return event(f"{MARK}-{case}", item_id=f"{MARK}-{case}", **extra)


# (line, what becomes of it): a bronze redaction reason, "quarantined:<reason>" or "silver".
CASES: dict[str, tuple[bytes, str]] = {
    "false": (dumps(marked("false", consent=False)), "not_consented"),
    "str-false": (dumps(marked("str-false", consent="false")), "not_consented"),
    "str-FALSE": (dumps(marked("str-FALSE", consent=" FALSE ")), "not_consented"),
    "zero": (dumps(marked("zero", consent=0)), "consent_unclear"),
    "no": (dumps(marked("no", consent="no")), "consent_unclear"),
    "object": (dumps(marked("object", consent={"ads": False})), "consent_unclear"),
    "false-bad-ts": (dumps(marked("false-bad-ts", consent=False, ts="yesterday")), "not_consented"),
    "truncated": (dumps({"consent": False, **marked("truncated")})[:-20], "consent_unclear"),
    "nested": (dumps(marked("nested", meta={"consent": False})), "consent_unclear"),
    # A key given twice: bronze's textual check sees the refusal.
    "twice": (
        b'{"consent": true, ' + dumps(marked("twice"))[1:-1] + b', "consent": false}',
        "consent_unclear",
    ),
    # Given twice, the second time escaped: get_json_object reads the first key, Python's
    # json the last; silver catches it and redacts the bronze row in place.
    "twice-escaped": (
        b'{"consent": true, ' + dumps(marked("twice-escaped"))[1:-1] + b', "cons\\u0065nt": false}',
        "not_consented",
    ),
    "true": (dumps(event("ok-true", consent=True)), "silver"),
    "null": (dumps(event("ok-null", consent=None)), "silver"),
    "missing": (dumps(event("ok-missing")), "silver"),
    "str-true": (dumps(event("q-str-true", consent="true")), "quarantined:wrong_type"),
}


def write_lines(
    settings: Settings, interval: tables.Interval, part: str, lines: list[bytes]
) -> None:
    path = events_file(settings.events_dir, interval.start, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")


def lake_settings(root: Path) -> Settings:
    return load_settings(
        data_root=root, spark_shuffle_partitions=1, spark_master="local[2]", quality_enabled=False
    )


@pytest.fixture(scope="module")
def odd(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict]:
    settings = lake_settings(tmp_path_factory.mktemp("consent-odd"))
    write_lines(settings, hour(9), "a", [line for line, _ in CASES.values()])
    return settings, run_interval(
        hour(9).start.isoformat(), hour(9).end.isoformat(), settings=settings
    )


def every_table(settings: Settings) -> list[Path]:
    return sorted(p.parent for p in Path(str(settings.lake_dir)).glob("*/*/_delta_log"))


def marker_hits(spark: Any, location: Path, version: int | None = None) -> int:
    from pyspark.sql import functions as F

    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    frame = reader.load(str(location))
    strings = [f.name for f in frame.schema.fields if f.dataType.simpleString() == "string"]
    if not strings:
        return 0
    hit = F.lit(False)
    for name in strings:
        hit = hit | F.coalesce(F.instr(F.col(name), MARK) > 0, F.lit(False))
    return frame.where(hit).count()


def test_no_table_holds_a_line_without_consent(spark: Any, odd: tuple) -> None:
    from delta.tables import DeltaTable

    settings, _ = odd
    locations = every_table(settings)
    assert {p.name for p in locations} >= {"bronze_events", "events", "quarantine"}
    for location in locations:
        assert marker_hits(spark, location) == 0, location.name
        # Not in any version either, but for the line bronze could not judge by itself
        # (its redaction is an UPDATE: the old file goes at the next VACUUM).
        if location.name != "bronze_events":
            newest = DeltaTable.forPath(spark, str(location)).history(1).first()["version"]
            assert all(marker_hits(spark, location, v) == 0 for v in range(newest + 1))
    # The bronze write itself held only the line it could not judge (an escaped twin key).
    bronze = tables.path(settings, "bronze_events")
    history = DeltaTable.forPath(spark, bronze).history().collect()
    write = min(r.version for r in history if r.operation == "WRITE")
    frame = spark.read.format("delta").option("versionAsOf", write).load(bronze)
    held = [r.value for r in frame.where(f"instr(value, '{MARK}') > 0").collect()]
    assert held == [CASES["twice-escaped"][0].decode()]
    assert frame.count() == len(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_odd_consent_value_is_handled_deliberately(spark: Any, odd: tuple, case: str) -> None:
    settings, _ = odd
    line, outcome = CASES[case]
    digest = hashlib.sha256(line).hexdigest()
    bronze = tables.read_or_create(spark, settings, "bronze_events")
    row = bronze.where(f"_line_sha256 = '{digest}' OR sha2(value, 256) = '{digest}'").collect()
    assert len(row) == 1
    if outcome == "silver":
        assert row[0]._redacted is None and row[0].value == line.decode()
        ids = {r.event_id for r in tables.read_or_create(spark, settings, "events").collect()}
        assert json.loads(line)["event_id"] in ids
    elif outcome.startswith("quarantined:"):
        assert row[0]._redacted is None
        quarantine = tables.read_or_create(spark, settings, "quarantine").collect()
        assert [q.reason for q in quarantine if q.value == line.decode()] == [outcome.split(":")[1]]
    else:
        assert row[0].value is None
        assert row[0]._redacted == outcome
        assert row[0]._line_sha256 == digest


def test_the_audit_counts_them_and_balances(odd: tuple) -> None:
    _, result = odd
    audit = result["audit"]
    redacted = sum(1 for _, o in CASES.values() if o.endswith(("consented", "unclear")))
    assert audit["status"] == "ok" and audit["balanced"] is True
    assert audit["non_consented"] == redacted
    assert audit["consent_withdrawn"] == 0
    assert audit["quarantined_by_reason"] == {"wrong_type": 1}
    assert audit["silver_inserted"] == 3
    assert (
        audit["read_lines"]
        == len(CASES)
        == (
            audit["quarantined"]
            + audit["non_consented"]
            + audit["consent_withdrawn"]
            + audit["duplicates_in_batch"]
            + audit["duplicates_existing"]
            + audit["silver_inserted"]
        )
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["true", "false", "no", ""]),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner, max_size=2)
    ),
    max_leaves=4,
)


@hsettings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(JSON | st.just("<missing>"), min_size=1, max_size=12))
def test_only_an_absent_null_or_true_consent_is_kept(spark: Any, values: list[Any]) -> None:
    """Bronze's rule against an independent reading of the same lines with Python's json:
    the content is kept exactly when consent is absent, null, true or the string "true"."""
    from jobs.ingest.bronze import redaction_reason

    lines = [
        json.dumps(event(f"e{i}") if v == "<missing>" else event(f"e{i}", consent=v))
        for i, v in enumerate(values)
    ]
    got = [
        r[0]
        for r in spark.createDataFrame([(x,) for x in lines], "value STRING")
        .select(redaction_reason())
        .collect()
    ]
    for line, reason in zip(lines, got, strict=True):
        consent = json.loads(line).get("consent")
        kept = consent is None or consent is True or consent == "true"
        assert (reason is None) is kept, (line, reason)
        if not kept:
            want = (
                "not_consented"
                if isinstance(consent, bool) or consent == "false"
                else "consent_unclear"
            )
            assert reason == want, (line, reason)


# -- withdrawals ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def withdrawals(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """u1 withdraws at 10:30 and consents again at 11:30; u2 withdraws between the bronze
    and silver steps of 12:00-13:00; u3 never withdraws."""
    settings = lake_settings(tmp_path_factory.mktemp("consent-withdraw"))
    out: dict[str, Any] = {"settings": settings}
    write_lines(
        settings,
        hour(9),
        "a",
        [dumps(event(f"h9-{u}", u, "2026-11-01T09:20:00Z")) for u in ("u1", "u2", "u3")],
    )
    out["h9"] = run_interval(hour(9).start.isoformat(), hour(9).end.isoformat(), settings=settings)
    at = datetime.fromisoformat("2026-11-01T10:30:00+00:00")
    out["withdraw"] = withdraw_consent(spark, settings, ["u1"], at=at)
    out["again"] = withdraw_consent(spark, settings, ["u1"], at=at)
    write_lines(
        settings,
        hour(10),
        "a",
        [
            dumps(event("h10-u1-before", "u1", "2026-11-01T10:10:00Z")),  # the erased past
            dumps(event("h10-u1-after", "u1", "2026-11-01T10:40:00Z", session_id=MARK)),
            dumps(event("h10-u1-bad", "u1", "2026-11-01T10:45:00Z", price="12,99 EUR")),
            dumps(event("h10-u2", "u2", "2026-11-01T10:40:00Z")),
        ],
    )
    out["h10"] = run_interval(
        hour(10).start.isoformat(), hour(10).end.isoformat(), settings=settings
    )
    out["grant"] = grant_consent(
        spark, settings, ["u1", "u3"], at=datetime.fromisoformat("2026-11-01T11:30:00+00:00")
    )
    write_lines(
        settings,
        hour(11),
        "a",
        [
            dumps(event("h11-u1-before-grant", "u1", "2026-11-01T11:10:00Z")),
            dumps(event("h11-u1-after-grant", "u1", "2026-11-01T11:40:00Z")),
        ],
    )
    out["h11"] = run_interval(
        hour(11).start.isoformat(), hour(11).end.isoformat(), settings=settings
    )
    write_lines(settings, hour(12), "a", [dumps(event("h12-u2", "u2", "2026-11-01T12:10:00Z"))])
    s, e = hour(12).start.isoformat(), hour(12).end.isoformat()
    bronze = bronze_step(s, e, settings=settings)
    out["late_withdraw"] = withdraw_consent(
        spark, settings, ["u2"], at=datetime.fromisoformat("2026-11-01T12:30:00+00:00")
    )
    silver = silver_step(s, e, settings=settings)
    out["h12"] = {"audit": audit_step(s, e, bronze, silver, None, settings=settings)}
    out["h10_forced"] = run_interval(
        hour(10).start.isoformat(), hour(10).end.isoformat(), settings=settings, force=True
    )
    return out


def silver_ids(spark: Any, settings: Settings) -> set[str]:
    return {r.event_id for r in tables.read_or_create(spark, settings, "events").collect()}


def test_a_withdrawal_stops_the_persons_later_events(spark: Any, withdrawals: dict) -> None:
    settings = withdrawals["settings"]
    ids = silver_ids(spark, settings)
    assert {"h9-u1", "h9-u2", "h9-u3"} <= ids  # loaded before: the erasure's job now
    assert "h10-u2" in ids
    assert not {"h10-u1-before", "h10-u1-after", "h10-u1-bad", "h11-u1-before-grant"} & ids
    audit = withdrawals["h10"]["audit"]
    assert audit["consent_withdrawn"] == 3 and audit["silver_inserted"] == 1
    assert audit["quarantined"] == 0 and audit["balanced"] is True
    # Reloaded after u2 withdrew too (12:30): u2's 10:40 event is now part of u2's erased
    # past, so a backfill does not bring it back.
    forced = withdrawals["h10_forced"]["audit"]
    assert forced["consent_withdrawn"] == 4 and forced["balanced"] is True
    bronze = tables.read_or_create(spark, settings, "bronze_events").where(
        f"_batch_id = '{hour(10).batch_id}'"
    )
    dropped = bronze.where("_redacted = 'consent_withdrawn'").collect()
    assert len(dropped) == 4 and all(r.value is None and len(r._line_sha256) == 64 for r in dropped)
    for location in every_table(settings):
        assert marker_hits(spark, location) == 0, location.name


def test_a_withdrawal_records_one_pending_erasure_request(spark: Any, withdrawals: dict) -> None:
    settings = withdrawals["settings"]
    assert withdrawals["withdraw"] == {
        "withdrawn": 1,
        "already_withdrawn": 0,
        "erasure_requested": 1,
    }
    assert withdrawals["again"] == {"withdrawn": 0, "already_withdrawn": 1, "erasure_requested": 0}
    requests = tables.read_or_create(spark, settings, "erasure_requests").collect()
    subject = subject_hasher(settings)
    by_subject = {r.subject: r for r in requests}
    assert set(by_subject) == {subject("u1"), subject("u2")}
    assert all(r.status == "pending" and r.source == "consent" for r in requests)
    consent = tables.read_or_create(spark, settings, "consent").collect()
    assert {(r.subject, r.status) for r in consent} == {
        (subject("u1"), "withdrawn"),
        (subject("u1"), "granted"),
        (subject("u2"), "withdrawn"),
    }  # u3 never withdrew: its grant recorded nothing
    assert withdrawals["grant"] == {"granted": 1, "not_withdrawn": 1}


def test_a_regrant_lets_later_events_in(spark: Any, withdrawals: dict) -> None:
    settings = withdrawals["settings"]
    assert "h11-u1-after-grant" in silver_ids(spark, settings)
    audit = withdrawals["h11"]["audit"]
    assert audit["consent_withdrawn"] == 1 and audit["silver_inserted"] == 1
    assert audit["balanced"] is True


def test_a_withdrawal_between_bronze_and_silver_is_honoured(spark: Any, withdrawals: dict) -> None:
    settings = withdrawals["settings"]
    assert withdrawals["late_withdraw"]["erasure_requested"] == 1
    assert "h12-u2" not in silver_ids(spark, settings)
    audit = withdrawals["h12"]["audit"]
    assert audit["consent_withdrawn"] == 1 and audit["balanced"] is True
    rows = (
        tables.read_or_create(spark, settings, "bronze_events")
        .where(f"_batch_id = '{hour(12).batch_id}'")
        .collect()
    )
    assert [(r.value, r._redacted) for r in rows] == [(None, "consent_withdrawn")]


def test_an_older_bronze_table_gains_the_new_columns(spark: Any, tmp_path: Path) -> None:
    """A bronze table created before this change (no _redacted, _line_sha256) gets the
    columns on first use, and its old rows read NULL in them."""
    from delta.tables import DeltaTable
    from pyspark.sql.types import StructType

    settings = lake_settings(tmp_path)
    location = tables.path(settings, "bronze_events")
    old = tables.TABLES["bronze_events"].ddl.replace(", _redacted STRING, _line_sha256 STRING", "")
    DeltaTable.create(spark).location(location).addColumns(StructType.fromDDL(old)).partitionedBy(
        "_dt"
    ).execute()
    write_lines(settings, hour(9), "a", [dumps(event("e1")), dumps(marked("x", consent=False))])
    result = run_interval(hour(9).start.isoformat(), hour(9).end.isoformat(), settings=settings)
    assert result["audit"]["balanced"] and result["audit"]["non_consented"] == 1
    columns = tables.read_or_create(spark, settings, "bronze_events").columns
    assert columns == tables.TABLES["bronze_events"].columns
    assert marker_hits(spark, Path(location)) == 0
