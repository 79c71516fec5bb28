"""The catalog object of a real publish: a champion registered in MLflow, published to the
local bucket, its catalog.json named by latest.json, checked by verify, idempotent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import register_champion

from jobs.config import load_settings
from jobs.publish import layout
from jobs.publish.steps import (
    PublishError,
    current,
    flip_step,
    publish_all,
    read_manifest,
    read_stock,
    score_step,
    upload_step,
    verify_step,
)
from jobs.publish.storage import open_store
from jobs.sources.shop import ShopSpec, build_world
from jobs.sources.storefront import reference_model

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def shop(tmp_path: Path):
    settings = load_settings(data_root=tmp_path / "var", gen_users=60, gen_items=40, publish_k=5)
    world = build_world(ShopSpec.from_settings(settings))
    model = reference_model(world, "oracle")
    register_champion(settings, model, tmp_path / "work")
    rows = world.items.to_dict("records")
    # Half the catalog out of stock for the lists, whatever the rows say.
    stock = {r["item_id"]: i % 2 == 0 for i, r in enumerate(rows)}
    return settings, model, rows, stock


def test_a_publish_writes_the_catalog_latest_names_it_and_verify_checks_it(shop) -> None:
    settings, model, rows, stock = shop
    store = open_store(settings)
    pid = publish_all(settings, generated_at=T0, in_stock=stock, catalog_rows=rows)["publish_id"]
    pointer = current(settings, store)
    assert pointer["catalog"] == layout.catalog_key("", pid)
    data = store.get(pointer["catalog"])
    body = layout.decode(data)
    assert body["publish_id"] == pid and list(body["items"]) == [str(i) for i in model.item_ids]
    assert {i: c["in_stock"] for i, c in body["items"].items()} == stock
    by_id = {r["item_id"]: r for r in rows}
    assert all(c["title"] == by_id[i]["title"] for i, c in body["items"].items())
    manifest = read_manifest(store, "", pid)
    assert manifest["catalog"] == {
        "key": pointer["catalog"],
        "md5": layout.md5_hex(data),
        "items": len(model.item_ids),
    }
    assert layout.headers_for(pointer["catalog"], 60)["Cache-Control"] == layout.IMMUTABLE
    # Every listed item in stock for the lists is in stock on its card.
    user_key = layout.user_key(settings.hmac_secret(), str(model.user_ids[0]))
    listed = layout.decode(store.get(pointer["users"].format(kk=user_key[:2], key=user_key)))
    assert all(body["items"][i["item_id"]]["in_stock"] for i in listed["items"])

    store.put(pointer["catalog"], layout.encode({"items": {}}), layout.headers_for("x", 60))
    with pytest.raises(PublishError, match=r"catalog\.json"):
        verify_step(pid, store, settings)


def test_a_rerun_uploads_the_same_bytes(shop) -> None:
    settings, _, rows, stock = shop
    store = open_store(settings)
    pid = score_step(T0, None, stock, None, False, settings, store, rows)["publish_id"]
    upload_step(pid, store, False, settings)
    first = store.get(layout.catalog_key("", pid))
    score_step(T0, None, stock, None, False, settings, store, rows)
    upload_step(pid, store, False, settings)
    assert store.get(layout.catalog_key("", pid)) == first
    verify_step(pid, store, settings)


def test_a_missing_staged_catalog_stops_the_upload(shop) -> None:
    settings, _, rows, stock = shop
    store = open_store(settings)
    pid = score_step(T0, None, stock, None, False, settings, store, rows)["publish_id"]
    store.delete([f"{layout.staging_root('', pid)}catalog.json"])
    with pytest.raises(PublishError, match="staged catalog"):
        upload_step(pid, store, False, settings)


def test_without_rows_or_above_the_cap_there_is_no_catalog(shop, tmp_path: Path) -> None:
    settings, _, rows, stock = shop
    store = open_store(settings)
    pid = publish_all(settings, generated_at=T0, in_stock=stock)["publish_id"]
    assert current(settings, store)["catalog"] is None
    assert store.get(layout.catalog_key("", pid)) is None
    capped = settings.model_copy(update={"publish_catalog_max_items": 10})
    later = publish_all(capped, generated_at=T0.replace(hour=7), in_stock=stock, catalog_rows=rows)
    assert current(capped, store)["catalog"] is None
    verify_step(later["publish_id"], store, capped)
    # A rollback to a publish without a catalog flips to a pointer naming none.
    assert flip_step(pid, store, settings)["publish_id"] == pid
    assert current(settings, store)["catalog"] is None


def test_stock_and_cards_come_from_silver_items_read_by_spark(shop, spark) -> None:
    """The DAG's path: no stock given, so score reads silver ``items`` (one Delta version)."""
    from jobs import tables

    settings, _, rows, _ = shop
    schema = tables.read_or_create(spark, settings, "items").schema  # silver's own columns
    silver = [
        {
            **{f.name: r.get(f.name) for f in schema.fields},
            "price": float(r["price"]),
            "updated_at": datetime.fromisoformat(str(r["updated_at"]).replace("Z", "+00:00"))
            .astimezone(UTC)
            .replace(tzinfo=None),
        }
        for r in rows
    ]
    silver[0]["title"] = "é" * 5000  # a silver title may be long: cut in Spark
    silver[1]["in_stock"] = False
    spark.createDataFrame(silver, schema).write.format("delta").mode("append").save(
        tables.path(settings, "items")
    )
    _, read, _ = read_stock(settings, spark)
    assert max(len(r["title"]) for r in read) == 201  # cut in Spark, before the driver
    scored = score_step(T0, settings=settings, spark=spark)
    assert scored["delta_versions"]["silver_items"] == 1  # created, then the rows appended
    store = open_store(settings)
    upload_step(scored["publish_id"], store, False, settings)
    verify_step(scored["publish_id"], store, settings)
    body = layout.decode(store.get(layout.catalog_key("", scored["publish_id"])))
    first, second = silver[0]["item_id"], silver[1]["item_id"]
    assert len(body["items"][first]["title"]) == 200 and body["items"][second]["in_stock"] is False
    assert {i: c["in_stock"] for i, c in body["items"].items()} == {
        r["item_id"]: r["in_stock"] is not False for r in silver
    }
