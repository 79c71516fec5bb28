"""rec_performance (jobs.monitor.attribution) against an independent count in plain Python.

The events are built here: organic and recommended impressions (cdn and service, two
model versions, every position bucket and none), clicks inside and outside the window,
the same item shown twice before a click, carts and purchases after clicks and without
one. The oracle below reads the rule from the module docstring, not from the code.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.monitor.attribution import compute_performance, performance_step

pytestmark = pytest.mark.spark

DAY = date(2026, 11, 3)
START = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW = timedelta(hours=24)


def bucket(position: int | None) -> str:
    if position is None or position < 1:
        return "unknown"
    return "1-3" if position <= 3 else "4-10" if position <= 10 else "11+"


def generated_events(seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    events: list[dict] = []

    def add(kind: str, ts: datetime, user: str, item: str, **extra: object) -> dict:
        event = {
            "event_id": f"e{len(events):05d}",
            "ts": ts,
            "user_id": user,
            "item_id": item,
            "event_type": kind,
            "position": extra.get("position"),
            "price": extra.get("price"),
            "quantity": extra.get("quantity"),
            "rec_source": extra.get("rec_source"),
            "publish_id": extra.get("publish_id"),
            "model_version": extra.get("model_version"),
        }
        events.append(event)
        return event

    for _ in range(700):
        user, item = f"u{rng.randrange(25)}", f"i{rng.randrange(12)}"
        ts = START + timedelta(seconds=rng.randrange(3 * 86400))
        position = rng.choice([None, 1, 2, 3, 4, 7, 10, 11, 30])
        source = rng.choice([None, None, "cdn", "service"])
        model = rng.choice(["3", "4"]) if source else None
        add("impression", ts, user, item, position=position, rec_source=source, model_version=model)
        if rng.random() < 0.3:  # the same item shown again, maybe from another source
            again = ts + timedelta(minutes=rng.randrange(1, 600))
            src2 = rng.choice([None, "cdn", "service"])
            add(
                "impression",
                again,
                user,
                item,
                position=rng.choice([1, 5, 12]),
                rec_source=src2,
                model_version=rng.choice(["3", "4"]) if src2 else None,
            )
        if rng.random() < 0.45:
            # Inside the window mostly, sometimes well after it.
            gap = timedelta(hours=rng.choice([0, 0.5, 2, 23.9, 24, 30, 50]))
            click = add("click", ts + gap, user, item, position=rng.choice([None, 2, 8]))
            if rng.random() < 0.5:
                after = click["ts"] + timedelta(hours=rng.choice([0.1, 5, 23, 26]))
                kind = rng.choice(["add_to_cart", "purchase"])
                add(
                    kind,
                    after,
                    user,
                    item,
                    price=round(rng.uniform(1, 90), 2) if kind == "purchase" else None,
                    quantity=rng.choice([None, 1, 3]) if kind == "purchase" else None,
                )
    for _ in range(60):  # clicks and purchases with no impression at all: organic
        user, item = f"u{rng.randrange(25)}", f"i{rng.randrange(12)}"
        ts = START + timedelta(seconds=rng.randrange(3 * 86400))
        kind = rng.choice(["click", "purchase", "view"])
        add(kind, ts, user, item, position=rng.choice([None, 4]), price=5.0, quantity=2)
    return events


def oracle_attribution(events: list[dict]) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """By the module's rule: (model version, source, bucket) of every counted event, and
    its unit (the impression it answers, or itself when it answers none; id and day)."""

    def newest(candidates: list[dict], at: dict) -> dict | None:
        inside = [
            c
            for c in candidates
            if c["user_id"] == at["user_id"]
            and c["item_id"] == at["item_id"]
            and timedelta(0) <= at["ts"] - c["ts"] <= WINDOW
        ]
        return max(inside, key=lambda c: (c["ts"], c["event_id"]), default=None)

    slot: dict[str, tuple] = {}
    unit: dict[str, tuple] = {}
    impressions = [e for e in events if e["event_type"] == "impression"]
    for e in impressions:
        if e["rec_source"]:
            slot[e["event_id"]] = (e["model_version"], e["rec_source"], bucket(e["position"]))
        else:
            slot[e["event_id"]] = (None, "organic", bucket(e["position"]))
        unit[e["event_id"]] = (e["event_id"], e["ts"].date())
    clicks = [e for e in events if e["event_type"] == "click"]
    for e in clicks:
        hit = newest(impressions, e)
        slot[e["event_id"]] = (
            slot[hit["event_id"]] if hit else (None, "organic", bucket(e["position"]))
        )
        unit[e["event_id"]] = unit[hit["event_id"]] if hit else (e["event_id"], e["ts"].date())
    for e in events:
        if e["event_type"] in ("add_to_cart", "purchase"):
            hit = newest(clicks, e)
            slot[e["event_id"]] = (
                slot[hit["event_id"]] if hit else (None, "organic", bucket(e["position"]))
            )
            unit[e["event_id"]] = unit[hit["event_id"]] if hit else (e["event_id"], e["ts"].date())
    return slot, unit


def oracle_slots(events: list[dict]) -> dict[str, tuple]:
    return oracle_attribution(events)[0]


def oracle(events: list[dict], day: date) -> dict[tuple, dict[str, float]]:
    """The rule of the module docstring: distinct units per kind, on the unit's day."""
    slot, unit = oracle_attribution(events)
    names = {
        "impression": "impressions",
        "click": "clicks",
        "add_to_cart": "add_to_carts",
        "purchase": "purchases",
    }
    seen: dict[tuple, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    revenue: dict[tuple, float] = defaultdict(float)
    for e in events:
        if e["event_id"] not in slot or unit[e["event_id"]][1] != day:
            continue
        key = slot[e["event_id"]]
        seen[key][names[e["event_type"]]].add(unit[e["event_id"]][0])
        if e["event_type"] == "purchase":
            revenue[key] += (e["price"] or 0.0) * (e["quantity"] or 1)
    return {
        key: {**{n: len(units.get(n, ())) for n in names.values()}, "revenue": revenue[key]}
        for key, units in seen.items()
    }


def write_events(spark, settings: Settings, events: list[dict]) -> None:
    from pyspark.sql import functions as F

    location = tables.ensure_table(spark, settings, "events")
    rows = [
        {**e, "event_date": e["ts"].date(), "session_id": None, "request_id": None} for e in events
    ]
    frame = spark.createDataFrame(
        rows,
        "event_id STRING, ts TIMESTAMP, user_id STRING, item_id STRING, event_type STRING, "
        "position INT, price DOUBLE, quantity INT, rec_source STRING, publish_id STRING, "
        "model_version STRING, event_date DATE, session_id STRING, request_id STRING",
    ).withColumn("_ingested_at", F.current_timestamp())
    columns = tables.TABLES["events"].columns
    frame.select(
        *[F.col(c) if c in frame.columns else F.lit(None).cast("string").alias(c) for c in columns]
    ).write.format("delta").mode("append").save(location)


def table_rows(spark, settings: Settings, day: date) -> dict[tuple, dict[str, float]]:
    """The day's rows by slot, summed over ``ab_group`` (each group's rows are checked)."""
    df = tables.read_or_create(spark, settings, "rec_performance").where(f"day = DATE'{day}'")
    out: dict[tuple, dict[str, float]] = {}
    seen = set()
    for r in df.collect():
        key = (r["model_version"], r["rec_source"], r["position_bucket"])
        assert (key, r["ab_group"]) not in seen, f"two rows for {key} {r['ab_group']}"
        assert r["ab_group"] in ("treatment", "control")
        seen.add((key, r["ab_group"]))
        row = out.setdefault(
            key, dict.fromkeys(("impressions", "clicks", "add_to_carts", "purchases"), 0)
        )
        for name in ("impressions", "clicks", "add_to_carts", "purchases"):
            row[name] += r[name]
        row["revenue"] = row.get("revenue", 0.0) + r["revenue"]
        if r["impressions"]:
            assert r["ctr"] == pytest.approx(r["clicks"] / r["impressions"])
            assert r["conversion"] == pytest.approx(r["purchases"] / r["impressions"])
        else:
            assert r["ctr"] is None and r["conversion"] is None
    return out


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, counts in want.items():
        revenue = counts.pop("revenue")
        row = dict(got[key])
        assert row.pop("revenue") == pytest.approx(revenue), key
        assert row == counts, key


@pytest.fixture
def lake(tmp_path: Path) -> Settings:
    return load_settings(data_root=tmp_path / "var", spark_shuffle_partitions=2)


def test_counts_match_an_independent_count_and_reruns_change_nothing(spark, lake) -> None:
    events = generated_events()
    write_events(spark, lake, events)
    result = performance_step(lake, DAY.isoformat(), spark=spark)
    assert result["rows"] > 0
    want = oracle(events, DAY)
    # The generated day has every kind of slot, so the comparison covers them all.
    assert {k[1] for k in want} == {"organic", "cdn", "service"}
    assert {k[2] for k in want} == {"1-3", "4-10", "11+", "unknown"}
    assert_same(table_rows(spark, lake, DAY), oracle(events, DAY))

    version = tables.version(spark, lake, "rec_performance")
    performance_step(lake, DAY.isoformat(), spark=spark)
    assert tables.version(spark, lake, "rec_performance") == version + 1
    assert_same(table_rows(spark, lake, DAY), oracle(events, DAY))

    # A window of days: each day against its own count; nothing outside it is written.
    compute_performance(spark, lake, date(2026, 11, 1), date(2026, 11, 2))
    for day in (date(2026, 11, 1), date(2026, 11, 2)):
        assert_same(table_rows(spark, lake, day), oracle(events, day))
    assert_same(table_rows(spark, lake, DAY), oracle(events, DAY))


def test_the_rule_on_hand_built_cases(spark, lake) -> None:
    t0 = datetime(2026, 11, 3, 8, tzinfo=UTC)
    h = timedelta(hours=1)
    base = {"position": None, "price": None, "quantity": None, "publish_id": None}

    def ev(eid: str, kind: str, ts: datetime, item: str, **kw: object) -> dict:
        return {
            **base,
            "rec_source": None,
            "model_version": None,
            **kw,
            "event_id": eid,
            "ts": ts,
            "user_id": "ann",
            "item_id": item,
            "event_type": kind,
        }

    events = [
        # Two impressions of item a: the newer one (service, position 5) wins the click.
        ev("1", "impression", t0 - 20 * h, "a", rec_source="cdn", model_version="3", position=1),
        ev("2", "impression", t0 - 2 * h, "a", rec_source="service", model_version="4", position=5),
        ev("3", "click", t0, "a"),
        ev("4", "purchase", t0 + h, "a", price=10.0, quantity=2),
        # Item b: the click comes 25 h after the only impression: organic at its position.
        ev("5", "impression", t0 - 25 * h, "b", rec_source="cdn", model_version="3", position=2),
        ev("6", "click", t0, "b", position=14),
        # Item c: a purchase with no click before it: organic; an impression on its own.
        ev("7", "impression", t0, "c", position=12),
        ev("8", "purchase", t0 + h, "c", price=3.0),
    ]
    write_events(spark, lake, events)
    performance_step(lake, DAY, spark=spark)
    got = table_rows(spark, lake, DAY)
    assert got[("4", "service", "4-10")] == {
        "impressions": 1,  # impression 2, the same morning
        "clicks": 1,
        "add_to_carts": 0,
        "purchases": 1,
        "revenue": 20.0,
    }
    assert got[(None, "organic", "11+")] == {
        "impressions": 1,
        "clicks": 1,
        "add_to_carts": 0,
        "purchases": 0,
        "revenue": 0.0,
    }
    assert got[(None, "organic", "unknown")]["purchases"] == 1
    assert ("3", "cdn", "1-3") not in got  # impressions 1 and 5 were the day before
    assert_same(got, oracle(events, DAY))


def test_responses_count_once_per_impression_on_the_impressions_day(spark, lake) -> None:
    """The reviewer's double counts (each assertion failed before the per-impression rule):
    two clicks on one impression, two purchases after one click, a click after midnight on
    yesterday's impression."""
    t0 = datetime(2026, 11, 3, 8, tzinfo=UTC)
    h = timedelta(hours=1)

    def ev(eid: str, kind: str, ts: datetime, item: str, **kw: object) -> dict:
        return {
            "position": None,
            "price": None,
            "quantity": None,
            "publish_id": None,
            "rec_source": None,
            "model_version": None,
            **kw,
            "event_id": eid,
            "ts": ts,
            "user_id": "ann",
            "item_id": item,
            "event_type": kind,
        }

    events = [
        ev("a1", "impression", t0, "a", rec_source="cdn", model_version="3", position=1),
        ev("a2", "click", t0 + h, "a"),
        ev("a3", "click", t0 + 2 * h, "a"),
        ev("b1", "impression", t0, "b", rec_source="service", model_version="4", position=5),
        ev("b2", "click", t0 + h, "b"),
        ev("b3", "purchase", t0 + 2 * h, "b", price=5.0, quantity=1),
        ev("b4", "purchase", t0 + 3 * h, "b", price=7.0, quantity=2),
        # Shown at 23:30 on the 2nd, clicked at 00:30 on the 3rd: counts for the 2nd.
        ev("c1", "impression", t0 - 8.5 * h, "c", rec_source="cdn", model_version="3", position=12),
        ev("c2", "click", t0 - 7.5 * h, "c"),
    ]
    write_events(spark, lake, events)
    compute_performance(spark, lake, date(2026, 11, 2), DAY)
    got = table_rows(spark, lake, DAY)
    assert got[("3", "cdn", "1-3")]["clicks"] == 1  # two clicks, one clicked impression
    service = got[("4", "service", "4-10")]
    assert (service["purchases"], service["revenue"]) == (1, 19.0)  # revenue sums both
    assert ("3", "cdn", "11+") not in got  # the after-midnight click is not the 3rd's
    yesterday = table_rows(spark, lake, date(2026, 11, 2))
    assert yesterday[("3", "cdn", "11+")] == {
        "impressions": 1,
        "clicks": 1,
        "add_to_carts": 0,
        "purchases": 0,
        "revenue": 0.0,
    }
    assert_same(got, oracle(events, DAY))
    for rows in (got, yesterday):  # every recommended rate is a proportion
        for key, r in rows.items():
            assert r["clicks"] <= r["impressions"] and r["purchases"] <= r["impressions"], key

    # lift of that day runs to rows (it crashed with "math domain error" before).
    from jobs.monitor.lift import lift_step

    result = lift_step(lake, DAY, spark=spark)
    assert set(result["metrics"]) == {"ctr", "conversion", "revenue_per_user"}


def test_rows_are_split_by_the_users_keyed_group(spark, tmp_path: Path) -> None:
    """rec_performance carries ab_group from the same keyed bucket the publish and the
    service use, so a model version's CTR can leave control traffic out."""
    from jobs.model.control import in_control

    lake = load_settings(data_root=tmp_path / "var", spark_shuffle_partitions=2, control_share=0.5)
    users = [f"user-{i}" for i in range(40)]
    ctl = next(u for u in users if in_control(u, lake))
    trt = next(u for u in users if not in_control(u, lake))
    t0 = datetime(2026, 11, 3, 8, tzinfo=UTC)
    events = []
    for n, (user, clicks) in enumerate(((ctl, True), (trt, False))):
        for kind in ("impression", "click") if clicks else ("impression",):
            events.append(
                {
                    "event_id": f"e{len(events)}",
                    "ts": t0 + timedelta(minutes=len(events)),
                    "user_id": user,
                    "item_id": f"i{n}",
                    "event_type": kind,
                    "position": 1 if kind == "impression" else None,
                    "price": None,
                    "quantity": None,
                    "rec_source": "cdn" if kind == "impression" else None,
                    "publish_id": None,
                    "model_version": "3" if kind == "impression" else None,
                }
            )
    write_events(spark, lake, events)
    performance_step(lake, DAY, spark=spark)
    got = {
        r["ab_group"]: (r["impressions"], r["clicks"])
        for r in tables.read_or_create(spark, lake, "rec_performance").collect()
    }
    assert got == {"control": (1, 1), "treatment": (1, 0)}  # treatment-only CTR: 0


def test_lift_counts_each_group_like_an_independent_count(spark, tmp_path: Path) -> None:
    """lift's sums per group against plain Python: exposed users, recommended impressions,
    attributed clicks and purchases, revenue per user (mean and the Welch interval)."""
    from scipy import stats

    from jobs.model.control import in_control
    from jobs.monitor.lift import lift_step

    lake = load_settings(data_root=tmp_path / "var", spark_shuffle_partitions=2, control_share=0.4)
    events = generated_events(seed=11)
    write_events(spark, lake, events)
    result = lift_step(lake, DAY.isoformat(), spark=spark)
    slot, unit = oracle_attribution(events)
    per_user: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    money: dict[str, float] = defaultdict(float)
    for e in events:
        if e["event_id"] not in slot or unit[e["event_id"]][1] != DAY:
            continue
        u = per_user[e["user_id"]]
        recommended = slot[e["event_id"]][1] != "organic"
        kind = {"impression": "impressions", "click": "clicks", "purchase": "purchases"}
        if e["event_type"] in kind and recommended:
            u[kind[e["event_type"]]].add(unit[e["event_id"]][0])
        if e["event_type"] == "purchase":
            money[e["user_id"]] += (e["price"] or 0.0) * (e["quantity"] or 1)
    per_user = {
        k: {**{n: len(v[n]) for n in ("impressions", "clicks", "purchases")}, "revenue": money[k]}
        for k, v in per_user.items()
    }
    exposed = {k: v for k, v in per_user.items() if v["impressions"]}
    groups = {
        g: [v for k, v in exposed.items() if in_control(k, lake) == (g == "control")]
        for g in ("treatment", "control")
    }
    assert groups["control"] and groups["treatment"]
    rows = {
        r["metric"]: r
        for r in tables.read_or_create(spark, lake, "lift").where(f"day = DATE'{DAY}'").collect()
    }
    assert set(rows) == {"ctr", "conversion", "revenue_per_user"} == set(result["metrics"])
    for metric, num in (("ctr", "clicks"), ("conversion", "purchases")):
        row = rows[metric]
        n_t = sum(u["impressions"] for u in groups["treatment"])
        n_c = sum(u["impressions"] for u in groups["control"])
        assert (row["n_treatment"], row["n_control"]) == (n_t, n_c)
        assert row["treatment"] == pytest.approx(sum(u[num] for u in groups["treatment"]) / n_t)
        assert row["control"] == pytest.approx(sum(u[num] for u in groups["control"]) / n_c)
        assert row["ci_low"] < row["difference"] < row["ci_high"]
        # The per-user delta-method half width, computed here from the users themselves.
        var = {}
        for g in ("treatment", "control"):
            us = groups[g]
            n = sum(u["impressions"] for u in us)
            r = sum(u[num] for u in us) / n
            rss = sum((u[num] - r * u["impressions"]) ** 2 for u in us)
            x = sum(u[num] for u in us)
            p = (x + 1) / (n + 2)
            var[g] = max(len(us) / (len(us) - 1) * rss / n**2, p * (1 - p) / (n + 2))
        half = 1.959963984540054 * (var["treatment"] + var["control"]) ** 0.5
        assert row["ci_high"] - row["difference"] == pytest.approx(half)
    rev = rows["revenue_per_user"]
    t = [u["revenue"] for u in groups["treatment"]]
    c = [u["revenue"] for u in groups["control"]]
    assert (rev["n_treatment"], rev["n_control"]) == (len(t), len(c))
    ref = stats.ttest_ind(t, c, equal_var=False).confidence_interval(0.95)
    assert rev["ci_low"] == pytest.approx(ref.low) and rev["ci_high"] == pytest.approx(ref.high)
    # A rerun replaces the day: still three rows.
    lift_step(lake, DAY, spark=spark)
    assert tables.read_or_create(spark, lake, "lift").count() == 3


def test_an_events_table_from_before_attribution_gains_the_columns(spark, lake) -> None:
    """silver/events written by an older recflow: ensure_table adds the three columns (old
    rows read NULL, i.e. organic) and the attribution runs on it."""
    from delta.tables import DeltaTable
    from pyspark.sql.types import StructType

    old_ddl = tables.TABLES["events"].ddl.split(", rec_source")[0]
    location = tables.path(lake, "events")
    DeltaTable.createIfNotExists(spark).location(location).addColumns(
        StructType.fromDDL(old_ddl)
    ).partitionedBy("event_date").execute()
    ts = datetime(2026, 11, 3, 9, tzinfo=UTC)
    spark.createDataFrame(
        [("e1", ts, ts.date(), "ann", "a", "impression")],
        "event_id STRING, ts TIMESTAMP, event_date DATE, user_id STRING, item_id STRING, "
        "event_type STRING",
    ).write.format("delta").mode("append").save(location)
    tables._EVOLVED.clear()  # as in a new process
    tables.ensure_table(spark, lake, "events")
    columns = spark.read.format("delta").load(location).columns
    assert columns[-3:] == ["rec_source", "publish_id", "model_version"]
    performance_step(lake, DAY, spark=spark)
    assert table_rows(spark, lake, DAY) == {
        (None, "organic", "unknown"): {
            "impressions": 1,
            "clicks": 0,
            "add_to_carts": 0,
            "purchases": 0,
            "revenue": 0.0,
        }
    }
