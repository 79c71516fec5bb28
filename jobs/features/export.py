"""The lake as Feast sources: changed rows exported as parquet snapshots, then materialized.

Reads: ``gold/user_stats``, ``gold/interactions``, ``gold/item_stats`` (Delta) and
``silver/items`` (stock). Writes: feature snapshots as parquet under
``<data_root>/feast/sources/<view>/<stamp>/``, the Feast registry and the online store
(SQLite under ``<data_root>/feast`` by default, Redis by configuration).

Why an export instead of pointing Feast at the Delta tables:

- Feast's file offline store cannot read Delta without the ``deltalake`` package, and its
  Spark offline store would start a second Spark configuration inside Feast (Delta jars,
  extensions, Ivy cache) for tables that are small once aggregated.
- Two of the four views are not gold tables at all: "the user's most recent item ids" is a
  top-N over ``gold/interactions`` and stock lives in ``silver/items``.
- Gold rows carry no timestamp that says when a *value* changed: ``user_stats.last_ts`` is
  the newest event, but a late event changes the counts without moving it, and catalog
  ``updated_at`` can be older than any TTL. Materializing on those would silently miss
  updates.

So a Spark job computes every view from the lake, compares it with what was exported
before and writes only the rows whose values changed (plus a null "tombstone" row for an
entity that disappeared, e.g. a GDPR erasure), stamped with the ``end`` of the run: the
instant as of which the lake's contents are valid. Rows unchanged for half a TTL are
written again so that every live entity always has a row younger than its view's TTL
(point-in-time joins stay correct). Feast then materializes the window (last end, end].

Each snapshot folder is named by its stamp and replaced as a whole, so a retried run
rewrites the same folder, and a run for an older ``end`` than one already exported (a
backfill) exports nothing rather than stamping today's values in the past.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings
from jobs.features.definitions import (
    ITEM_CONTENT,
    ITEM_STATS,
    ITEM_STOCK,
    TIMESTAMP_FIELD,
    USER_RECENT_ITEMS,
    USER_STATS,
    VIEW_KEYS,
    registered_views,
    sources_dir,
    store,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
TIMESTAMP_TYPE_CONF = "spark.sql.parquet.outputTimestampType"
EXPORT_MARKER = "_exported_until"  # "_" hides it from Spark, pyarrow and dask readers


# -- export: lake -> parquet snapshots ------------------------------------------------------
def feature_frames(spark: SparkSession, settings: Settings) -> dict[str, DataFrame]:
    """Every view's current values, one row per entity, computed from the lake."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    users = tables.read_or_create(spark, settings, "user_stats").select(
        "user_id",
        "n_events",
        "impressions",
        "clicks",
        "add_to_carts",
        "purchases",
        F.coalesce("revenue", F.lit(0.0)).alias("revenue"),
        F.col("last_ts").alias("last_event_ts"),
    )
    newest = Window.partitionBy("user_id").orderBy(
        F.col("last_ts").desc_nulls_last(), F.col("weight").desc(), F.col("item_id")
    )
    recent = (
        tables.read_or_create(spark, settings, "interactions")
        .withColumn("_rank", F.row_number().over(newest))
        .where(F.col("_rank") <= settings.feast_recent_items)
        .withColumn("_ts_ms", F.unix_millis("last_ts"))
        .groupBy("user_id")
        .agg(F.array_sort(F.collect_list(F.struct("_rank", "item_id", "_ts_ms"))).alias("_top"))
        .select(
            "user_id",
            F.transform("_top", lambda s: s["item_id"]).alias("recent_item_ids"),
            # When each was last touched: what lets the stream worker place a late click.
            F.transform("_top", lambda s: s["_ts_ms"]).alias("recent_item_ts"),
        )
    )
    items = tables.read_or_create(spark, settings, "item_stats").drop("as_of")
    stock = tables.read_or_create(spark, settings, "items").select("item_id", "in_stock")
    # Items with text only: the service maps a vector to factors, and no text means none.
    content = (
        tables.read_or_create(spark, settings, "item_content")
        .where("has_text")
        .select(
            "item_id",
            F.col("embedding").alias("content_embedding"),
            F.col("model").alias("content_model"),
        )
    )
    return {
        USER_STATS: users,
        USER_RECENT_ITEMS: recent,
        ITEM_STATS: items,
        ITEM_STOCK: stock,
        ITEM_CONTENT: content,
    }


