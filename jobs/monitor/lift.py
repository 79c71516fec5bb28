"""The lift of personalization: treatment against the control group, with 95 % intervals.

Reads: ``silver/events`` (through the attribution of :mod:`jobs.monitor.attribution`) and
the control group of :mod:`jobs.model.control`. Writes: ``monitor/lift``.

Control users are served the popular list wherever treatment users get their personal
one (published JSON and online service alike), so the difference between the groups on
recommended slots is what personalization adds. Per day, over the users who saw at
least one recommended slot that day ("exposed"), counting as :mod:`jobs.monitor.attribution`
does (per impression, on the impression's day):

- ``ctr``: impressions with an attributed click / recommended impressions of each group;
- ``conversion``: impressions followed by an attributed purchase / recommended
  impressions;
- ``revenue_per_user``: all purchase revenue of an exposed user that day (zeros
  included), mean of treatment minus mean of control, with Welch's interval
  (unequal variances, Welch–Satterthwaite degrees of freedom): revenue is heavy-tailed
  and the groups differ in size by design.

**Why the proportions are per user.** The user, not the impression, is the randomised
unit, and one user's impressions are correlated (a user who clicks, clicks a lot), so an
interval that treats impressions as independent is too narrow. Each group's rate is the
ratio estimator ``R = Σ x_u / Σ n_u`` over its users (x clicks or conversions, n
impressions), with the delta-method variance over users
``Var(R) = m / (m − 1) · Σ (x_u − R n_u)² / (Σ n_u)²`` (m users); the interval of the
difference is ``d ± z · sqrt(Var_t + Var_c)``. That variance is 0 when every impression
of a group clicked or none did (p = 0 or 1), which would give a zero-width interval from
a handful of users, so each group's variance is floored at the impression-level binomial
variance of the Agresti–Caffo adjusted rate ``p̃ = (X + 1) / (N + 2)``,
``p̃ (1 − p̃) / (N + 2)``: never narrower than the independent-impressions view, never
collapsed. A group with fewer than two users has no variance over users: the row keeps
the rates and difference but its interval is NULL and ``method`` says why.

One row per day and metric: ``treatment``, ``control``, their ``n`` (impressions for the
proportions, users for revenue), ``difference``, ``ci_low``/``ci_high``,
``relative_lift`` (difference / control) and the ``method`` (with the reason when the
interval is NULL). A run replaces its day's rows (``replaceWhere``), so reruns are
idempotent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

TABLE = "lift"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A difference (treatment − control) and its two-sided confidence interval."""

    difference: float | None
    low: float | None
    high: float | None
    # Why low/high are NULL (written into ``method``), None when they are not.
    reason: str | None = None


EMPTY = Interval(None, None, None, "a group has no exposed users")


@dataclass(frozen=True)
class Ratio:
    """One group's per-user sums for a ratio ``Σx / Σn``: users, totals and the second
    moments the delta method needs (``Σx², Σn², Σxn`` over users)."""

    users: int
    x: float
    n: float
    xx: float
    nn: float
    xn: float


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def ratio_variance(g: Ratio) -> float:
    """Delta-method variance over users of ``g.x / g.n``, floored as the module says.

    Needs ``g.users >= 2`` and ``g.n > 0``. The residual sum of squares is expanded from
    the sums, which rounding can push a hair below zero: clamped, so no sqrt of a
    negative ever follows.
    """
    r = g.x / g.n
    rss = max(g.xx - 2 * r * g.xn + r * r * g.nn, 0.0)
    delta = g.users / (g.users - 1) * rss / (g.n * g.n)
    p = min(max((g.x + 1) / (g.n + 2), 0.0), 1.0)
    return max(delta, p * (1 - p) / (g.n + 2))


def difference_of_ratios(t: Ratio, c: Ratio, confidence: float = CONFIDENCE) -> Interval:
    """``x_t/n_t − x_c/n_c`` with the per-user delta-method interval (module docstring).

    A group without impressions gives no difference; a group of one user gives the
    difference without an interval (no variance over users can be estimated from one).
    """
    for name, g in (("treatment", t), ("control", c)):
        if g.n <= 0 or g.users <= 0:
            return Interval(None, None, None, f"{name} has no exposed users")
    d = t.x / t.n - c.x / c.n
    for name, g in (("treatment", t), ("control", c)):
        if g.users < 2:
            return Interval(d, None, None, f"{name} has {g.users} user, needs 2")
    half = _z(confidence) * math.sqrt(ratio_variance(t) + ratio_variance(c))
    return Interval(d, d - half, d + half)


