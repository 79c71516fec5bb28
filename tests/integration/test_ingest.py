"""Landing → bronze → silver → gold on real Spark and Delta, with a bad-input corpus."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.ingest.bronze import interval_files
from jobs.ingest.silver import time_window
from jobs.ingest.steps import run_interval
from jobs.ingest.validate import Rejected, parse_event
from jobs.sources.shop import generate

pytestmark = pytest.mark.spark

START, END = "2026-11-01T09:00:00+00:00", "2026-11-01T12:00:00+00:00"
TABLES = (
    "bronze_events",
    "events",
    "quarantine",
    "interactions",
    "user_stats",
    "item_daily",
    "items",
)


@pytest.fixture(scope="module")
def shop(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict]:
    root: Path = tmp_path_factory.mktemp("ingest")
    settings = load_settings(
        data_root=root,
        gen_users=600,
        gen_items=80,
        spark_shuffle_partitions=2,
        spark_master="local[2]",
    )
    generate(settings, days=1, malformed_fraction=0.12, duplicate_fraction=0.03)
    return settings, run_interval(START, END, settings=settings)


def _without_consent(line: str) -> bool:
    """A line bronze keeps no content of: JSON whose consent is there and not a yes."""
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    consent = rec.get("consent") if isinstance(rec, dict) else None
    return not (consent is None or consent is True or consent == "true")


def _expected(settings: Settings) -> tuple[Counter[str], set[str], int]:
    """An independent reading of the landing files: reasons, consented ids, non-consented.

    Consent is judged first: a non-consented line is not validated (nor quarantined)."""
    interval = tables.Interval.parse(START, END)
    window = time_window(settings, interval)
    reasons: Counter[str] = Counter()
    ids: set[str] = set()
    dropped = 0
    for file in interval_files(settings, interval):
        for line in file.read_text().splitlines():
            if _without_consent(line):
                dropped += 1
                continue
            try:
                rec = parse_event(line, window)
            except Rejected as bad:
                reasons[str(bad.reason)] += 1
                continue
            if rec["consent"]:
                ids.add(str(rec["event_id"]))
            else:
                dropped += 1
    return reasons, ids, dropped


def test_every_bad_line_is_quarantined_and_every_good_one_reaches_silver(
    spark: Any, shop: tuple[Settings, dict]
) -> None:
    settings, result = shop
    reasons, ids, _ = _expected(settings)
    assert len(reasons) >= 8  # a corpus of many kinds
    quarantine = tables.read_or_create(spark, settings, "quarantine").where("source = 'events'")
    got = Counter({r["reason"]: r["count"] for r in quarantine.groupBy("reason").count().collect()})
    assert got == reasons
    silver_ids = {r.event_id for r in tables.read_or_create(spark, settings, "events").collect()}
    assert silver_ids == ids
    assert result["silver"]["quarantined_by_reason"] == dict(reasons)


def test_non_consented_lines_are_counted_and_kept_without_content(
    spark: Any, shop: tuple[Settings, dict]
) -> None:
    settings, result = shop
    _, _, dropped = _expected(settings)
    assert result["audit"]["non_consented"] == dropped
    bronze = tables.read_or_create(spark, settings, "bronze_events")
    redacted = bronze.where("_redacted IS NOT NULL").collect()
    assert len(redacted) == dropped
    assert all(r.value is None and len(r._line_sha256) == 64 for r in redacted)


def test_counts_balance_in_the_audit(spark: Any, shop: tuple[Settings, dict]) -> None:
    settings, result = shop
    audit = result["audit"]
    assert audit["balanced"] is True
    assert (
        audit["read_lines"]
        == audit["bronze_rows"]
        == (
            audit["quarantined"]
            + audit["non_consented"]
            + audit["duplicates_in_batch"]
            + audit["duplicates_existing"]
            + audit["silver_inserted"]
        )
    )
    assert audit["duplicates_in_batch"] > 0
    rows = tables.read_or_create(spark, settings, "ingest_audit").collect()
    assert rows and all(r.balanced for r in rows)


def test_gold_interactions_add_up_to_weighted_silver_events(
    spark: Any, shop: tuple[Settings, dict]
) -> None:
    settings, _ = shop
    weights = settings.event_weights
    expected: Counter[tuple[str, str]] = Counter()
    for r in tables.read_or_create(spark, settings, "events").collect():
        if weights[r.event_type] > 0:
            expected[(r.user_id, r.item_id)] += weights[r.event_type]
    gold = {
        (r.user_id, r.item_id): r.weight
        for r in tables.read_or_create(spark, settings, "interactions").collect()
    }
    assert gold.keys() == expected.keys()
    assert all(abs(gold[k] - expected[k]) < 1e-9 for k in gold)
    stats = tables.read_or_create(spark, settings, "item_stats").collect()
    assert stats and all(s.ctr is None or 0 <= s.ctr <= 1 for s in stats)


def test_reruns_leave_the_same_contents(spark: Any, shop: tuple[Settings, dict]) -> None:
    settings, _ = shop

    def hashes() -> dict[str, str]:
        return {
            name: tables.content_hash(
                tables.read_or_create(spark, settings, name), exclude=("_ingested_at",)
            )
            for name in TABLES
        }

    before = hashes()
    again = run_interval(START, END, settings=settings)
    assert again["bronze"]["skip"] is True and again["audit"]["status"] == "unchanged"
    for _ in range(2):
        forced = run_interval(START, END, settings=settings, force=True)
        assert forced["audit"]["balanced"] is True
        assert forced["silver"]["inserted"] == 0
        assert hashes() == before