def as_utc(ts: datetime) -> datetime:
    """A plain ``datetime`` in UTC.

    Airflow hands out pendulum instances, whose zone pyarrow does not recognise (it
    compares them as naive); every instant that reaches Spark, pyarrow or Feast goes
    through here first.
    """
    if ts.tzinfo is None:
        raise ValueError(f"{ts} needs a time zone")
    u = ts.astimezone(UTC)
    return datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, UTC)


def stamp_name(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime(STAMP_FORMAT)


def exported_until(folder: Path) -> datetime | None:
    """``end`` of the view's latest export, whether or not it had rows to write."""
    marker = folder / EXPORT_MARKER
    if marker.exists():
        return datetime.fromisoformat(marker.read_text().strip())
    stamps = exported_stamps(folder)
    return stamps[-1] if stamps else None


def exported_stamps(folder: Path) -> list[datetime]:
    """Stamps of the snapshot folders a view has (sorted; temporaries ignored)."""
    if not folder.is_dir():
        return []
    stamps = []
    for child in folder.iterdir():
        if child.is_dir() and not child.name.startswith(("_", ".")):
            stamps.append(datetime.strptime(child.name, STAMP_FORMAT).replace(tzinfo=UTC))
    return sorted(stamps)


def _schema_matches(folder: Path, columns: list[str]) -> bool:
    """Whether the view's snapshots hold exactly ``columns`` (true when there are none)."""
    import pyarrow.dataset as ds

    if not exported_stamps(folder):
        return True
    names = ds.dataset(str(folder), format="parquet").schema.names
    return sorted(names) == sorted([*columns, TIMESTAMP_FIELD])


@contextmanager
def _spark_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    before = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def _previous(spark: SparkSession, folder: Path, key: str, end: datetime) -> DataFrame | None:
    """Latest exported row per entity stamped before ``end`` (None before the first)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not [s for s in exported_stamps(folder) if s < end]:
        return None
    rows = (
        spark.read.option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.parquet")
        .parquet(str(folder))
        .where(F.col(TIMESTAMP_FIELD) < F.lit(end))
    )
    latest = Window.partitionBy(key).orderBy(F.col(TIMESTAMP_FIELD).desc())
    return rows.withColumn("_n", F.row_number().over(latest)).where("_n = 1").drop("_n")


def changed_rows(
    current: DataFrame,
    previous: DataFrame | None,
    key: str,
    features: list[str],
    end: datetime,
    refresh_before: datetime,
) -> DataFrame:
    """Rows to export at ``end``: new or changed values, tombstones, and refreshes.

    A previous row older than ``refresh_before`` is exported again even when unchanged.
    Values compare null-safely, arrays included; ``_gone`` marks tombstones.
    """
    from pyspark.sql import functions as F

    current = current.select(key, *features).withColumn("_gone", F.lit(False))
    if previous is not None:
        gone = previous.join(current.select(key), key, "left_anti").select(
            key,
            *[F.lit(None).cast(previous.schema[c].dataType).alias(c) for c in features],
            F.lit(True).alias("_gone"),
        )
        prev = previous.select(
            key,
            *[F.col(c).alias(f"_p_{c}") for c in features],
            F.col(TIMESTAMP_FIELD).alias("_p_ts"),
        )
        same = F.coalesce(F.col("_p_ts") >= F.lit(refresh_before), F.lit(False))
        for c in features:
            same = same & F.col(c).eqNullSafe(F.col(f"_p_{c}"))
        current = (
            current.unionByName(gone)
            .join(prev, key, "left")
            .where(~same)
            .select(key, *features, "_gone")
        )
    return current.withColumn(TIMESTAMP_FIELD, F.lit(end).cast("timestamp"))


def export(
    spark: SparkSession,
    settings: Settings,
    end: datetime,
    schemas: dict[str, list[str]],
) -> dict[str, dict[str, Any]]:
    """Write each view's changed rows as of ``end``; returns counts per view.

    ``schemas`` maps a view to its feature names (the registered schema), so a definition
    the lake cannot fill fails here, not in Feast.
    """
    from pyspark.sql import functions as F

    end = as_utc(end)
    frames = feature_frames(spark, settings)
    refresh_before = end - timedelta(days=settings.feast_ttl_days) / 2
    out: dict[str, dict[str, Any]] = {}
    for view, features in schemas.items():
        key = VIEW_KEYS[view]
        folder = sources_dir(settings) / view
        until = exported_until(folder)
        if until is not None and until > end:
            out[view] = {"exported": 0, "removed": 0, "skipped": f"exported {until.isoformat()}"}
            continue
        reset = not _schema_matches(folder, [key, *features])
        if reset:
            # The definition changed: older snapshots cannot be read beside new ones.
            shutil.rmtree(folder)
        previous = _previous(spark, folder, key, end)
        rows = changed_rows(frames[view], previous, key, features, end, refresh_before).persist()
        try:
            counts = rows.agg(
                F.count(F.lit(1)).alias("n"),
                F.coalesce(F.sum(F.col("_gone").cast("int")), F.lit(0)).alias("gone"),
            ).first()
            target = folder / stamp_name(end)
            tmp = folder / f"_tmp-{stamp_name(end)}-{uuid.uuid4().hex[:8]}"
            if counts["n"]:
                # Parquet INT96 timestamps carry no zone; micros tagged UTC read back exact.
                with _spark_conf(spark, TIMESTAMP_TYPE_CONF, "TIMESTAMP_MICROS"):
                    parts = max(1, counts["n"] // 1_000_000)
                    rows.drop("_gone").repartition(parts).write.parquet(str(tmp))
            if target.exists():
                shutil.rmtree(target)
            if counts["n"]:
                tmp.replace(target)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / EXPORT_MARKER).write_text(end.isoformat() + "\n")
        finally:
            rows.unpersist()
        out[view] = {"exported": int(counts["n"]), "removed": int(counts["gone"]), "reset": reset}
    return out


# -- materialization ------------------------------------------------------------------------
def _rows_in_window(folder: Path, key: str, start: datetime, end: datetime) -> int:
    """Entities Feast writes for the window (it keeps the latest row per entity)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(str(folder), format="parquet").to_table(
        columns=[key],
        filter=(ds.field(TIMESTAMP_FIELD) >= start) & (ds.field(TIMESTAMP_FIELD) <= end),
    )
    return len(pc.unique(table[key]))


def materialize(
    settings: Settings, end: datetime, spark: SparkSession | None = None
) -> dict[str, Any]:
    """Export the lake as of ``end`` and materialize every view incrementally up to it.

    Each view's window starts where its last materialization ended (its TTL before
    ``end`` the first time); ``end`` comes from the caller (the run's data interval), so
    the function never reads the clock and a rerun writes the same rows again. A view
    already materialized past ``end`` is left alone. Returns JSON-able counts per view.
    """
    end = as_utc(end)
    fs = store(settings)
    views = registered_views(fs)
    if spark is None:
        from jobs.spark import get_spark

        spark = get_spark(settings)
    schemas = {name: [f.name for f in fv.features] for name, fv in views.items()}
    result = export(spark, settings, end, schemas)
    for name, fv in views.items():
        info = result[name]
        folder = sources_dir(settings) / name
        last = fv.most_recent_end_time
        last = as_utc(last) if last is not None else None
        if last is None:
            start = end - (fv.ttl or timedelta(weeks=52))
        elif last < end:
            start = last + timedelta(microseconds=1)  # Feast's window includes both ends
        else:
            start = end  # a rerun rewrites this end's rows; an older end is skipped below
        info.update(start=start.isoformat(), materialized=0)
        if last is not None and last > end:
            info["materialize_skipped"] = f"materialized up to {last.isoformat()}"
        elif not exported_stamps(folder):
            info["materialize_skipped"] = "nothing exported yet"
        else:
            fs.materialize(start_date=start, end_date=end, feature_views=[name])
            info["materialized"] = _rows_in_window(folder, VIEW_KEYS[name], start, end)
    return {"end": end.isoformat(), "views": result}
