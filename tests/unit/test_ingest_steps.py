"""Bronze's line count and the audit row's status, without Spark."""

from __future__ import annotations

import pytest

from jobs import tables
from jobs.ingest.bronze import count_lines
from jobs.ingest.steps import audit_row

INTERVAL = tables.Interval.parse("2026-11-01T09:00:00+00:00", "2026-11-01T10:00:00+00:00")


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        (b"", 0),
        (b"a", 1),
        (b"a\n", 1),
        (b"a\r\nb\r\n", 2),
        (b"a\rb\rc", 3),  # bare CR, as Spark's text reader splits it
        (b"a\n\n  \nb\n", 4),  # empty and blank lines are lines
        (b"\xef\xbb\xbfa\r\n", 1),  # a byte-order mark is not a line
        (b"\xef\xbb\xbf", 0),
        (b"\r\n\r", 2),
    ],
)
def test_lines_are_counted_as_spark_splits_them(data: bytes, lines: int) -> None:
    assert count_lines(data) == lines


BRONZE = {"fingerprint": "f", "read_lines": 10, "bronze_rows": 10}
SILVER = {"bronze_rows": 10, "balanced": True, "quarantined": 2, "inserted": 8}


@pytest.mark.parametrize(
    ("bronze", "silver", "status"),
    [
        (BRONZE, SILVER, "ok"),
        (BRONZE, dict(SILVER, balanced=False), "unbalanced"),
        (dict(BRONZE, bronze_rows=9), dict(SILVER, bronze_rows=9), "unbalanced"),
        (BRONZE, dict(SILVER, bronze_rows=9), "unbalanced"),
        (BRONZE, {"skipped": True}, "unchanged"),
    ],
)
def test_only_a_balanced_batch_is_ok(bronze: dict, silver: dict, status: str) -> None:
    row = audit_row(INTERVAL, bronze, silver, None, "run-1")
    assert row["status"] == status
    assert row["balanced"] is (status != "unbalanced")
    assert set(row) == set(tables.TABLES["ingest_audit"].columns)


@pytest.mark.parametrize("expired", [False, True])
def test_the_audit_says_when_landing_was_incomplete(expired: bool) -> None:
    """A batch kept from bronze because its landing files expired still balances and is
    ok, and the row says landing was not complete."""
    row = audit_row(INTERVAL, dict(BRONZE, landing_expired=expired), SILVER, None, "run-1")
    assert row["status"] == "ok"
    assert row["quality"]["landing_complete"] is not expired


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-11-01T10:30:00+00:00", "2026-11-01T11:00:00+00:00"),
        ("2026-11-01T10:00:00+00:00", "2026-11-01T10:00:01+00:00"),
        ("2026-11-01T10:00:00+05:30", "2026-11-01T11:00:00+05:30"),  # 04:30 UTC
    ],
)
def test_intervals_off_whole_utc_hours_are_refused(start: str, end: str) -> None:
    # Landing is partitioned by UTC hour: [10:00, 10:30) and [10:30, 11:00) would both read
    # hr=10 and count its quarantined lines twice.
    with pytest.raises(ValueError, match="whole UTC hour"):
        tables.Interval.parse(start, end)


def test_intervals_on_whole_hours_in_any_zone_are_accepted() -> None:
    interval = tables.Interval.parse("2026-11-01T12:00:00+02:00", "2026-11-01T13:00:00+02:00")
    assert interval.batch_id == "20261101T1000-20261101T1100"


def test_lines_dropped_for_a_withdrawal_count_in_the_balance() -> None:
    from dataclasses import replace

    from jobs.ingest.silver import SilverResult

    result = SilverResult(
        "b", bronze_rows=6, quarantined=1, non_consented=1, consent_withdrawn=2, inserted=2
    )
    assert result.balanced
    assert not replace(result, consent_withdrawn=0).balanced
    row = audit_row(INTERVAL, BRONZE, dict(SILVER, consent_withdrawn=2), None, "run-1")
    assert row["consent_withdrawn"] == 2
