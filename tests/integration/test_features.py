"""Feast over the lake: real apply, export + materialize, online reads, increments.

One module-scoped lake of a small synthetic shop (quality gates off to keep it quick):
eleven hours are ingested and materialized (fixture ``at_end1``), then one more hour
arrives with a catalog update and is materialized (``at_end2``, built on ``at_end1``).
A test asks for the state it checks through these fixtures and compares the online store
with the lake as it is, so any subset runs alone and in any order.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.features import definitions, export, online
from jobs.ingest.steps import run_interval
from jobs.sources.shop import generate

pytestmark = [
    pytest.mark.spark,
    # dask (Feast's file offline store) on an empty materialization window; not ours.
    pytest.mark.filterwarnings("ignore:Downcasting object dtype arrays:FutureWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 1, tzinfo=UTC)
END1 = datetime(2026, 11, 1, 11, tzinfo=UTC)
END2 = END1 + timedelta(hours=1)
RECENT = 3  # small, so the top-N cut is exercised


@pytest.fixture(scope="module")
def shop(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = load_settings(
        data_root=tmp_path_factory.mktemp("features") / "var",
        spark_master="local[2]",
        spark_shuffle_partitions=2,
        gen_users=300,
        gen_items=60,
        quality_enabled=False,
        feast_recent_items=RECENT,
    )
    generate(settings, days=1)
    run_interval(START.isoformat(), END1.isoformat(), settings=settings)
    return {"settings": settings}


@pytest.fixture(scope="module")
def at_end1(spark: Any, shop: dict[str, Any]) -> dict[str, Any]:
    """The first materialization: the lake as of END1 in the online store."""
    settings: Settings = shop["settings"]
    definitions.apply(settings)
    rows = {name: frame.count() for name, frame in export.feature_frames(spark, settings).items()}
    return {"result": export.materialize(settings, END1, spark), "rows": rows}


@pytest.fixture(scope="module")
def at_end2(spark: Any, shop: dict[str, Any], at_end1: dict[str, Any]) -> dict[str, Any]:
    """One more hour with a catalog update (one item sold out), materialized up to END2."""
    settings: Settings = shop["settings"]
    before = gold_users(spark, settings)
    catalog = catalog_stock(spark, settings)
    sold_out = next(i for i, s in sorted(catalog.items()) if s)
    source = next(settings.catalog_dir.glob("dt=*/items.jsonl"))
    line = next(json.loads(x) for x in source.read_text().splitlines() if sold_out in x)
    update = settings.catalog_dir / "dt=2026-11-01-update" / "items.jsonl"
    update.parent.mkdir(parents=True)
    update.write_text(
        json.dumps({**line, "in_stock": False, "updated_at": "2026-11-01T11:30:00Z"}) + "\n"
    )
    run_interval(END1.isoformat(), END2.isoformat(), settings=settings)
    after = gold_users(spark, settings)
    definitions.apply(settings)  # what the DAG does first: progress must survive it
    applied_end = (
        definitions.store(settings).get_feature_view(definitions.USER_STATS).most_recent_end_time
    )
    return {
        "changed": {u for u, row in after.items() if before.get(u) != row},
        "users": len(after),
        "sold_out": sold_out,
        "end_after_apply": applied_end,
        "result": export.materialize(settings, END2, spark),
    }


# -- what the lake says (computed independently of jobs.features) ---------------------------
def gold_users(spark: Any, settings: Settings) -> dict[str, dict[str, Any]]:
    rows = tables.read_or_create(spark, settings, "user_stats").collect()
    return {r["user_id"]: r.asDict() for r in rows}


def expected_recent(spark: Any, settings: Settings) -> dict[str, list[str]]:
    frame = tables.read_or_create(spark, settings, "interactions").toPandas()
    frame = frame.sort_values(
        ["user_id", "last_ts", "weight", "item_id"], ascending=[True, False, False, True]
    )
    return {u: g["item_id"].head(RECENT).tolist() for u, g in frame.groupby("user_id")}


def catalog_stock(spark: Any, settings: Settings) -> dict[str, bool]:
    return {
        r["item_id"]: r["in_stock"]
        for r in tables.read_or_create(spark, settings, "items").collect()
    }


def assert_users_match(fs: Any, spark: Any, settings: Settings) -> None:
    gold = gold_users(spark, settings)
    answered = online.user_stats(fs, sorted(gold))
    assert set(answered) == set(gold)
    for user, row in gold.items():
        got = answered[user]
        for col in ("n_events", "impressions", "clicks", "add_to_carts", "purchases"):
            assert got[col] == row[col], (user, col)
        assert math.isclose(got["revenue"], row["revenue"] or 0.0)
        # Feast's UnixTimestamp holds whole seconds.
        assert got["last_event_ts"] == row["last_ts"].replace(microsecond=0, tzinfo=UTC)
    recent = expected_recent(spark, settings)
    assert online.recent_items(fs, sorted(gold)) == {u: recent.get(u, []) for u in gold}


# -- tests --------------------------------------------------------------------------------
def test_definitions_and_export_agree(spark: Any, shop: dict[str, Any]) -> None:
    from feast import Entity, FeatureService, FeatureView
    from feast.types import Array, String

    settings: Settings = shop["settings"]
    objects = definitions.definitions(settings)
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    entities = {o.name: o for o in objects if isinstance(o, Entity)}
    assert set(views) == set(definitions.VIEW_KEYS)
    frames = export.feature_frames(spark, settings)
    for name, view in views.items():
        assert view.online and view.ttl == timedelta(days=settings.feast_ttl_days)
        assert view.batch_source.path == str(settings.feast_dir / "sources" / name)
        (entity,) = view.entities
        assert entities[entity].join_key == definitions.VIEW_KEYS[name]
        wanted = {definitions.VIEW_KEYS[name], *(f.name for f in view.features)}
        assert set(frames[name].columns) == wanted, name
    recent = views[definitions.USER_RECENT_ITEMS].features[0]
    assert recent.name == "recent_item_ids" and recent.dtype == Array(String)
    (service,) = [o for o in objects if isinstance(o, FeatureService)]
    assert service.name == definitions.SERVICE
    assert {p.name for p in service.feature_view_projections} == set(views)


def test_changed_rows_exports_changes_tombstones_and_refreshes(spark: Any) -> None:
    end = datetime(2026, 11, 10, tzinfo=UTC)
    recently, long_ago = end - timedelta(hours=1), end - timedelta(days=20)
    schema = "user_id STRING, recent_item_ids ARRAY<STRING>, event_timestamp TIMESTAMP"
    previous = spark.createDataFrame(
        [
            ("same", ["a", "b"], recently),
            ("changed", ["c"], recently),
            ("stale", ["d"], long_ago),  # unchanged, but older than half the TTL
            ("erased", ["e"], recently),
            ("tombstoned", None, recently),  # erased before: not written again
        ],
        schema,
    )
    current = spark.createDataFrame(
        [("same", ["a", "b"]), ("changed", ["f", "c"]), ("stale", ["d"]), ("new", ["g"])],
        "user_id STRING, recent_item_ids ARRAY<STRING>",
    )
    rows = export.changed_rows(
        current, previous, "user_id", ["recent_item_ids"], end, end - timedelta(days=15)
    ).collect()
    got = {r["user_id"]: (r["recent_item_ids"], r["_gone"]) for r in rows}
    assert got == {
        "changed": (["f", "c"], False),
        "stale": (["d"], False),
        "new": (["g"], False),
        "erased": (None, True),
    }
    assert {r["event_timestamp"].replace(tzinfo=UTC) for r in rows} == {end}
    first = export.changed_rows(current, None, "user_id", ["recent_item_ids"], end, end)
    assert first.count() == 4


def test_apply_is_idempotent_and_drops_leftovers(shop: dict[str, Any]) -> None:
    from feast import FeatureView, Field, FileSource
    from feast.types import Int64

    settings: Settings = shop["settings"]
    definitions.apply(settings)
    fs = definitions.store(settings)
    leftover = FeatureView(
        name="obsolete",
        entities=[fs.get_entity("user")],
        ttl=timedelta(days=1),
        schema=[Field(name="x", dtype=Int64)],
        source=FileSource(path=str(settings.feast_dir / "nowhere"), timestamp_field="ts"),
    )
    fs.apply([leftover])
    assert "obsolete" in {v.name for v in fs.list_feature_views()}
    definitions.apply(settings)
    definitions.apply(settings)
    fs = definitions.store(settings)
    assert {v.name for v in fs.list_feature_views()} == set(definitions.VIEW_KEYS)
    assert {s.name for s in fs.list_feature_services()} == {definitions.SERVICE}
    assert {e.name for e in fs.list_entities()} >= {"user", "item"}


def test_materialize_and_read_online(
    spark: Any, shop: dict[str, Any], at_end1: dict[str, Any]
) -> None:
    settings: Settings = shop["settings"]
    result = at_end1["result"]
    assert result["end"] == END1.isoformat()
    for name, info in result["views"].items():
        n = at_end1["rows"][name]  # the view's rows in the lake at END1
        assert n > 0 and info["exported"] == info["materialized"] == n, (name, info)
        assert info["start"] == (END1 - timedelta(days=settings.feast_ttl_days)).isoformat()

    fs = definitions.store(settings)
    assert_users_match(fs, spark, settings)
    assert any(len(v) == RECENT for v in expected_recent(spark, settings).values())
    assert online.recent_items(fs, ["nobody", "nobody"]) == {"nobody": []}
    assert online.user_stats(fs, ["nobody"]) == {}
    assert online.recent_items(fs, []) == {} and online.stock(fs, []) == {}

    catalog = catalog_stock(spark, settings)
    assert online.stock(fs, [*sorted(catalog), "no-such-item"]) == catalog

    gold_items = {
        r["item_id"]: r for r in tables.read_or_create(spark, settings, "item_stats").collect()
    }
    online_items = online.item_stats(fs, [*sorted(gold_items), "no-such-item"])
    assert set(online_items) == set(gold_items)
    for item, row in gold_items.items():
        for col in ("impressions", "clicks", "purchases", "purchases_7d"):
            assert online_items[item][col] == row[col]
        assert math.isclose(online_items[item]["weight_7d"], row["weight_7d"])


def test_service_folds_in_a_new_user_from_their_feast_recent_items(
    spark: Any, shop: dict[str, Any], at_end1: dict[str, Any]
) -> None:
    """The online path end to end below HTTP: a user the model never saw, recent items
    read from the materialized store, fold-in, stock from the store."""
    import numpy as np

    from jobs.model.artifact import RecModel
    from jobs.model.ranking import Seen
    from jobs.model.stock import stock_mask
    from jobs.serve import answers, feature_source, schemas

    settings: Settings = shop["settings"]
    recent = expected_recent(spark, settings)
    user = next(u for u, items in sorted(recent.items()) if len(items) == RECENT)
    catalog = catalog_stock(spark, settings)
    items = sorted(catalog)
    rng = np.random.default_rng(0)
    model = RecModel(  # trained before this user arrived: knows the items, not the user
        user_ids=np.array(["someone-else"]),
        item_ids=np.array(items),
        user_factors=rng.normal(size=(1, 8)),
        item_factors=rng.normal(size=(len(items), 8)),
        popularity=rng.random(len(items)),
        seen=Seen.from_lists([[]]),
        params={"reg": 0.1, "alpha": 1.0},
    )
    source = feature_source.FeatureSource(settings)
    source.open()
    assert source.available, source.status
    mask = stock_mask(model, source.stock(items))
    answer = answers.recommend(
        answers.OnlineModel.of(model),
        schemas.RecommendRequest(user_id=user, k=5),
        recent_lookup=source.recent,
        stock_mask=mask,
    )
    assert answer.source == "fold_in" and answer.recent_source == "feast"
    got = {i.item_id for i in answer.items}
    assert got and not got & set(recent[user])  # what they just saw is not offered again
    assert not got & {i for i, ok in catalog.items() if not ok}
    stranger = answers.recommend(
        answers.OnlineModel.of(model),
        schemas.RecommendRequest(user_id="nobody-at-all", k=5),
        recent_lookup=source.recent,
        stock_mask=mask,
    )
    assert stranger.source == "popular" and stranger.recent_source is None


def test_new_hour_materializes_only_what_changed(
    spark: Any, shop: dict[str, Any], at_end2: dict[str, Any]
) -> None:
    settings: Settings = shop["settings"]
    changed, sold_out = at_end2["changed"], at_end2["sold_out"]
    assert changed and len(changed) < at_end2["users"]
    assert at_end2["end_after_apply"] == END1  # apply kept the materialization progress
    views = at_end2["result"]["views"]
    just_after = (END1 + timedelta(microseconds=1)).isoformat()
    assert all(v["start"] == just_after for v in views.values())
    assert views[definitions.USER_STATS]["exported"] == len(changed)
    assert views[definitions.USER_STATS]["materialized"] == len(changed)
    assert views[definitions.ITEM_STOCK]["exported"] == 1
    assert views[definitions.USER_RECENT_ITEMS]["exported"] <= len(changed)

    fs = definitions.store(settings)
    assert online.stock(fs, [sold_out]) == {sold_out: False}
    assert_users_match(fs, spark, settings)


def test_rerun_and_backfill_change_nothing(
    spark: Any, shop: dict[str, Any], at_end2: dict[str, Any]
) -> None:
    settings: Settings = shop["settings"]

    def snapshots() -> list[Path]:
        return sorted(p for p in definitions.sources_dir(settings).glob("*/*") if p.is_dir())

    folders = snapshots()
    again = export.materialize(settings, END2, spark)
    for name, info in again["views"].items():
        assert info["exported"] == at_end2["result"]["views"][name]["exported"]
        assert info["start"] == END2.isoformat()  # only this end's rows are rewritten
    assert snapshots() == folders

    old = export.materialize(settings, END1, spark)
    for info in old["views"].values():
        assert info["exported"] == 0 and "skipped" in info and "materialize_skipped" in info
    fs = definitions.store(settings)
    assert fs.get_feature_view(definitions.ITEM_STATS).most_recent_end_time == END2
    assert_users_match(fs, spark, settings)


def test_changed_definition_resets_its_snapshots(
    spark: Any, shop: dict[str, Any], tmp_path: Path
) -> None:
    settings: Settings = shop["settings"]
    own = load_settings(
        data_root=tmp_path / "var", lake_dir=settings.lake_dir, landing_dir=settings.landing_dir
    )
    n_items = tables.read_or_create(spark, own, "item_stats").count()
    first = export.export(spark, own, END1, {definitions.ITEM_STATS: ["clicks"]})
    assert first[definitions.ITEM_STATS] == {"exported": n_items, "removed": 0, "reset": False}
    wider = {definitions.ITEM_STATS: ["clicks", "impressions"]}
    second = export.export(spark, own, END2, wider)
    assert second[definitions.ITEM_STATS] == {"exported": n_items, "removed": 0, "reset": True}
    folder = definitions.sources_dir(own) / definitions.ITEM_STATS
    assert export.exported_stamps(folder) == [END2]


def test_feast_cli_applies_the_repository(tmp_path: Path) -> None:
    """``feast apply`` from feature_repo/ with the YAML's ${RECFLOW_DATA_ROOT}."""
    (tmp_path / "var").mkdir()
    env = {**os.environ, "RECFLOW_DATA_ROOT": str(tmp_path / "var")}
    feast = Path(sys.executable).parent / "feast"
    done = subprocess.run(
        [str(feast), "-c", str(ROOT / "feature_repo"), "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    fs = definitions.store(load_settings(data_root=tmp_path / "var"))
    assert {v.name for v in fs.list_feature_views()} == set(definitions.VIEW_KEYS)
    assert fs.get_feature_view(definitions.USER_STATS).batch_source.path == str(
        tmp_path / "var" / "feast" / "sources" / definitions.USER_STATS
    )


# -- Redis (the server fixture is in conftest.py) -------------------------------------------
def test_redis_online_store_serves_the_same(
    redis_port: int, spark: Any, shop: dict[str, Any], tmp_path: Path
) -> None:
    settings: Settings = shop["settings"]
    on_redis = load_settings(
        data_root=tmp_path / "var",  # own registry and sources, same lake
        lake_dir=settings.lake_dir,
        landing_dir=settings.landing_dir,
        feast_online_store="redis",
        feast_redis_connection=f"127.0.0.1:{redis_port}",
        feast_recent_items=RECENT,
    )
    definitions.apply(on_redis)
    result = export.materialize(on_redis, END2, spark)
    assert result["views"][definitions.USER_STATS]["materialized"] > 0
    fs = definitions.store(on_redis)
    assert fs.config.online_store.type == "redis"
    assert_users_match(fs, spark, on_redis)
    catalog = catalog_stock(spark, on_redis)
    assert online.stock(fs, sorted(catalog)) == catalog
