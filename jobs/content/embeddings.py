"""The lake's ``item_content`` table: one content vector per catalog item, kept current.

Run by the ingest's catalog step after silver ``items`` changed. An item is embedded again
only when its content hash (its cleaned text and the model id, :mod:`jobs.content.text`)
differs from the stored one, so a price or stock change, which is most of a catalog's
daily churn, costs nothing, and a new model version re-embeds everything once. The write
is one MERGE keyed by ``item_id``: a retried step finds the hashes already equal and
writes nothing.

``light_up_to_date`` answers "is there anything to embed?" through delta-rs, so the catalog
step's no-JVM fast path stays fast (``jobs.ingest.steps``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs import tables
from jobs.config import Settings
from jobs.content.encoder import Encoder, default_encoder
from jobs.content.text import FIELDS, content_hash, item_text

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
CHUNK = 4_096  # items embedded per call: bounded memory, progress in the log
MERGE_ROWS = 20_000  # items per MERGE (~180 MB of Python floats at 256 dimensions)


def plan(items: pd.DataFrame, stored: pd.DataFrame, model_id: str) -> pd.DataFrame:
    """Items whose vector is missing or stale: item_id, text, content_hash.

    ``items`` holds ``item_id`` and the text fields; ``stored`` the table's ``item_id``
    and ``content_hash``. Duplicate item ids (never in silver) keep their last row.
    """
    frame = items.drop_duplicates("item_id", keep="last").reset_index(drop=True)
    texts = [item_text(row) for row in frame[["item_id", *FIELDS]].to_dict("records")]
    hashes = [content_hash(t, model_id) for t in texts]
    frame = pd.DataFrame({"item_id": frame["item_id"], "text": texts, "content_hash": hashes})
    known = dict(zip(stored["item_id"], stored["content_hash"], strict=True))
    stale = [
        known.get(i) != h for i, h in zip(frame["item_id"], frame["content_hash"], strict=True)
    ]
    return frame[np.asarray(stale, dtype=bool)].reset_index(drop=True)


def vectors_for(todo: pd.DataFrame, encoder: Encoder, now: datetime) -> pd.DataFrame:
    """The rows to MERGE for the planned items (embedding as lists of floats)."""
    parts = []
    for lo in range(0, len(todo), CHUNK):
        chunk = todo.iloc[lo : lo + CHUNK]
        vecs = encoder.embed(chunk["text"].tolist())
        parts.append(
            pd.DataFrame(
                {
                    "item_id": chunk["item_id"].to_numpy(),
                    "content_hash": chunk["content_hash"].to_numpy(),
                    "model": encoder.model_id,
                    "has_text": np.abs(vecs).sum(axis=1) > 0,
                    "embedding": list(vecs),
                    "embedded_at": now.replace(tzinfo=None),
                }
            )
        )
        log.info("embedded %d of %d items", min(lo + CHUNK, len(todo)), len(todo))
    if not parts:
        return pd.DataFrame(columns=tables.TABLES["item_content"].columns)
    return pd.concat(parts, ignore_index=True)


def embed_catalog(
    spark: SparkSession, settings: Settings, encoder: Encoder | None = None
) -> dict[str, Any]:
    """Embed new and changed items of silver ``items`` into ``item_content``."""
    from delta.tables import DeltaTable

    encoder = encoder or default_encoder()
    items_path = tables.ensure_table(spark, settings, "items")
    target = tables.ensure_table(spark, settings, "item_content")
    items = spark.read.format("delta").load(items_path).select("item_id", *FIELDS).toPandas()
    stored = spark.read.format("delta").load(target).select("item_id", "content_hash").toPandas()
    todo = plan(items, stored, encoder.model_id)
    result = {"items": len(items), "embedded": len(todo), "model": encoder.model_id}
    if todo.empty:
        return result
    schema = spark.read.format("delta").load(target).schema
    now = datetime.now(UTC)
    without = 0
    # One MERGE per slice: memory stays bounded on a full re-embed (a new model), and a
    # step killed midway keeps the slices done (their hashes match on the retry).
    for lo in range(0, len(todo), MERGE_ROWS):
        rows = vectors_for(todo.iloc[lo : lo + MERGE_ROWS], encoder, now)
        rows["embedding"] = [v.astype(float).tolist() for v in rows["embedding"]]
        source = spark.createDataFrame(rows[schema.fieldNames()], schema=schema)
        (
            DeltaTable.forPath(spark, target)
            .alias("t")
            .merge(source.alias("s"), "t.item_id = s.item_id")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
        without += int((~rows["has_text"]).sum())
    result["without_text"] = without
    return result


def light_up_to_date(settings: Settings, encoder: Encoder | None = None) -> bool | None:
    """Whether every silver item's vector is current, read through delta-rs; None when
    the light path cannot tell (then the Spark step decides)."""
    from jobs import lake_light

    if not lake_light.available(settings):
        return None
    items = lake_light.open_table(settings, "items")
    content = lake_light.open_table(settings, "item_content")
    if items is None or content is None:
        return None
    cols = ", ".join(("item_id", *FIELDS))
    frame = pd.DataFrame(
        lake_light.rows(f"SELECT {cols} FROM i", i=items), columns=["item_id", *FIELDS]
    )
    stored = pd.DataFrame(
        lake_light.rows("SELECT item_id, content_hash FROM c", c=content),
        columns=["item_id", "content_hash"],
    )
    return plan(frame, stored, (encoder or default_encoder()).model_id).empty


def read_vectors(spark: SparkSession, settings: Settings) -> tuple[np.ndarray, np.ndarray, str]:
    """(item ids, (n, dim) float32 unit vectors, model id) of every item with text."""
    path = tables.ensure_table(spark, settings, "item_content")
    rows = (
        spark.read.format("delta")
        .load(path)
        .where("has_text")
        .select("item_id", "embedding", "model")
        .toPandas()
    )
    return vectors_of(rows)


def vectors_of(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    """Stack a frame of (item_id, embedding, model) rows; one model only, the newest
    being whatever most rows carry (a half re-embedded table mixes spaces: refused)."""
    if rows.empty:
        return np.array([], dtype=str), np.zeros((0, 0), dtype=np.float32), ""
    models = rows["model"].value_counts()
    if len(models) > 1:
        log.warning("item_content mixes models %s: using %s only", dict(models), models.index[0])
        rows = rows[rows["model"] == models.index[0]]
    vecs = np.stack([np.asarray(v, dtype=np.float32) for v in rows["embedding"]])
    return rows["item_id"].astype(str).to_numpy(), vecs, str(models.index[0])
