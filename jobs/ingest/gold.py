"""Gold: the tables training and serving read, updated incrementally from silver.

Reads: the change data feed of ``silver/events`` since the version each gold table last
applied, and ``silver/items``. Writes: ``gold/interactions`` (user, item, weight,
n_events, last_ts), ``gold/user_stats``, ``gold/item_daily`` (additive per item and day)
and ``gold/item_stats`` (totals, CTR and popularity over 1/7/30-day windows, derived from
``item_daily``).

Each additive table MERGEs only the silver rows that changed (inserts and the new side of
an update add; deletes such as GDPR erasures and the old side of an update subtract) and
stamps the silver version it applied, with the event weights it used, into the same
commit, so an hour's work costs the same whether the lake holds a day or a year, and a
retried task applies every silver change exactly once. Where a delete or correction can
lower a maximum or raise a minimum (``last_ts``, ``first_ts``), those are recomputed from
silver for the touched keys only.

The mark is searched in the table's whole history; a gold table with rows and no mark
raises (``tables.MissingMarkError``) rather than replay silver from the start. Changed
``RECFLOW_EVENT_WEIGHTS`` raise :class:`RebuildNeededError`. Either way, ``recflow
rebuild-gold`` (:func:`rebuild`) recomputes every gold table from silver pinned at one
version and overwrites each in one atomic Delta commit stamped with that version, so the
incremental path continues from there; it also serves after the change feed was vacuumed
or when drift is suspected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobs import tables
from jobs.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

SOURCE = "events"  # the silver table gold follows
WEIGHTS = "event_weights"  # key of the weights a gold commit used, beside SOURCE's version
REBUILD_HINT = "run `recflow rebuild-gold` to recompute gold from silver"

# Change feed rows and the sign they carry into the additive tables.
SIGNS = {"insert": 1, "update_postimage": 1, "delete": -1, "update_preimage": -1}


class RebuildNeededError(RuntimeError):
    """Gold cannot be brought up to date incrementally (e.g. the event weights changed)."""


def weights_mark(weights: dict[str, float]) -> str:
    """Canonical text of a weights table, as stamped into gold commits."""
    return json.dumps({k: float(v) for k, v in sorted(weights.items())}, sort_keys=True)


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
    """Silver rows changed between two versions, signed: +1 inserted or the new side of an
    update, -1 deleted or the old side of an update (so a correction moves its amounts)."""
    from pyspark.sql import functions as F

    sign = F.lit(None)
    for change, value in SIGNS.items():
        sign = F.when(F.col("_change_type") == change, F.lit(value)).otherwise(sign)
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", applied + 1)
        .option("endingVersion", current)
        .load(tables.path(settings, SOURCE))
        .where(F.col("_change_type").isin(*SIGNS))
        .withColumn("_sign", sign.cast("int"))
    )


def silver_at(spark: SparkSession, settings: Settings, version: int) -> DataFrame:
    """Silver events as of ``version``, each row signed +1 (a full reading as changes)."""
    from pyspark.sql import functions as F

    return (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(tables.path(settings, SOURCE))
        .withColumn("_sign", F.lit(1))
    )


def _revenue(revenue: Column) -> Column:
    """Signed purchase revenue; 0, never null, so later additions are not swallowed."""
    from pyspark.sql import functions as F

    signed = F.when(F.col("event_type") == "purchase", revenue * F.col("_sign"))
    return F.coalesce(F.sum(signed), F.lit(0.0)).alias("revenue")


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
        _revenue(revenue),
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
        _revenue(revenue),
        F.sum(weight_expr(weights) * F.col("_sign")).alias("weight"),
    )


@dataclass(frozen=True)
class Additive:
    """How one additive gold table follows silver: one row of the spec below.

    ``deltas`` turns signed silver changes into per-key amounts (fed all of silver signed
    +1, it computes the table from scratch); ``sums`` are added to the table; a row whose
    ``counts`` all fall to zero is deleted, and a key is inserted only when one of them is
    positive; ``keep`` updates the other columns (min/max stamps) when only rows were
    added; for keys a removal touched they are recomputed from silver.
    """

    table: str
    keys: tuple[str, ...]
    sums: tuple[str, ...]
    counts: tuple[str, ...]
    keep: tuple[tuple[str, str], ...]
    deltas: Callable[[DataFrame, dict[str, float]], DataFrame]

    @property
    def columns(self) -> list[str]:
        return tables.TABLES[self.table].columns


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


def _exact_stamps(
    spark: SparkSession,
    settings: Settings,
    spec: Additive,
    changes: DataFrame,
    current: int,
) -> DataFrame | None:
    """For keys that lost a row (delete, or the old side of an update): their ``keep``
    columns recomputed from silver at ``current`` (a min/max cannot be taken back)."""
    from pyspark.sql import functions as F

    if not spec.keep:
        return None
    removed = changes.where(F.col("_sign") < 0).select(*spec.keys).distinct()
    if removed.limit(1).count() == 0:
        return None
    touched = silver_at(spark, settings, current).join(removed, list(spec.keys), "left_semi")
    exact = spec.deltas(touched, settings.event_weights)
    return exact.select(*spec.keys, *(F.col(c).alias(f"_exact_{c}") for c, _ in spec.keep))


def _merge_additive(
    spark: SparkSession,
    settings: Settings,
    spec: Additive,
    deltas: DataFrame,
    exact: DataFrame | None,
    mark: int,
) -> None:
    """Add ``deltas`` to the spec's table and stamp ``mark`` into the same commit."""
    from delta.tables import DeltaTable

    empty = " AND ".join(f"t.{c} + s.{c} <= 0" for c in spec.counts)
    fresh = " OR ".join(f"s.{c} > 0" for c in spec.counts)
    on = " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)
    added = {c: f"t.{c} + coalesce(s.{c}, 0)" for c in spec.sums}
    kept = dict(spec.keep)
    inserted = {c: f"s.{c}" for c in spec.columns}
    if exact is not None:
        deltas = deltas.join(exact, list(spec.keys), "left")
        kept = {c: f"coalesce(s._exact_{c}, {expr})" for c, expr in spec.keep}
        inserted.update({c: f"coalesce(s._exact_{c}, s.{c})" for c, _ in spec.keep})
    location = tables.ensure_table(spark, settings, spec.table)
    with tables.commit_marks(
        spark, **{SOURCE: mark, WEIGHTS: weights_mark(settings.event_weights)}
    ):
        (
            DeltaTable.forPath(spark, location)
            .alias("t")
            .merge(deltas.alias("s"), on)
            .whenMatchedDelete(condition=empty)
            .whenMatchedUpdate(set={**added, **kept})
            .whenNotMatchedInsert(condition=fresh, values=inserted)
            .execute()
        )


