"""Gold: the tables training and serving read, updated incrementally from silver.

Reads: the change data feed of ``silver/events`` since the version each gold table last
applied, and ``silver/items``. Writes: ``gold/interactions`` (user, item, weight,
n_events, last_ts), ``gold/user_stats``, ``gold/item_daily`` (additive per item and day)
and ``gold/item_stats`` (totals, CTR and popularity over 1/7/30-day windows, derived from
``item_daily``).

Each additive table MERGEs only the silver rows that changed (inserts add, deletes such as
GDPR erasures subtract) and stamps the silver version it applied into the same commit, so
an hour's work costs the same whether the lake holds a day or a year, and a retried task
applies every silver change exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobs import tables
from jobs.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

SOURCE = "events"  # the silver table gold follows


@dataclass
class GoldResult:
    silver_version: int
    applied_from: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    changed_rows: int = 0
    quality: dict[str, bool] = field(default_factory=dict)


def weight_expr(weights: dict[str, float]) -> Column:
    """Implicit-feedback weight of an event from its type (the configured table)."""
    from pyspark.sql import functions as F

    expr = F.lit(0.0)
    for event_type, w in weights.items():
        expr = F.when(F.col("event_type") == event_type, F.lit(float(w))).otherwise(expr)
    return expr


def changes_since(spark: SparkSession, settings: Settings, applied: int, current: int) -> DataFrame:
    """Silver rows inserted (+1) or deleted (-1) between two versions, with a sign."""
    from pyspark.sql import functions as F

    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", applied + 1)
        .option("endingVersion", current)
        .load(tables.path(settings, SOURCE))
        .where(F.col("_change_type").isin("insert", "delete"))
        .withColumn("_sign", F.when(F.col("_change_type") == "insert", 1).otherwise(-1))
    )


def _count(event_type: str) -> Column:
    from pyspark.sql import functions as F

    return F.sum(F.when(F.col("event_type") == event_type, F.col("_sign")).otherwise(0))


def interaction_deltas(changes: DataFrame, weights: dict[str, float]) -> DataFrame:
    """Per (user, item): weight and event count to add; only positively weighted types."""
    from pyspark.sql import functions as F

    positive = [t for t, w in weights.items() if w > 0]
    return (
        changes.where(F.col("event_type").isin(positive))
        .groupBy("user_id", "item_id")
        .agg(
            F.sum(weight_expr(weights) * F.col("_sign")).alias("weight"),
            F.sum("_sign").cast("bigint").alias("n_events"),
            F.max(F.when(F.col("_sign") > 0, F.col("ts"))).alias("last_ts"),
        )
    )


def user_deltas(changes: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    revenue = F.coalesce(F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)), F.lit(0.0))
    return changes.groupBy("user_id").agg(
        F.sum("_sign").cast("bigint").alias("n_events"),
        _count("impression").cast("bigint").alias("impressions"),
        _count("click").cast("bigint").alias("clicks"),
        _count("add_to_cart").cast("bigint").alias("add_to_carts"),
        _count("purchase").cast("bigint").alias("purchases"),
        F.sum(F.when(F.col("event_type") == "purchase", revenue * F.col("_sign"))).alias("revenue"),
        F.min(F.when(F.col("_sign") > 0, F.col("ts"))).alias("first_ts"),
        F.max(F.when(F.col("_sign") > 0, F.col("ts"))).alias("last_ts"),
    )


def item_day_deltas(changes: DataFrame, weights: dict[str, float]) -> DataFrame:
    from pyspark.sql import functions as F

    revenue = F.coalesce(F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)), F.lit(0.0))
    return changes.groupBy("item_id", "event_date").agg(
        _count("impression").cast("bigint").alias("impressions"),
        _count("view").cast("bigint").alias("views"),
        _count("click").cast("bigint").alias("clicks"),
        _count("add_to_cart").cast("bigint").alias("add_to_carts"),
        _count("purchase").cast("bigint").alias("purchases"),
        F.sum(F.when(F.col("event_type") == "purchase", revenue * F.col("_sign"))).alias("revenue"),
        F.sum(weight_expr(weights) * F.col("_sign")).alias("weight"),
    )


@dataclass(frozen=True)
class Additive:
    """How one additive gold table follows silver: one row of the spec below.

    ``deltas`` turns signed silver changes into per-key amounts; ``sums`` are added to the
    table; a row whose ``counts`` all fall to zero is deleted, and a key is inserted only
    when one of them is positive; ``keep`` updates the other columns (min/max stamps).
    """

    table: str
    keys: tuple[str, ...]
    sums: tuple[str, ...]
    counts: tuple[str, ...]
    keep: tuple[tuple[str, str], ...]
    deltas: Callable[[DataFrame, dict[str, float]], DataFrame]


SPEC: tuple[Additive, ...] = (
    Additive(
        table="interactions",
        keys=("user_id", "item_id"),
        sums=("weight", "n_events"),
        counts=("n_events",),
        keep=(("last_ts", "greatest(t.last_ts, s.last_ts)"),),
        deltas=lambda changes, weights: interaction_deltas(changes, weights),
    ),
    Additive(
        table="user_stats",
        keys=("user_id",),
        sums=("n_events", "impressions", "clicks", "add_to_carts", "purchases", "revenue"),
        counts=("n_events",),
        keep=(
            ("first_ts", "least(t.first_ts, s.first_ts)"),
            ("last_ts", "greatest(t.last_ts, s.last_ts)"),
        ),
        deltas=lambda changes, _weights: user_deltas(changes),
    ),
    Additive(
        table="item_daily",
        keys=("item_id", "event_date"),
        sums=(
            "impressions",
            "views",
            "clicks",
            "add_to_carts",
            "purchases",
            "revenue",
            "weight",
        ),
        counts=("impressions", "views", "clicks", "add_to_carts", "purchases"),
        keep=(),
        deltas=lambda changes, weights: item_day_deltas(changes, weights),
    ),
)
ADDITIVE: tuple[str, ...] = tuple(spec.table for spec in SPEC)


def _merge_additive(
    spark: SparkSession, settings: Settings, spec: Additive, deltas: DataFrame, mark: int
) -> None:
    """Add ``deltas`` to the spec's table and stamp ``mark`` into the same commit."""
    from delta.tables import DeltaTable

    empty = " AND ".join(f"t.{c} + s.{c} <= 0" for c in spec.counts)
    fresh = " OR ".join(f"s.{c} > 0" for c in spec.counts)
    on = " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)
    added = {c: f"t.{c} + coalesce(s.{c}, 0)" for c in spec.sums}
    location = tables.ensure_table(spark, settings, spec.table)
    with tables.commit_marks(spark, **{SOURCE: mark}):
        (
            DeltaTable.forPath(spark, location)
            .alias("t")
            .merge(deltas.alias("s"), on)
            .whenMatchedDelete(condition=empty)
            .whenMatchedUpdate(set={**added, **dict(spec.keep)})
            .whenNotMatchedInsertAll(condition=fresh)
            .execute()
        )


