"""Gold kept trustworthy on real Spark and Delta: marks past any number of commits, silver
corrections and deletes, rebuilds equal to the incremental path, weights changes, upkeep.

Every lake here is a copy of one small module-scoped lake (Delta tables are relocatable
folders), so each test changes only its own copy and runs alone.
"""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs import tables
from jobs.config import ConfigError, Settings, load_settings
from jobs.ingest import gold
from jobs.ingest.maintenance import maintain
from jobs.ingest.steps import run_interval
from jobs.sources.shop import generate

pytestmark = [pytest.mark.spark, pytest.mark.long]  # 200 commits, a ~1.5 min set-up

PARAMS: dict[str, Any] = {
    "gen_users": 150,
    "gen_items": 40,
    "spark_shuffle_partitions": 2,
    "spark_master": "local[2]",
    "quality_enabled": False,
}
INTERVALS = (
    ("2026-11-01T06:00:00+00:00", "2026-11-01T12:00:00+00:00"),
    ("2026-11-01T12:00:00+00:00", "2026-11-01T18:00:00+00:00"),
)
GOLD = (*gold.ADDITIVE, "item_stats")


def _clone(settings: Settings, root: Path, **overrides: Any) -> Settings:
    """A private copy of a lake (and its landing folder)."""
    shutil.copytree(settings.data_root, root, dirs_exist_ok=True)
    return load_settings(data_root=root, **{**PARAMS, **overrides})


