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


def oracle_slots(events: list[dict]) -> dict[str, tuple]:
    """(model version, source, bucket) of every counted event, by the module's rule."""

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
    impressions = [e for e in events if e["event_type"] == "impression"]
    for e in impressions:
        if e["rec_source"]:
            slot[e["event_id"]] = (e["model_version"], e["rec_source"], bucket(e["position"]))
        else:
            slot[e["event_id"]] = (None, "organic", bucket(e["position"]))
    clicks = [e for e in events if e["event_type"] == "click"]
    for e in clicks:
        hit = newest(impressions, e)
        slot[e["event_id"]] = (
            slot[hit["event_id"]] if hit else (None, "organic", bucket(e["position"]))
        )
    for e in events:
        if e["event_type"] in ("add_to_cart", "purchase"):
            hit = newest(clicks, e)
            slot[e["event_id"]] = (
                slot[hit["event_id"]] if hit else (None, "organic", bucket(e["position"]))
            )
    return slot


def oracle(events: list[dict], day: date) -> dict[tuple, dict[str, float]]:
    """The rule of the module docstring, counted one event at a time."""
    slot = oracle_slots(events)
    names = {"impression": "impressions", "click": "clicks", "add_to_cart": "add_to_carts"}
    out: dict[tuple, dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(("impressions", "clicks", "add_to_carts", "purchases", "revenue"), 0)
    )
    for e in events:
        if e["event_id"] not in slot or e["ts"].date() != day:
            continue
        row = out[slot[e["event_id"]]]
        if e["event_type"] == "purchase":
            row["purchases"] += 1
            row["revenue"] += (e["price"] or 0.0) * (e["quantity"] or 1)
        else:
            row[names[e["event_type"]]] += 1
    return dict(out)


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
    df = tables.read_or_create(spark, settings, "rec_performance").where(f"day = DATE'{day}'")
    out = {}
    for r in df.collect():
        key = (r["model_version"], r["rec_source"], r["position_bucket"])
        assert key not in out, f"two rows for {key}"
        out[key] = {
            "impressions": r["impressions"],
            "clicks": r["clicks"],
            "add_to_carts": r["add_to_carts"],
            "purchases": r["purchases"],
            "revenue": r["revenue"],
        }
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
    slot = oracle_slots(events)
    per_user: dict[str, dict[str, float]] = defaultdict(
        lambda: {"impressions": 0, "clicks": 0, "purchases": 0, "revenue": 0.0}
    )
    for e in events:
        if e["ts"].date() != DAY or e["event_id"] not in slot:
            continue
        u = per_user[e["user_id"]]
        recommended = slot[e["event_id"]][1] != "organic"
        if e["event_type"] == "impression" and recommended:
            u["impressions"] += 1
        elif e["event_type"] == "click" and recommended:
            u["clicks"] += 1
        elif e["event_type"] == "purchase":
            u["purchases"] += recommended
            u["revenue"] += (e["price"] or 0.0) * (e["quantity"] or 1)
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