def update(
    spark: SparkSession,
    settings: Settings,
    gate: Callable[[Settings, DataFrame], dict[str, bool]] | None = None,
) -> GoldResult:
    """Bring every gold table up to the current silver version.

    ``gate(settings, inserted)`` validates the silver rows about to be applied (the
    widest pending range) before any gold table changes; it raises to stop the update.
    """
    current = tables.version(spark, settings, SOURCE)
    result = GoldResult(silver_version=current)
    if gate is not None:
        result.quality.update(_gate_pending(spark, settings, gate, current))
    for spec in SPEC:
        applied = tables.applied_version(spark, settings, spec.table, SOURCE)
        result.applied_from[spec.table] = applied
        if applied >= current:
            continue
        changes = changes_since(spark, settings, applied, current)
        before = tables.version(spark, settings, spec.table)
        _merge_additive(
            spark, settings, spec, spec.deltas(changes, settings.event_weights), current
        )
        metrics = tables.operation_metrics(spark, tables.path(settings, spec.table), before)
        result.changed_rows += metrics.get("numSourceRows", 0)
    refresh_item_stats(spark, settings)
    result.versions = {
        name: tables.version(spark, settings, name) for name in (*ADDITIVE, "item_stats")
    }
    return result


def _gate_pending(
    spark: SparkSession,
    settings: Settings,
    gate: Callable[[Settings, DataFrame], dict[str, bool]],
    current: int,
) -> dict[str, bool]:
    """Run the gate on the net silver inserts of the widest pending range (if any)."""
    from pyspark.sql import functions as F

    oldest = min(tables.applied_version(spark, settings, n, SOURCE) for n in ADDITIVE)
    if oldest >= current:
        return {}
    # Net inserts: a bad row that was written and deleted again (the fix) no longer
    # blocks gold; its +1/-1 changes cancel out in the additive merge.
    pending = changes_since(spark, settings, oldest, current)
    inserted = pending.where(F.col("_sign") > 0).join(
        pending.where(F.col("_sign") < 0).select("event_id"), "event_id", "left_anti"
    )
    return gate(settings, inserted)


def refresh_item_stats(spark: SparkSession, settings: Settings) -> None:
    """Recompute item totals and windowed popularity from ``item_daily``.

    The windows end at the newest event day in the lake (not the wall clock), so a
    backfill computes what the live run computed.
    """
    from pyspark.sql import functions as F

    daily = tables.read_or_create(spark, settings, "item_daily")
    as_of = daily.agg(F.max("event_date")).first()[0]
    if as_of is None:
        return

    def window(col: str, days: int) -> Column:
        since = as_of - timedelta(days=days - 1)
        return F.sum(F.when(F.col("event_date") >= F.lit(since), F.col(col)).otherwise(0))

    stats = (
        daily.groupBy("item_id")
        .agg(
            F.sum("impressions").alias("impressions"),
            F.sum("clicks").alias("clicks"),
            F.sum("purchases").alias("purchases"),
            F.sum("revenue").alias("revenue"),
            window("weight", 1).cast("double").alias("weight_1d"),
            window("weight", 7).cast("double").alias("weight_7d"),
            window("weight", 30).cast("double").alias("weight_30d"),
            window("purchases", 7).cast("bigint").alias("purchases_7d"),
        )
        .select(
            "item_id",
            "impressions",
            "clicks",
            F.when(F.col("impressions") > 0, F.col("clicks") / F.col("impressions")).alias("ctr"),
            "purchases",
            "revenue",
            "weight_1d",
            "weight_7d",
            "weight_30d",
            "purchases_7d",
            F.lit(datetime.combine(as_of, datetime.min.time()) + timedelta(days=1))
            .cast("timestamp")
            .alias("as_of"),
        )
    )
    location = tables.ensure_table(spark, settings, "item_stats")
    stats.write.format("delta").mode("overwrite").save(location)


def decayed_weight(as_of: datetime, half_life_days: float) -> Column:
    """``weight`` discounted by the age of ``last_ts`` at ``as_of`` (half-life 0: none).

    Applied when gold is read for training, so the stored weights stay additive.
    """
    from pyspark.sql import functions as F

    if half_life_days <= 0:
        return F.col("weight")
    age_days = (F.lit(as_of.timestamp()) - F.col("last_ts").cast("double")) / 86_400.0
    return F.col("weight") * F.pow(F.lit(0.5), F.greatest(age_days, F.lit(0.0)) / half_life_days)
