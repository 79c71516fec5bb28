"""The catalog step keeps ``gold/item_content`` current, through Spark and delta-rs:
every item embedded once, then only an item whose text changed, never for a price or
stock change; the no-JVM check agrees with what Spark's step would do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs import tables
from jobs.config import Settings
from jobs.content.encoder import default_encoder
from jobs.ingest.steps import _catalog_unchanged, catalog_step
from jobs.sources.shop import generate

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def _content(spark: Any, settings: Settings) -> dict[str, dict[str, Any]]:
    path = tables.ensure_table(spark, settings, "item_content")
    return {r["item_id"]: r.asDict() for r in spark.read.format("delta").load(path).collect()}


def _catalog_file(settings: Settings, day: str, rows: list[dict[str, Any]]) -> None:
    folder = settings.catalog_dir / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_items_are_embedded_once_and_again_only_when_their_text_changes(
    spark: Any, tmp_path: Path
) -> None:
    settings = Settings(
        data_root=tmp_path / "var", gen_users=60, gen_items=25, gen_days=1, quality_enabled=False
    )
    generate(settings, days=1)
    first = catalog_step(settings=settings)
    assert first["embedded"] == 25
    stored = _content(spark, settings)
    assert len(stored) == 25 and all(r["has_text"] for r in stored.values())
    assert {r["model"] for r in stored.values()} == {default_encoder().model_id}
    vec = np.asarray(stored["i00003"]["embedding"], dtype=np.float32)
    assert vec.shape == (256,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-4
    # Nothing new: the no-JVM check says so, and says what Spark's step says.
    assert _catalog_unchanged(settings) == {
        "files": 0,
        "applied": 0,
        "quarantined": 0,
        "bronze_items_version": first["bronze_items_version"],
        "embedded": 0,
    }

    # A later catalog file: i00003 renamed, i00004 only repriced and out of stock, i00005
    # emptied of all text (kept, without a vector to rank by).
    base = {
        "category": "home",
        "brand": "Linden",
        "updated_at": "2026-11-02T08:00:00Z",
        "price": 10.0,
        "in_stock": True,
    }
    renamed = {**base, "item_id": "i00003", "title": "Linden Bold Lamp", "description": "bright"}
    items = {r["item_id"]: r for r in _rows(settings)}
    repriced = {**items["i00004"], "price": 1.5, "in_stock": False}
    repriced["updated_at"] = "2026-11-02T08:00:00Z"
    emptied = {"item_id": "i00005", "updated_at": "2026-11-02T08:00:00Z"}
    _catalog_file(settings, "2026-11-02", [renamed, repriced, emptied])
    assert _catalog_unchanged(settings) is None  # a new file: Spark's turn
    second = catalog_step(settings=settings)
    assert second["applied"] == 3 and second["embedded"] == 2
    after = _content(spark, settings)
    changed = {i for i in after if after[i]["content_hash"] != stored[i]["content_hash"]}
    assert changed == {"i00003", "i00005"}
    assert after["i00004"]["embedded_at"] == stored["i00004"]["embedded_at"]
    assert not after["i00005"]["has_text"] and not any(after["i00005"]["embedding"])
    assert after["i00003"]["embedding"] != stored["i00003"]["embedding"]
    # A rerun writes nothing and is answered without Spark.
    assert _catalog_unchanged(settings) is not None
    assert catalog_step(settings=settings)["embedded"] == 0


def test_a_table_behind_the_catalog_sends_the_step_to_spark(spark: Any, tmp_path: Path) -> None:
    """A lake from before embeddings (no vectors yet) is filled in by the next run."""
    settings = Settings(
        data_root=tmp_path / "var",
        gen_users=60,
        gen_items=12,
        gen_days=1,
        quality_enabled=False,
        content_embeddings=False,
    )
    generate(settings, days=1)
    assert catalog_step(settings=settings)["embedded"] == 0
    on = settings.model_copy(update={"content_embeddings": True})
    tables.ensure_table(spark, on, "item_content")  # empty: every item is behind
    assert _catalog_unchanged(on) is None
    assert catalog_step(settings=on)["embedded"] == 12
    assert _catalog_unchanged(on) is not None


def _rows(settings: Settings) -> list[dict[str, Any]]:
    files = sorted(settings.catalog_dir.glob("dt=*/*.jsonl"))
    return [json.loads(line) for line in files[0].read_text().splitlines()]