def welch_interval(
    mean_t: float,
    var_t: float,
    n_t: int,
    mean_c: float,
    var_c: float,
    n_c: int,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Welch's interval of ``mean_t − mean_c`` (sample variances, unequal allowed)."""
    from scipy.stats import t

    if not n_t or not n_c:
        return EMPTY
    if n_t < 2 or n_c < 2:
        return Interval(mean_t - mean_c, None, None, "a group has 1 user, needs 2")
    a, b = max(var_t, 0.0) / n_t, max(var_c, 0.0) / n_c
    d = mean_t - mean_c
    if a + b == 0:  # every user of both groups spent the same: no uncertainty left
        return Interval(d, d, d)
    df = (a + b) ** 2 / (a**2 / (n_t - 1) + b**2 / (n_c - 1))
    q = float(t.ppf(0.5 + confidence / 2, df))
    half = q * math.sqrt(a + b)
    return Interval(d, d - half, d + half)


def moments(total: float, total_sq: float, n: int) -> tuple[float, float]:
    """Mean and sample variance (n − 1) from a sum and a sum of squares."""
    if n == 0:
        return 0.0, 0.0
    mean = total / n
    var = max(total_sq - total * total / n, 0.0) / (n - 1) if n > 1 else 0.0
    return mean, var


def lift_rows(groups: dict[str, dict[str, float]], day: date) -> list[dict[str, Any]]:
    """The ``lift`` rows of one day from per-group sums (``users, impressions, clicks,
    purchases, revenue, revenue_sq`` and the second moments ``clicks_sq,
    purchases_sq, impressions_sq, clicks_impressions, purchases_impressions``); a
    missing group counts as empty."""
    t = groups.get("treatment", {})
    c = groups.get("control", {})

    def g(side: dict[str, float], key: str) -> float:
        return float(side.get(key, 0) or 0)

    def rate(x: float, n: float) -> float | None:
        return x / n if n else None

    def ratio(side: dict[str, float], num: str) -> Ratio:
        return Ratio(
            users=int(g(side, "users")),
            x=g(side, num),
            n=g(side, "impressions"),
            xx=g(side, f"{num}_sq"),
            nn=g(side, "impressions_sq"),
            xn=g(side, f"{num}_impressions"),
        )

    rows = []
    for metric, num in (("ctr", "clicks"), ("conversion", "purchases")):
        n_t, n_c = int(g(t, "impressions")), int(g(c, "impressions"))
        iv = difference_of_ratios(ratio(t, num), ratio(c, num))
        rows.append(
            _row(
                day,
                metric,
                rate(g(t, num), n_t),
                rate(g(c, num), n_c),
                n_t,
                n_c,
                iv,
                "delta-ratio-per-user",
            )
        )
    n_t, n_c = int(g(t, "users")), int(g(c, "users"))
    mean_t, var_t = moments(g(t, "revenue"), g(t, "revenue_sq"), n_t)
    mean_c, var_c = moments(g(c, "revenue"), g(c, "revenue_sq"), n_c)
    iv = welch_interval(mean_t, var_t, n_t, mean_c, var_c, n_c)
    rows.append(
        _row(
            day,
            "revenue_per_user",
            mean_t if n_t else None,
            mean_c if n_c else None,
            n_t,
            n_c,
            iv,
            "welch",
        )
    )
    return rows


def _row(
    day: date,
    metric: str,
    treatment: float | None,
    control: float | None,
    n_t: int,
    n_c: int,
    iv: Interval,
    method: str,
) -> dict[str, Any]:
    relative = (
        iv.difference / control if iv.difference is not None and control not in (None, 0) else None
    )
    return {
        "day": day,
        "metric": metric,
        "treatment": treatment,
        "control": control,
        "n_treatment": n_t,
        "n_control": n_c,
        "difference": iv.difference,
        "ci_low": iv.low,
        "ci_high": iv.high,
        "relative_lift": relative,
        "method": method if iv.reason is None else f"{method} (no interval: {iv.reason})",
    }


def exposed_users(attributed: DataFrame) -> DataFrame:
    """Per user who saw a recommended slot: recommended impressions, those of them with an
    attributed click and with an attributed purchase (once per impression), and all
    purchase revenue (``user_id, impressions, clicks, purchases, revenue``)."""
    from pyspark.sql import functions as F

    from jobs.monitor.attribution import ORGANIC

    rec = F.col("rec_source") != ORGANIC

    def units(kind: str) -> Any:
        # Distinct impressions answered: two clicks on one slot are one clicked slot.
        return F.count_distinct(F.when(rec & (F.col("event_type") == kind), F.col("slot_id"))).cast(
            "bigint"
        )

    revenue = F.when(
        F.col("event_type") == "purchase",
        F.coalesce(F.col("price") * F.coalesce(F.col("quantity"), F.lit(1)), F.lit(0.0)),
    ).otherwise(F.lit(0.0))
    return (
        attributed.groupBy("user_id")
        .agg(
            units("impression").alias("impressions"),
            units("click").alias("clicks"),
            units("purchase").alias("purchases"),
            F.sum(revenue).cast("double").alias("revenue"),
        )
        .where("impressions > 0")
    )


def with_group(users: DataFrame, settings: Settings) -> DataFrame:
    """``users`` with ``ab_group`` decided by :func:`jobs.model.control.in_control_with_key`
    (the key derived once here, on the driver)."""
    from jobs.model.control import CONTROL, TREATMENT, control_key, in_control_with_key

    share = settings.control_share
    key = control_key(settings) if share > 0 else b""

    def assign(batches: Any) -> Any:
        for batch in batches:
            batch = batch.copy()
            batch["ab_group"] = [
                CONTROL if in_control_with_key(key, share, str(u)) else TREATMENT
                for u in batch["user_id"]
            ]
            yield batch

    schema = users.schema.simpleString()[len("struct<") : -1] + ",ab_group:string"
    return users.mapInPandas(assign, schema.replace(":", " "))


def group_sums(users: DataFrame) -> dict[str, dict[str, float]]:
    """Per group: users and the sums :func:`lift_rows` needs."""
    from pyspark.sql import functions as F

    rows = (
        users.groupBy("ab_group")
        .agg(
            F.count("*").alias("users"),
            F.sum("impressions").alias("impressions"),
            F.sum("clicks").alias("clicks"),
            F.sum("purchases").alias("purchases"),
            F.sum("revenue").alias("revenue"),
            F.sum(F.col("revenue") * F.col("revenue")).alias("revenue_sq"),
            # Second moments over users for the delta method (as doubles: no overflow).
            *[
                F.sum(F.col(a).cast("double") * F.col(b).cast("double")).alias(name)
                for name, a, b in (
                    ("clicks_sq", "clicks", "clicks"),
                    ("purchases_sq", "purchases", "purchases"),
                    ("impressions_sq", "impressions", "impressions"),
                    ("clicks_impressions", "clicks", "impressions"),
                    ("purchases_impressions", "purchases", "impressions"),
                )
            ],
        )
        .collect()
    )
    return {r["ab_group"]: r.asDict() for r in rows}


def compute_lift(spark: SparkSession, settings: Settings, day: date) -> list[dict[str, Any]]:
    """Recompute the ``lift`` rows of ``day``; returns them."""
    from pyspark.sql import functions as F

    from jobs.monitor.attribution import attribute, events_for

    attributed = attribute(
        events_for(spark, settings, day, day), settings.attribution_window_hours
    ).where(F.col("slot_day") == F.lit(day))
    sums = group_sums(with_group(exposed_users(attributed), settings))
    rows = lift_rows(sums, day)
    _write(spark, settings, day, rows)
    return rows


def _write(spark: SparkSession, settings: Settings, day: date, rows: list[dict[str, Any]]) -> None:
    location = tables.ensure_table(spark, settings, TABLE)
    now = datetime.now(UTC)
    frame = _frame([{**r, "computed_at": now} for r in rows])
    (
        spark.createDataFrame(frame, _ddl())  # three rows: no parquet detour needed
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"day = DATE'{day}'")
        .save(location)
    )


def _ddl() -> str:
    return tables.TABLES[TABLE].ddl.replace(" NOT NULL", "")


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=tables.TABLES[TABLE].columns)
    for col in ("treatment", "control", "difference", "ci_low", "ci_high", "relative_lift"):
        frame[col] = frame[col].astype("Float64")
    return frame


def lift_step(
    settings: Settings | None = None,
    day: str | date | datetime | None = None,
    spark: SparkSession | None = None,
) -> dict[str, Any]:
    """The monitor DAG's task: the lift rows of the run's day."""
    from jobs.config import get_settings
    from jobs.monitor.attribution import as_day

    settings = settings or get_settings()
    if day is None:
        raise ValueError("lift_step needs the day to compute (the run's data interval)")
    if spark is None:
        from jobs.spark import get_spark

        spark = get_spark(settings)
    d = as_day(day)
    rows = compute_lift(spark, settings, d)
    # Small and JSON-safe (XCom): the figures themselves are in the table.
    return {
        "table": TABLE,
        "day": str(d),
        "metrics": {
            r["metric"]: {k: r[k] for k in ("difference", "ci_low", "ci_high", "n_control")}
            for r in rows
        },
    }
