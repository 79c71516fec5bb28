"""Late files, expired landing folders and redeliveries days apart, on real Spark and Delta.

The oracle is the landing bytes themselves, re-read here: which ids are valid and which
delivery of each came first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.contracts import events_file
from jobs.ingest.steps import run_interval

pytestmark = [pytest.mark.spark, pytest.mark.long]  # ~5 min: many intervals, days apart

# Empty when it runs; a file lands in it afterwards (a stream consumer that was down).
H0 = tables.Interval.parse("2026-11-01T08:00:00+00:00", "2026-11-01T09:00:00+00:00")
H1 = tables.Interval.parse("2026-11-01T09:00:00+00:00", "2026-11-01T10:00:00+00:00")
H2 = tables.Interval.parse("2026-11-01T10:00:00+00:00", "2026-11-01T11:00:00+00:00")
H3 = tables.Interval.parse("2026-11-01T11:00:00+00:00", "2026-11-01T12:00:00+00:00")
# Three days later: a redelivery of e1 stamped two days after its first delivery.
LATER = tables.Interval.parse("2026-11-04T09:00:00+00:00", "2026-11-04T10:00:00+00:00")
TS_LATER = "2026-11-04T09:10:00Z"
KEPT = ("bronze_events", "quarantine", "events", "interactions")


def line(event_id: str, ts: str, user: str = "u1", kind: str = "purchase") -> bytes:
    rec = {"event_id": event_id, "ts": ts, "user_id": user, "item_id": "i1", "event_type": kind}
    return json.dumps(rec).encode()


def land(settings: Settings, interval: tables.Interval, part: str, lines: list[bytes]) -> Path:
    path = events_file(settings.events_dir, interval.start, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def run(settings: Settings, interval: tables.Interval, force: bool = False) -> dict:
    return run_interval(
        interval.start.isoformat(), interval.end.isoformat(), force=force, settings=settings
    )


def lake_settings(root: Path) -> Settings:
    return load_settings(
        data_root=root,
        spark_shuffle_partitions=1,
        spark_master="local[2]",
        quality_enabled=False,
    )


def hashes(spark: Any, settings: Settings, names: tuple[str, ...]) -> dict[str, str]:
    return {
        name: tables.content_hash(
            tables.read_or_create(spark, settings, name), exclude=("_ingested_at",)
        )
        for name in names
    }


@pytest.fixture(scope="module")
def late(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict]:
    """H0 (empty), H1 and H2 run; then files land late in H0's and H1's folders and H3 runs;
    then, days later, e1 is delivered again with a ``ts`` two days after its first one."""
    settings = lake_settings(tmp_path_factory.mktemp("late"))
    land(settings, H1, "a", [line(f"e{n}", f"2026-11-01T09:{n:02d}:00Z") for n in range(1, 6)])
    land(settings, H2, "a", [line("f1", "2026-11-01T10:05:00Z", user="u2")])
    out = {"h0": run(settings, H0), "h1": run(settings, H1), "h2": run(settings, H2)}
    land(settings, H0, "kafka-late", [line("z1", "2026-11-01T08:30:00Z", user="u4")])
    land(
        settings,
        H1,
        "late",
        [
            line("e6", "2026-11-01T09:30:00Z", user="u3"),
            line("e7", "2026-11-01T09:31:00Z", user="u3"),
            line("e1", "2026-11-01T09:59:00Z"),  # a redelivery of e1, within the batch's day
            b"{not json",
        ],
    )
    land(settings, H3, "a", [line("g1", "2026-11-01T11:05:00Z", user="u2")])
    out["h3"] = run(settings, H3)
    out["h3_again"] = run(settings, H3)
    land(settings, LATER, "a", [line("e1", "2026-11-03T09:00:00Z"), line("k1", TS_LATER)])
    out["later"] = run(settings, LATER)
    return settings, out


def test_a_late_file_is_loaded_by_the_next_run_and_balances(
    spark: Any, late: tuple[Settings, dict]
) -> None:
    settings, out = late
    reloaded = {r["batch_id"]: r for r in out["h3"]["late"]["reloaded"]}
    assert sorted(reloaded) == sorted([H0.batch_id, H1.batch_id])
    row = reloaded[H1.batch_id]
    assert row["status"] == "ok" and row["balanced"] is True
    # 5 + 4 lines: the 5 known events are already in silver, e1's redelivery is a
    # duplicate within the batch, the bad line is quarantined, e6 and e7 are new.
    assert (row["read_lines"], row["bronze_rows"]) == (9, 9)
    assert row["silver_inserted"] == 2
    assert row["duplicates_existing"] == 5 and row["duplicates_in_batch"] == 1
    assert row["quarantined"] == 1
    bronze = tables.read_or_create(spark, settings, "bronze_events")
    assert bronze.where(f"_batch_id = '{H1.batch_id}'").count() == 9
    # Only once: the next run of the same interval finds nothing late.
    assert out["h3_again"]["late"]["checked"] >= 2
    assert out["h3_again"]["late"]["reloaded"] == []


def test_late_events_reach_silver_and_gold_exactly_once(
    spark: Any, late: tuple[Settings, dict]
) -> None:
    settings, _ = late
    events = tables.read_or_create(spark, settings, "events").collect()
    ids = sorted(r.event_id for r in events)
    assert ids == ["e1", "e2", "e3", "e4", "e5", "e6", "e7", "f1", "g1", "k1", "z1"]
    weight = settings.event_weights["purchase"]
    gold = {
        (r.user_id, r.item_id): (r.n_events, r.weight)
        for r in tables.read_or_create(spark, settings, "interactions").collect()
    }
    # u1: e1..e5 and k1 (e1's redeliveries are not events of their own); u2: f1, g1; u3: e6,
    # e7; u4: z1 (late into an interval that was empty when it ran).
    assert gold == {
        ("u1", "i1"): (6, 6 * weight),
        ("u2", "i1"): (2, 2 * weight),
        ("u3", "i1"): (2, 2 * weight),
        ("u4", "i1"): (1, weight),
    }


def test_a_file_late_into_an_interval_that_ran_empty_is_loaded(
    late: tuple[Settings, dict],
) -> None:
    _, out = late
    assert out["h0"]["audit"]["read_lines"] == 0
    row = {r["batch_id"]: r for r in out["h3"]["late"]["reloaded"]}[H0.batch_id]
    assert row["status"] == "ok" and row["balanced"] is True
    assert (row["read_lines"], row["silver_inserted"]) == (1, 1)


def test_a_redelivery_days_later_is_still_a_duplicate(
    spark: Any, late: tuple[Settings, dict]
) -> None:
    settings, out = late
    audit = out["later"]["audit"]
    assert audit["balanced"] is True
    assert (audit["silver_inserted"], audit["duplicates_existing"]) == (1, 1)
    e1 = tables.read_or_create(spark, settings, "events").where("event_id = 'e1'").collect()
    assert len(e1) == 1 and str(e1[0].event_date) == "2026-11-01"  # the first delivery wins


def _expired_lake(spark: Any, root: Path) -> tuple[Settings, dict[str, str]]:
    """H1 loaded (good and bad lines), then its landing folder deleted."""
    settings = lake_settings(root)
    path = land(settings, H1, "a", [line("e1", "2026-11-01T09:01:00Z"), b"[]", b"{bad", b""])
    first = run(settings, H1)
    assert first["audit"]["status"] == "ok"
    before = hashes(spark, settings, KEPT)
    shutil.rmtree(path.parent)
    return settings, before


def test_an_expired_landing_folder_keeps_bronze_and_quarantine(
    spark: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings, before = _expired_lake(spark, tmp_path_factory.mktemp("expired"))
    again = run(settings, H1)
    assert again["bronze"]["landing_expired"] is True
    assert again["bronze"]["bronze_rows"] == 4
    assert again["bronze"]["skip"] is True  # the loaded fingerprint is still the one done
    assert hashes(spark, settings, KEPT) == before
    quarantine = tables.read_or_create(spark, settings, "quarantine")
    assert quarantine.where(f"_batch_id = '{H1.batch_id}'").count() == 3


def test_an_expired_landing_folder_of_an_unfinished_batch_is_refined_from_bronze(
    spark: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A batch no run finished (its audit row is not ok) is refined again from bronze's copy
    and balances, and says that landing is incomplete."""
    from delta.tables import DeltaTable

    settings, before = _expired_lake(spark, tmp_path_factory.mktemp("expired-unfinished"))
    audit = DeltaTable.forPath(spark, tables.path(settings, "ingest_audit"))
    audit.update(set={"status": "'unbalanced'"})
    again = run(settings, H1)
    assert again["bronze"]["landing_expired"] is True and again["bronze"]["skip"] is False
    assert again["audit"]["status"] == "ok" and again["audit"]["read_lines"] == 4
    assert again["audit"]["quality"]["landing_complete"] is False
    assert hashes(spark, settings, KEPT) == before


