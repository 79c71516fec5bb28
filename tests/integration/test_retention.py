"""Retention against real stores: landing files, bronze and quarantine in Delta, a Great
Expectations project, Feast parquet snapshots, the local bucket and the MLflow registry.

One world is seeded once with entries on both sides of every limit (dates counted back
from a fixed ``NOW`` handed to the functions, so nothing sleeps); a dry run, a real run
and a rerun are made on it, and each test reads one store's outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import clustered_model, register_champion

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.contracts import hour_partition
from jobs.features.definitions import sources_dir
from jobs.features.export import stamp_name
from jobs.privacy.retention import retention_step
from jobs.publish import layout
from jobs.publish.steps import current, publish_all, publishes, rollback, score_step
from jobs.publish.storage import open_store

pytestmark = [pytest.mark.integration, pytest.mark.spark]

# On a whole hour, so landing hour folders line up with the limits.
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
LIMITS = {
    "late_data_hours": 48,
    "retention_landing_days": 10,
    "retention_bronze_days": 20,
    "retention_quarantine_days": 20,
    "retention_quality_days": 10,
    "feast_ttl_days": 3,
    "retention_feast_snapshot_days": 5,
    "retention_staging_hours": 24,
    "retention_model_versions": 2,
    "publish_keep": 1,
    # Seeding publishes A, B, C and rolls back to A: each needs a slot of its own (with
    # the default of one slot per kept publish, C would have taken A's).
    "publish_slots": 3,
}


def _ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


def _land_hour(settings: Settings, hour: datetime, n: int) -> Path:
    folder = settings.events_dir / hour_partition(hour)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'{{"event_id": "e-{hour:%Y%m%d%H}-{i}", "user_id": "u{i}"}}' for i in range(n)]
    (folder / "part-0.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _seed_bronze(spark: Any, settings: Settings, folders: list[Path]) -> None:
    """Bronze rows of each landing hour as ``load_events`` writes them, in one commit.

    The lines are read by Spark, so ``_source_file`` is the URI Spark gives a file (what
    retention's landing check reads back); one write instead of a load per hour.
    """
    from pyspark.sql import functions as F

    frames = []
    for folder in folders:
        day, hour = folder.parent.name.removeprefix("dt="), int(folder.name.removeprefix("hr="))
        start = datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)
        interval = tables.Interval(start, start + timedelta(hours=1))
        frames.append(
            spark.read.text(str(folder / "part-0.jsonl")).select(
                "value",
                F.col("_metadata.file_path").alias("_source_file"),
                F.lit(interval.batch_id).alias("_batch_id"),
                F.lit("seeded").alias("_fingerprint"),
                F.lit(start.replace(tzinfo=None)).cast("timestamp").alias("_interval_start"),
                F.lit(interval.end.replace(tzinfo=None)).cast("timestamp").alias("_interval_end"),
                F.current_timestamp().alias("_ingested_at"),
                F.lit(day).cast("date").alias("_dt"),
            )
        )
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame)
    rows.write.format("delta").mode("append").save(
        tables.ensure_table(spark, settings, "bronze_events")
    )


def _bronze_days(spark: Any, settings: Settings, name: str) -> dict[str, int]:
    rows = tables.read_or_create(spark, settings, name).groupBy("_dt").count().collect()
    return {f"{r['_dt']:%Y-%m-%d}": int(r["count"]) for r in rows}


def _snapshot(folder: Path) -> None:
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["u1"], "n": [1]}), folder / "part-0.parquet")


def _state(spark: Any, settings: Settings) -> dict[str, Any]:
    """Everything retention may touch, listed independently of the retention module."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    gx = settings.gx_dir / "uncommitted"
    return {
        "landing": sorted(
            str(p.relative_to(settings.landing_dir)) for p in settings.landing_dir.rglob("*.jsonl")
        ),
        "bronze": _bronze_days(spark, settings, "bronze_events"),
        "quarantine": _bronze_days(spark, settings, "quarantine"),
        "gx": sorted(str(p.relative_to(gx)) for p in gx.rglob("*") if p.is_file()),
        "feast": sorted(
            str(p.relative_to(sources_dir(settings))) for p in sources_dir(settings).rglob("*")
        ),
        "bucket": sorted(key for key, _ in open_store(settings).list("")),
        "versions": sorted(
            int(v.version) for v in client.search_model_versions(f"name='{settings.model_name}'")
        ),
    }


@pytest.fixture(scope="module")
def world(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from mlflow import MlflowClient
    from pyspark.sql import functions as F

    from jobs.ingest.quality import check_bronze, refresh_docs_index
    from jobs.model.promotion import TAG_PROMOTED_FROM
    from jobs.model.registry import BEST, CHALLENGER

    root = tmp_path_factory.mktemp("retention")
    settings = load_settings(data_root=root / "var", publish_k=10, **LIMITS)
    seeding = settings.model_copy(update={"publish_keep": 10})
    w: dict[str, Any] = {"settings": settings}

    # Landing and bronze: 40 days old (both go), 15 days (landing goes, bronze stays), 1 day
    # (both stay), and an old hour bronze never loaded (kept: it exists nowhere else).
    hours = {"old": _ago(days=40, hours=3), "mid": _ago(days=15, hours=3), "new": _ago(hours=27)}
    hours = {k: h.replace(hour=5) for k, h in hours.items()}
    w["hours"] = hours
    _seed_bronze(spark, settings, [_land_hour(settings, hour, 3) for hour in hours.values()])
    w["unloaded"] = _land_hour(settings, _ago(days=30).replace(hour=7), 2)
    for key, day in (("catalog_old", _ago(days=40)), ("catalog_new", _ago(days=1))):
        folder = settings.catalog_dir / f"dt={day:%Y-%m-%d}"
        folder.mkdir(parents=True)
        (folder / "items.jsonl").write_text('{"item_id": "i1"}\n')
        w[key] = folder
    catalog = spark.read.text([str(w[k] / "items.jsonl") for k in ("catalog_old", "catalog_new")])
    catalog.select(
        "value",
        F.col("_metadata.file_path").alias("_source_file"),
        F.lit("catalog").alias("_batch_id"),
        F.lit("seeded").alias("_fingerprint"),
        F.current_timestamp().alias("_ingested_at"),
    ).write.format("delta").mode("append").save(
        tables.ensure_table(spark, settings, "bronze_items")
    )

    # Quarantine: one old and one new day.
    location = tables.ensure_table(spark, settings, "quarantine")
    rows = [
        ("events", "bad line", "bad_json", None, None, "b", None, _ago(days=40).date()),
        ("events", "bad line", "bad_json", None, None, "b", None, _ago(days=1).date()),
    ]
    schema = tables.TABLES["quarantine"].ddl
    spark.createDataFrame(rows, schema).write.format("delta").mode("append").save(location)

    # Great Expectations: a real result of the newest batch, and a copy dated 40 days back
    # (results and Data Docs pages), listed in the index.
    new = hours["new"]
    check_bronze(spark, settings, tables.Interval(new, new + timedelta(hours=1)))
    old_stamp = f"{_ago(days=40):%Y%m%dT%H%M%S}.000000Z"
    uncommitted = settings.gx_dir / "uncommitted"
    for base in (uncommitted / "validations", uncommitted / "data_docs/local_site/validations"):
        (run,) = [p for p in base.glob("*/*/*") if p.is_dir()]
        copy = run.with_name(old_stamp)
        copy.mkdir()
        for f in run.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
    refresh_docs_index(settings)
    w["gx_old_stamp"] = old_stamp
    w["gx_new_stamp"] = run.name
    assert old_stamp in (uncommitted / "data_docs/local_site/index.html").read_text()

    # Feast: user_stats has old snapshots and a new one; item_stats only an old one (its
    # newest: kept); an old temporary of a crashed export goes.
    feast = sources_dir(settings)
    for days in (10, 6, 1):
        _snapshot(feast / "user_stats" / stamp_name(_ago(days=days)))
    _snapshot(feast / "item_stats" / stamp_name(_ago(days=10)))
    _snapshot(feast / "user_stats" / f"_tmp-{stamp_name(_ago(days=9))}-abcd1234")

    # Registry: v1 champion (its predecessor v4), v2 best, v3 challenger, v5..v7 plain.
    model = clustered_model()
    v1 = register_champion(settings, model, root / "work")
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    first = client.get_model_version(settings.model_name, v1)
    for _ in range(6):
        client.create_model_version(settings.model_name, first.source, run_id=first.run_id)
    client.set_registered_model_alias(settings.model_name, BEST, "2")
    client.set_registered_model_alias(settings.model_name, CHALLENGER, "3")
    client.set_model_version_tag(settings.model_name, v1, TAG_PROMOTED_FROM, "4")

    # Publishes A, B, C two days back (all kept while seeding), then A made live again;
    # a stage scored 30 h ago and never uploaded (abandoned), and one 2 h ago (in flight).
    stock = {f"item-{i}": True for i in range(90)}
    ids = [
        publish_all(seeding, generated_at=_ago(hours=h), in_stock=stock)["publish_id"]
        for h in (50, 49, 48)
    ]
    rollback(seeding, ids[0])
    abandoned = score_step(_ago(hours=30), None, stock, None, False, seeding)["publish_id"]
    fresh = score_step(_ago(hours=2), None, stock, None, False, seeding)["publish_id"]
    w.update(publish_ids=ids, abandoned=abandoned, fresh=fresh)

    w["before"] = _state(spark, settings)
    w["dry"] = retention_step(settings, now=NOW, dry_run=True)
    w["after_dry"] = _state(spark, settings)
    w["run"] = retention_step(settings, now=NOW.isoformat())
    w["after"] = _state(spark, settings)
    w["rerun"] = retention_step(settings, now=NOW)
    w["after_rerun"] = _state(spark, settings)
    return w


def test_landing_goes_once_bronze_holds_it(world: dict[str, Any]) -> None:
    settings, hours = world["settings"], world["hours"]
    run = world["run"]["landing"]
    rel = {k: hour_partition(h) for k, h in hours.items()}
    old_catalog = str(world["catalog_old"].relative_to(settings.landing_dir))
    assert sorted(run["removed"]) == sorted(
        [f"events/{rel['old']}", f"events/{rel['mid']}", old_catalog]
    )
    assert not (settings.events_dir / rel["old"]).exists()
    assert not (settings.events_dir / rel["mid"]).exists()
    assert not world["catalog_old"].exists()
    assert (settings.events_dir / rel["new"] / "part-0.jsonl").exists()
    assert (world["catalog_new"] / "items.jsonl").exists()
    # Never loaded into bronze: kept, and said so.
    assert (world["unloaded"] / "part-0.jsonl").exists()
    assert [k.split(" ")[0] for k in run["kept"]] == [
        str(world["unloaded"].relative_to(settings.landing_dir))
    ]


def test_bronze_and_quarantine_lose_only_old_days(world: dict[str, Any]) -> None:
    hours = world["hours"]
    old, mid, new = (f"{hours[k]:%Y-%m-%d}" for k in ("old", "mid", "new"))
    assert world["before"]["bronze"] == {old: 3, mid: 3, new: 3}
    assert world["after"]["bronze"] == {mid: 3, new: 3}
    assert world["run"]["bronze_events"]["removed"] == [f"_dt={old}"]
    assert world["run"]["bronze_events"]["rows"] == 3
    q_old, q_new = f"{_ago(days=40):%Y-%m-%d}", f"{_ago(days=1):%Y-%m-%d}"
    assert world["before"]["quarantine"] == {q_old: 1, q_new: 1}
    assert world["after"]["quarantine"] == {q_new: 1}


def test_quality_results_and_docs_pages_go_and_the_index_follows(world: dict[str, Any]) -> None:
    old, new = world["gx_old_stamp"], world["gx_new_stamp"]
    assert len(world["run"]["quality"]["removed"]) == 2  # the result and its page
    assert any(old in f for f in world["before"]["gx"])
    assert not any(old in f for f in world["after"]["gx"])
    assert sum(new in f for f in world["after"]["gx"]) == 2
    index = world["settings"].gx_dir / "uncommitted/data_docs/local_site/index.html"
    assert old not in index.read_text() and new in index.read_text()


def test_feast_keeps_new_snapshots_and_each_views_newest(world: dict[str, Any]) -> None:
    user_stats = sorted(world["run"]["feast_snapshots"]["removed"])
    assert user_stats == sorted(
        [
            f"user_stats/{stamp_name(_ago(days=10))}",
            f"user_stats/{stamp_name(_ago(days=6))}",
            f"user_stats/_tmp-{stamp_name(_ago(days=9))}-abcd1234",
        ]
    )
    feast = sources_dir(world["settings"])
    assert (feast / "user_stats" / stamp_name(_ago(days=1)) / "part-0.parquet").exists()
    assert (feast / "item_stats" / stamp_name(_ago(days=10)) / "part-0.parquet").exists()


def test_the_live_publish_and_fresh_stages_stay(world: dict[str, Any]) -> None:
    settings = world["settings"]
    a, b, c = world["publish_ids"]
    assert world["run"]["publishes"]["removed"] == [b]
    assert sorted(world["run"]["staging"]["removed"]) == sorted([b, c, world["abandoned"]])
    assert world["run"]["staging"]["kept"] == [f"{a} (live)"]
    assert [p["publish_id"] for p in publishes(settings)] == [a, c]
    assert current(settings)["publish_id"] == a  # still live, still complete
    staged = {
        pid
        for key in world["after"]["bucket"]
        if (pid := layout.staged_id_of(key, settings.publish_prefix))
    }
    assert staged == {a, world["fresh"]}


def test_model_versions_keep_newest_and_every_protected_one(world: dict[str, Any]) -> None:
    assert world["before"]["versions"] == [1, 2, 3, 4, 5, 6, 7]
    assert world["run"]["model_versions"]["removed"] == ["v5"]
    assert world["after"]["versions"] == [1, 2, 3, 4, 6, 7]
    kept = " ".join(world["run"]["model_versions"]["kept"])
    for needle in ("v1 (alias champion)", "v2 (alias best)", "v3 (alias challenger)", "v4 ("):
        assert needle in kept


def test_a_dry_run_lists_the_same_and_removes_nothing(world: dict[str, Any]) -> None:
    assert world["after_dry"] == world["before"]
    for store, swept in world["run"].items():
        assert sorted(world["dry"][store]["removed"]) == sorted(swept["removed"]), store


def test_a_second_run_removes_nothing(world: dict[str, Any]) -> None:
    assert {s: r["removed"] for s, r in world["rerun"].items() if r["removed"]} == {}
    assert world["after_rerun"] == world["after"]