def applied(spark: SparkSession, settings: Settings, table: str) -> int:
    """Silver version a gold table has applied; refuses when its weights are not the
    configured ones (adding new amounts to old ones would mix two weightings)."""
    marks = tables.applied_mark(spark, settings, table, SOURCE)
    if marks is None:
        return tables.applied_version(spark, settings, table, SOURCE)  # -1, or raises
    used, configured = marks.get(WEIGHTS), weights_mark(settings.event_weights)
    if used is not None and used != configured:
        raise RebuildNeededError(
            f"gold {table!r} was computed with event weights {used}, but "
            f"RECFLOW_EVENT_WEIGHTS is now {configured}: {REBUILD_HINT}."
        )
    return int(marks[SOURCE])


def update(
    spark: SparkSession,
    settings: Settings,
    gate: Callable[[Settings, DataFrame], dict[str, bool]] | None = None,
) -> GoldResult:
    """Bring every gold table up to the current silver version.

    ``gate(settings, inserted)`` validates the silver rows about to be applied (the
    widest pending range) before any gold table changes; it raises to stop the update.
    Raises :class:`RebuildNeededError` (before changing anything) when the configured
    event weights differ from those gold was computed with.
    """
    current = tables.version(spark, settings, SOURCE)
    result = GoldResult(silver_version=current)
    result.applied_from = {spec.table: applied(spark, settings, spec.table) for spec in SPEC}
    if gate is not None:
        result.quality.update(_gate_pending(spark, settings, gate, current, result.applied_from))
    for spec in SPEC:
        if result.applied_from[spec.table] >= current:
            continue
        changes = changes_since(spark, settings, result.applied_from[spec.table], current)
        exact = _exact_stamps(spark, settings, spec, changes, current)
        before = tables.version(spark, settings, spec.table)
        deltas = spec.deltas(changes, settings.event_weights)
        _merge_additive(spark, settings, spec, deltas, exact, current)
        metrics = tables.operation_metrics(spark, tables.path(settings, spec.table), before)
        result.changed_rows += metrics.get("numSourceRows", 0)
    refresh_item_stats(spark, settings)
    result.versions = {
        name: tables.version(spark, settings, name) for name in (*ADDITIVE, "item_stats")
    }
    return result


def rebuild(spark: SparkSession, settings: Settings, version: int | None = None) -> GoldResult:
    """Recompute every gold table from silver pinned at ``version`` (default: current).

    Each additive table is the full aggregation of silver at that version with the
    configured weights, written as one overwrite commit stamped with the version and the
    weights: readers see the old table or the new one, never a mix, and the next
    incremental update continues from the pinned version. ``item_stats`` follows from
    ``item_daily``. Use it after the change feed was vacuumed, the weights changed, or
    when gold is suspected to have drifted from silver.
    """
    from pyspark.sql import functions as F

    current = tables.version(spark, settings, SOURCE)
    pin = current if version is None else version
    if not 0 <= pin <= current:
        raise ValueError(f"silver {SOURCE!r} version {pin} is not in 0..{current}")
    silver = silver_at(spark, settings, pin)
    result = GoldResult(silver_version=pin)
    for spec in SPEC:
        result.applied_from[spec.table] = -1
        kept = " OR ".join(f"{c} > 0" for c in spec.counts)
        fields = dict(tables.ddl_fields(tables.TABLES[spec.table].ddl))
        full = (
            spec.deltas(silver, settings.event_weights)
            .where(kept)
            .select(*(F.col(c).cast(fields[c]).alias(c) for c in spec.columns))
        )
        location = tables.ensure_table(spark, settings, spec.table)
        with tables.commit_marks(
            spark, **{SOURCE: pin, WEIGHTS: weights_mark(settings.event_weights)}
        ):
            full.write.format("delta").mode("overwrite").save(location)
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
    applied_from: dict[str, int],
) -> dict[str, bool]:
    """Run the gate on the net silver rows of the widest pending range (if any)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    oldest = min(applied_from.values())
    if oldest >= current:
        return {}
    # Net rows: each event's last change, if it leaves the event in silver. A bad row that
    # was written and deleted again (the fix) no longer blocks gold, since its +1/-1 cancel
    # out in the additive merge; a corrected row is judged as corrected.
    pending = changes_since(spark, settings, oldest, current)
    last = Window.partitionBy("event_id").orderBy(
        F.col("_commit_version").desc(), F.col("_sign").desc()
    )
    inserted = (
        pending.withColumn("_last", F.row_number().over(last))
        .where((F.col("_last") == 1) & (F.col("_sign") > 0))
        .drop("_last")
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