def test_forcing_an_expired_interval_replaces_it_with_what_landing_holds(
    spark: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings, _ = _expired_lake(spark, tmp_path_factory.mktemp("expired-forced"))
    forced = run(settings, H1, force=True)
    assert forced["bronze"]["landing_expired"] is False and forced["bronze"]["bronze_rows"] == 0
    bronze = tables.read_or_create(spark, settings, "bronze_events")
    assert bronze.where(f"_batch_id = '{H1.batch_id}'").count() == 0
    # Silver is insert-only: the event loaded earlier stays.
    assert tables.read_or_create(spark, settings, "events").count() == 1


def test_a_late_reload_that_died_after_bronze_is_retried(spark: Any, tmp_path: Path) -> None:
    from jobs.ingest.steps import bronze_step

    settings = lake_settings(tmp_path)
    land(settings, H1, "a", [line("e1", "2026-11-01T09:01:00Z")])
    land(settings, H2, "a", [line("f1", "2026-11-01T10:05:00Z", user="u2")])
    run(settings, H1)
    run(settings, H2)
    land(settings, H1, "late", [line("e8", "2026-11-01T09:40:00Z", user="u3")])
    # The first reload of H1 died (SIGKILL, a storage error) right after its bronze write:
    # bronze now names the late file, but neither silver nor the audit saw it.
    bronze_step(H1.start.isoformat(), H1.end.isoformat(), settings=settings)
    land(settings, H3, "a", [line("g1", "2026-11-01T11:05:00Z", user="u2")])
    out = run(settings, H3)
    assert [r["batch_id"] for r in out["late"]["reloaded"]] == [H1.batch_id]
    assert out["late"]["failed"] == []
    ids = {r.event_id for r in tables.read_or_create(spark, settings, "events").collect()}
    assert ids == {"e1", "e8", "f1", "g1"}
    users = {r.user_id for r in tables.read_or_create(spark, settings, "interactions").collect()}
    assert "u3" in users
    # Finished now: the next run leaves H1 alone.
    assert run(settings, H3)["late"]["reloaded"] == []
