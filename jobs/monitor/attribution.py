"""Recommendation performance: what users did with the lists they were shown.

Reads: ``silver/events`` (the attribution fields of the event contract). Writes:
``monitor/rec_performance``.

**The table** ``rec_performance``: one row per ``day`` × ``model_version`` × ``rec_source``
× ``position_bucket`` with ``impressions, clicks, add_to_carts, purchases, revenue, ctr,
conversion`` and ``computed_at``. ``rec_source`` is ``cdn`` or ``service`` for
recommended slots and ``organic`` for the rest (the baseline); ``position_bucket`` is
``1-3``, ``4-10``, ``11+`` or ``unknown`` (no position).

Each row also carries ``ab_group`` (``treatment`` or ``control``): the group of the
users whose slots it counts, decided by the keyed bucket of the user
(:func:`jobs.model.control.in_control_with_key`, the function the publish and the service
serve by). Control users are shown the popular list, so a model version's CTR is the
``treatment`` rows only; readers that want the model's figures filter on it (rows from
before the column read NULL).

**Counting is per impression**, so a rate is a proportion: ``clicks`` is the number of
impressions with at least one attributed click (two clicks on one impression count once),
``add_to_carts`` and ``purchases`` likewise the impressions followed by at least one
attributed cart / purchase; ``ctr`` = clicks / impressions and ``conversion`` =
purchases / impressions (NULL without impressions) therefore lie in [0, 1]. ``revenue``
alone sums *every* attributed purchase (``price × quantity``): two purchases after one
click are one converted impression but twice the money. A response counts on the UTC
day of the impression it answers, not its own, so a click after midnight on yesterday's
impression counts for yesterday and a day's clicks never exceed its impressions. A
response with no impression to answer (organic, see below) is its own unit, counted
once on its own day; only organic rows can therefore show more clicks than impressions.

Because a day's impressions collect responses for up to ``2W`` after the day, a day's
rows change until ``2W`` have passed: the monitor recomputes the days the window still
reaches. A run replaces the rows of the days it computes (``replaceWhere`` on ``day``),
so a rerun, or a run after late events arrived, gives the same table as one clean run.

**The attribution rule** (window ``W`` = ``attribution_window_hours``, default 24 h):

- an impression carrying ``rec_source`` is a recommended slot: it counts for its own
  source, model version and position; an impression without one is organic;
- a click on an item counts for the newest impression of that item to the same user at
  most ``W`` before it (same instant included), whatever that impression was: if it was
  a recommended slot the click is attributed to its source, model version and position,
  if it was organic the click is organic at that position. A click with no impression in
  the window is organic at its own ``position``;
- an add-to-cart or a purchase counts for the newest click on that item by the same user
  at most ``W`` before it, taking that click's attribution (so recommended only if the
  click was); without such a click it is organic at its own ``position``. Revenue is
  ``price × quantity`` (quantity 1 when absent) of the purchases.

"Newest wins" gives a conversion to the last list that showed the item, the usual
last-touch rule; ties on the same instant are broken by ``event_id`` so reruns agree.
Because a purchase can follow its click by ``W`` and the click its impression by ``W``,
a day's attribution reads events from ``2W`` before the day to ``2W`` after it.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from jobs import tables
from jobs.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

TABLE = "rec_performance"
ORGANIC = "organic"
BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("1-3", 1, 3),
    ("4-10", 4, 10),
    ("11+", 11, None),
)
UNKNOWN_BUCKET = "unknown"
# Attributed columns each event gets (the slot it counts for).
SLOT = ("rec_source", "model_version", "position_bucket")


def position_bucket(position: int | None) -> str:
    """The bucket label of a 1-based list position (Python twin of :func:`bucket_column`)."""
    if position is None:
        return UNKNOWN_BUCKET
    for label, low, high in BUCKETS:
        if position >= low and (high is None or position <= high):
            return label
    return UNKNOWN_BUCKET  # position 0: not a list slot


def bucket_column(position: Column) -> Column:
    """:func:`position_bucket` in Spark."""
    from pyspark.sql import functions as F

    out = F.lit(UNKNOWN_BUCKET)
    for label, low, high in reversed(BUCKETS):
        cond = position >= low if high is None else (position >= low) & (position <= high)
        out = F.when(cond, F.lit(label)).otherwise(out)
    return F.when(position.isNull(), F.lit(UNKNOWN_BUCKET)).otherwise(out)


def lookback(settings: Settings) -> timedelta:
    """How far before a day its attribution reads: a purchase ← click ← impression."""
    return timedelta(hours=2 * settings.attribution_window_hours)


def _newest_before(
    later: DataFrame, earlier: DataFrame, window_hours: float, carry: tuple[str, ...]
) -> DataFrame:
    """``later`` with ``carry`` taken from the newest ``earlier`` row of the same user and
    item at most ``window_hours`` before it (NULL-filled when there is none)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    e = earlier.select(
        F.col("user_id").alias("_u"),
        F.col("item_id").alias("_i"),
        F.col("ts").alias("_ts"),
        F.col("event_id").alias("_eid"),
        *[F.col(c).alias(f"_c_{c}") for c in carry],
    )
    micros = round(window_hours * 3600 * 1_000_000)
    gap = F.unix_micros("ts") - F.unix_micros("_ts")
    cond = (
        (F.col("user_id") == F.col("_u"))
        & (F.col("item_id") == F.col("_i"))
        & (gap >= 0)
        & (gap <= micros)
    )
    newest = Window.partitionBy("event_id").orderBy(F.col("_ts").desc(), F.col("_eid").desc())
    return (
        later.join(e, cond, "left")
        .withColumn("_n", F.row_number().over(newest))
        .where("_n = 1")
        .withColumn("_matched", F.col("_eid").isNotNull())
        .drop("_u", "_i", "_ts", "_eid", "_n")
    )