@pytest.fixture(scope="module")
def base(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two intervals ingested incrementally."""
    settings = load_settings(data_root=tmp_path_factory.mktemp("gold-base"), **PARAMS)
    generate(settings, days=1)
    for start, end in INTERVALS:
        run_interval(start, end, settings=settings)
    return settings


@pytest.fixture(scope="module")
def corrected(spark: Any, base: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """``base`` after silver corrections (UPDATEs) and deletes, applied incrementally."""
    settings = _clone(base, tmp_path_factory.mktemp("gold-corrected"))
    _correct_silver(spark, settings)
    gold.update(spark, settings)
    return settings


def _correct_silver(spark: Any, settings: Settings) -> None:
    """Real UPDATEs and DELETEs on silver that lower maxima and raise minima."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    events = tables.read_or_create(spark, settings, "events")
    users = [r.user_id for r in events.groupBy("user_id").count().orderBy("user_id").collect()]
    assert len(users) >= 6
    silver = DeltaTable.forPath(spark, tables.path(settings, "events"))
    newest = {
        r.user_id: r.event_id
        for r in events.where(F.col("user_id").isin(users[:4]))
        .groupBy("user_id")
        .agg(F.max_by("event_id", "ts").alias("event_id"))
        .collect()
    }
    first = events.where(F.col("user_id") == users[4]).orderBy("ts").first()
    # Corrections: a type changed (moves weight and counts), a newest event moved a day back
    # (lowers last_ts), the first event moved an hour later (raises first_ts).
    silver.update(F.col("event_id") == newest[users[0]], {"event_type": F.lit("impression")})
    silver.update(
        F.col("event_id") == newest[users[1]],
        {
            "ts": F.col("ts") - F.expr("INTERVAL 1 DAY"),
            "event_date": F.date_sub(F.col("event_date"), 1),
        },
    )
    silver.update(
        F.col("event_id") == first.event_id,
        {"ts": F.lit(first.ts + timedelta(hours=1))},
    )
    silver.update(F.col("event_type") == "view", {"event_type": F.lit("click")})
    # Deletes: a newest event (last_ts falls back) and a whole user (GDPR erasure).
    silver.delete(F.col("event_id") == newest[users[2]])
    silver.delete(F.col("user_id") == users[3])


def _expected(spark: Any, settings: Settings) -> dict[str, dict]:
    """Gold as a second, plain-Python reading of silver."""
    weights = settings.event_weights
    inter: dict[tuple, list] = defaultdict(lambda: [0.0, 0, None])
    users: dict[str, Counter] = defaultdict(Counter)
    stamps: dict[str, list] = {}
    daily: dict[tuple, Counter] = defaultdict(Counter)
    for r in tables.read_or_create(spark, settings, "events").collect():
        if weights[r.event_type] > 0:
            row = inter[(r.user_id, r.item_id)]
            row[0] += weights[r.event_type]
            row[1] += 1
            row[2] = r.ts if row[2] is None else max(row[2], r.ts)
        users[r.user_id]["n_events"] += 1
        users[r.user_id][r.event_type] += 1
        lo, hi = stamps.get(r.user_id, (r.ts, r.ts))
        stamps[r.user_id] = [min(lo, r.ts), max(hi, r.ts)]
        daily[(r.item_id, r.event_date)][r.event_type] += 1
        daily[(r.item_id, r.event_date)]["weight"] += weights[r.event_type]
    return {
        "interactions": {k: tuple(v) for k, v in inter.items()},
        "user_stats": {
            u: (c["n_events"], c["impression"], c["click"], c["purchase"], *stamps[u])
            for u, c in users.items()
        },
        "item_daily": {
            k: (c["impression"], c["view"], c["click"], c["purchase"], c["weight"])
            for k, c in daily.items()
        },
    }


def _actual(spark: Any, settings: Settings) -> dict[str, dict]:
    read = lambda name: tables.read_or_create(spark, settings, name).collect()  # noqa: E731
    return {
        "interactions": {
            (r.user_id, r.item_id): (r.weight, r.n_events, r.last_ts) for r in read("interactions")
        },
        "user_stats": {
            r.user_id: (r.n_events, r.impressions, r.clicks, r.purchases, r.first_ts, r.last_ts)
            for r in read("user_stats")
        },
        "item_daily": {
            (r.item_id, r.event_date): (r.impressions, r.views, r.clicks, r.purchases, r.weight)
            for r in read("item_daily")
        },
    }


def _hashes(spark: Any, settings: Settings) -> dict[str, str]:
    """Content of each gold table; doubles rounded (sums in another order may differ in
    the last bit)."""
    from pyspark.sql import functions as F

    out = {}
    for name in GOLD:
        frame = tables.read_or_create(spark, settings, name)
        frame = frame.select(
            *(
                F.round(F.col(f.name), 6).alias(f.name)
                if f.dataType.typeName() == "double"
                else F.col(f.name)
                for f in frame.schema.fields
            )
        )
        out[name] = tables.content_hash(frame)
    return out


def test_silver_corrections_and_deletes_reach_gold(spark: Any, corrected: Settings) -> None:
    result = gold.update(spark, corrected)  # nothing left to apply
    assert result.changed_rows == 0
    silver_version = tables.version(spark, corrected, "events")
    changes = gold.changes_since(spark, corrected, -1, silver_version)
    kinds = {r["_change_type"] for r in changes.select("_change_type").distinct().collect()}
    assert {"update_preimage", "update_postimage", "delete"} <= kinds
    assert _actual(spark, corrected) == _expected(spark, corrected)


def test_rebuild_equals_the_incremental_result(
    spark: Any, corrected: Settings, tmp_path: Path
) -> None:
    settings = _clone(corrected, tmp_path / "rebuilt")
    incremental = _hashes(spark, settings)
    silver_version = tables.version(spark, settings, "events")
    before = {n: tables.version(spark, settings, n) for n in gold.ADDITIVE}
    result = gold.rebuild(spark, settings)
    assert result.silver_version == silver_version
    # One overwrite commit per table, stamped with the pinned version.
    for name in gold.ADDITIVE:
        assert tables.version(spark, settings, name) == before[name] + 1
        assert tables.applied_version(spark, settings, name, "events") == silver_version
    assert _hashes(spark, settings) == incremental
    assert gold.update(spark, settings).changed_rows == 0


def test_rebuild_at_a_pinned_version_equals_gold_of_that_version(
    spark: Any, base: Settings, corrected: Settings, tmp_path: Path
) -> None:
    settings = _clone(corrected, tmp_path / "pinned")
    gold.rebuild(spark, settings, version=tables.version(spark, base, "events"))
    assert _hashes(spark, settings) == _hashes(spark, base)
    # The incremental path continues from the pin: corrections are applied once again.
    gold.update(spark, settings)
    assert _hashes(spark, settings) == _hashes(spark, corrected)


def test_the_mark_is_found_past_200_unmarked_commits_and_optimize(
    spark: Any, base: Settings, tmp_path: Path
) -> None:
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    settings = _clone(base, tmp_path / "busy")
    location = tables.path(settings, "interactions")
    applied = tables.applied_version(spark, settings, "interactions", "events")
    for n in range(201):  # commits without marks (as DELETEs or property changes make)
        spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ('recflow.n' = '{n}')")
    maintain(spark, settings, ("interactions",))  # OPTIMIZE (and VACUUM) on top of them
    recent = DeltaTable.forPath(spark, location).history(200).collect()
    assert not any(r.userMetadata for r in recent)  # the old 200-commit search finds none
    assert tables.applied_version(spark, settings, "interactions", "events") == applied
    # One silver correction is then applied exactly once.
    silver = DeltaTable.forPath(spark, tables.path(settings, "events"))
    one = tables.read_or_create(spark, settings, "events").where("event_type = 'view'").first()
    silver.update(F.col("event_id") == one.event_id, {"event_type": F.lit("purchase")})
    result = gold.update(spark, settings)
    assert result.applied_from["interactions"] == applied
    assert _actual(spark, settings) == _expected(spark, settings)


def test_gold_with_rows_but_no_mark_refuses_to_replay(spark: Any, tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path, **PARAMS)
    assert tables.applied_version(spark, settings, "interactions", "events") == -1
    row = spark.createDataFrame([("u1", "i1", 1.0, 1, None)], tables.TABLES["interactions"].ddl)
    row.write.format("delta").mode("append").save(tables.path(settings, "interactions"))
    with pytest.raises(tables.MissingMarkError, match="rebuild-gold"):
        tables.applied_version(spark, settings, "interactions", "events")
    with pytest.raises(tables.MissingMarkError):
        gold.update(spark, settings)


def test_changed_weights_need_a_rebuild(spark: Any, base: Settings, tmp_path: Path) -> None:
    weights = {**base.event_weights, "view": 3.0, "impression": 0.5}
    settings = _clone(base, tmp_path / "weights", event_weights=weights)
    before = {n: tables.version(spark, settings, n) for n in GOLD}
    with pytest.raises(gold.RebuildNeededError, match="recflow rebuild-gold"):
        gold.update(spark, settings)
    assert {n: tables.version(spark, settings, n) for n in GOLD} == before
    gold.rebuild(spark, settings)
    assert _actual(spark, settings) == _expected(spark, settings)
    assert gold.update(spark, settings).changed_rows == 0


def test_maintenance_keeps_deltas_retention_check(
    spark: Any, base: Settings, tmp_path: Path
) -> None:
    from delta.tables import DeltaTable

    assert spark.conf.get("spark.databricks.delta.retentionDurationCheck.enabled", "true") == (
        "true"
    )
    with pytest.raises(ConfigError, match="VACUUM_RETENTION_HOURS"):
        load_settings(vacuum_retention_hours=1)
    settings = _clone(base, tmp_path / "upkeep")
    with pytest.raises(Exception, match=r"(?i)retention"):
        DeltaTable.forPath(spark, tables.path(settings, "events")).vacuum(0)
    hashes = _hashes(spark, settings)
    done = {m.table: m for m in maintain(spark, settings)}
    assert set(GOLD) <= set(done)
    assert all(m.files_after <= m.files_before for m in done.values())
    assert done["interactions"].files_after == 1  # compacted
    assert _hashes(spark, settings) == hashes