def attribute(events: DataFrame, window_hours: float) -> DataFrame:
    """Every impression, click, add-to-cart and purchase with the slot it counts for.

    Columns: the event's own (``event_id, ts, user_id, item_id, event_type, price,
    quantity``) plus ``rec_source`` (``cdn``/``service``/``organic``), ``model_version``
    and ``position_bucket``, ``slot_id`` (the impression the event answers, itself for an
    impression, the event itself when it answers none) and ``slot_day`` (the UTC day of
    that impression: the day the event counts on). Views are not counted (they are not a
    response to a slot).
    """
    from pyspark.sql import functions as F

    base = events.select(
        "event_id",
        "ts",
        "user_id",
        "item_id",
        "event_type",
        "position",
        "price",
        "quantity",
        "rec_source",
        "model_version",
    )
    own_bucket = bucket_column(F.col("position"))
    impressions = base.where(F.col("event_type") == "impression").select(
        *base.columns[:8],
        F.coalesce(F.col("rec_source"), F.lit(ORGANIC)).alias("a_source"),
        F.when(F.col("rec_source").isNotNull(), F.col("model_version")).alias("a_model"),
        own_bucket.alias("a_bucket"),
        F.col("event_id").alias("a_slot"),
        F.col("ts").alias("a_slot_ts"),
    )
    # a_slot / a_slot_ts: the impression a response answers (its unit of counting).
    carry = ("a_source", "a_model", "a_bucket", "a_slot", "a_slot_ts")

    def settle(frame: DataFrame) -> DataFrame:
        return frame.select(
            *base.columns[:8],
            F.when(F.col("_matched"), F.col("_c_a_source"))
            .otherwise(F.lit(ORGANIC))
            .alias("a_source"),
            F.when(F.col("_matched"), F.col("_c_a_model")).alias("a_model"),
            F.when(F.col("_matched"), F.col("_c_a_bucket")).otherwise(own_bucket).alias("a_bucket"),
            # Unanswered responses are their own unit: counted once, on their own day.
            F.when(F.col("_matched"), F.col("_c_a_slot"))
            .otherwise(F.col("event_id"))
            .alias("a_slot"),
            F.when(F.col("_matched"), F.col("_c_a_slot_ts"))
            .otherwise(F.col("ts"))
            .alias("a_slot_ts"),
        )

    clicks = settle(
        _newest_before(
            base.where(F.col("event_type") == "click").select(*base.columns[:8]),
            impressions,
            window_hours,
            carry,
        )
    )
    after_click = settle(
        _newest_before(
            base.where(F.col("event_type").isin("add_to_cart", "purchase")).select(
                *base.columns[:8]
            ),
            clicks,
            window_hours,
            carry,
        )
    )
    return (
        impressions.unionByName(clicks)
        .unionByName(after_click)
        .select(
            *base.columns[:8],
            F.col("a_source").alias("rec_source"),
            F.col("a_model").alias("model_version"),
            F.col("a_bucket").alias("position_bucket"),
            F.col("a_slot").alias("slot_id"),
            F.to_date(F.col("a_slot_ts")).alias("slot_day"),
        )
    )


def performance(attributed: DataFrame, computed_at: datetime) -> DataFrame:
    """``rec_performance`` rows from attributed events (see the module docstring)."""
    from pyspark.sql import functions as F

    def units(kind: str) -> Column:
        # Distinct slots with at least one such response: one per impression, never more.
        return F.count_distinct(F.when(F.col("event_type") == kind, F.col("slot_id"))).cast(
            "bigint"
        )

    revenue = F.when(
        F.col("event_type") == "purchase",
        F.coalesce(F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)), F.lit(0.0)),
    ).otherwise(F.lit(0.0))
    group = [c for c in ("ab_group",) if c in attributed.columns]
    grouped = (
        attributed.withColumn("day", F.col("slot_day"))
        .groupBy("day", *SLOT, *group)
        .agg(
            units("impression").alias("impressions"),
            units("click").alias("clicks"),
            units("add_to_cart").alias("add_to_carts"),
            units("purchase").alias("purchases"),
            F.sum(revenue).cast("double").alias("revenue"),
        )
    )
    per_impression = F.when(F.col("impressions") > 0, F.col("impressions"))
    return grouped.select(
        "day",
        "model_version",
        "rec_source",
        "position_bucket",
        "impressions",
        "clicks",
        "add_to_carts",
        "purchases",
        "revenue",
        (F.col("clicks") / per_impression).alias("ctr"),
        (F.col("purchases") / per_impression).alias("conversion"),
        F.lit(computed_at).cast("timestamp").alias("computed_at"),
        *group,
    )


def with_ab_group(attributed: DataFrame, settings: Settings) -> DataFrame:
    """``attributed`` with each user's ``ab_group`` (treatment | control).

    Decided on the distinct user ids only (one string column into pandas, so no column
    of nulls meets Arrow's string conversion) and joined back.
    """
    from jobs.monitor.lift import with_group

    groups = with_group(attributed.select("user_id").distinct(), settings)
    return attributed.join(groups, "user_id", "left")


def events_for(spark: SparkSession, settings: Settings, start: date, end: date) -> DataFrame:
    """Silver events that can matter for days ``start``..``end``: from the lookback before
    ``start`` (which impression a click answers) to the lookback after ``end`` (the
    responses to the last day's impressions)."""
    from pyspark.sql import functions as F

    reach = timedelta(days=math.ceil(lookback(settings) / timedelta(days=1)))
    first, end = start - reach, end + reach
    events = tables.read_or_create(spark, settings, "events")
    return events.where((F.col("event_date") >= F.lit(first)) & (F.col("event_date") <= F.lit(end)))


def compute_performance(
    spark: SparkSession, settings: Settings, start: date, end: date
) -> dict[str, object]:
    """Recompute ``rec_performance`` for days ``start``..``end`` (inclusive); idempotent."""
    from pyspark.sql import functions as F

    if end < start:
        raise ValueError(f"empty day range {start} .. {end}")
    location = tables.ensure_table(spark, settings, TABLE)
    attributed = attribute(
        events_for(spark, settings, start, end), settings.attribution_window_hours
    )
    in_days = (F.col("slot_day") >= F.lit(start)) & (F.col("slot_day") <= F.lit(end))
    rows = performance(with_ab_group(attributed.where(in_days), settings), datetime.now(UTC))
    rows = rows.select(*tables.TABLES[TABLE].columns).cache()
    n = rows.count()
    # replaceWhere: the window's days are replaced whole, so a day that lost its events
    # (an erasure) loses its rows too, and a rerun rewrites rather than adds.
    (
        rows.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"day >= DATE'{start}' AND day <= DATE'{end}'")
        .save(location)
    )
    rows.unpersist()
    return {"table": TABLE, "start": str(start), "end": str(end), "rows": n}


def as_day(day: str | date | datetime) -> date:
    if isinstance(day, datetime):
        return day.astimezone(UTC).date()
    if isinstance(day, date):
        return day
    return date.fromisoformat(day[:10])


def performance_step(
    settings: Settings | None = None,
    day: str | date | datetime | None = None,
    spark: SparkSession | None = None,
) -> dict[str, object]:
    """The monitor DAG's task: recompute one day's ``rec_performance`` (the run's day,
    never "today", so a backfill computes the day it names)."""
    from jobs.config import get_settings

    settings = settings or get_settings()
    if day is None:
        raise ValueError("performance_step needs the day to compute (the run's data interval)")
    if spark is None:
        from jobs.spark import get_spark

        spark = get_spark(settings)
    d = as_day(day)
    return compute_performance(spark, settings, d, d)
