"""The drift run on a small real lake (Spark + Delta, a champion in a real MLflow registry),
and the monitor DAG run by Airflow (``dag.test()``) emitting the drift Asset on alert.

The lake is written directly (silver events and items, no ingest): a week of reference
events the champion "trained on" (its run is tagged with that silver version, as
training tags it), then a day drawn the same way, then a shifted day (events concentrated
on one category and five of its items, a third of them by users the model never saw).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support import clustered_model, register_champion, run_airflow_driver

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.model.registry import CHAMPION, alias_version, setup
from jobs.monitor.monitor import TAG_SILVER_VERSION, read_drift, report_path, run_drift
from jobs.train.trigger import read_drift as trigger_drift

pytestmark = [pytest.mark.spark, pytest.mark.integration]

N_USERS, N_ITEMS, N_CATEGORIES = 300, 200, 6
FIRST = date(2026, 11, 1)
SAME_DAY, SHIFTED_DAY = date(2026, 11, 8), date(2026, 11, 9)
TYPES, TYPE_P = ["view", "click", "add_to_cart", "purchase"], [0.7, 0.2, 0.06, 0.04]
# Metrics the shifted day must alert on, and the one it must not (its type mix is unchanged).
SHIFT_ALERTS = {"category_mix:psi", "item_popularity:psi", "unknown_user_share:share"}


def _day(rng: np.random.Generator, day: date, shifted: bool = False) -> pd.DataFrame:
    """One day of events: ~8 per user; shifted, on five items of category 0 and by a third
    of unknown users."""
    counts = rng.poisson(8, N_USERS)
    users = np.repeat([f"user-{u}" for u in range(N_USERS)], counts)
    n = users.size
    if shifted:
        users = np.where(rng.random(n) < 0.35, [f"new-{i % 150}" for i in range(n)], users)
        items = rng.choice(np.arange(0, 30, N_CATEGORIES), n)  # five items, all category 0
    else:
        items = rng.integers(0, N_ITEMS, n)
    start = datetime.combine(day, datetime.min.time())
    return pd.DataFrame(
        {
            "event_id": [f"{day}-{i}" for i in range(n)],
            "ts": start + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
            "event_date": day,
            "user_id": users,
            "item_id": [f"item-{i}" for i in items],
            "event_type": rng.choice(TYPES, n, p=TYPE_P),
        }
    )


def _append_events(spark: Any, settings: Settings, frame: pd.DataFrame, tmp: Path) -> int:
    """Append to silver events (through parquet: createDataFrame from pandas is slow)."""
    from pyspark.sql import functions as F

    location = tables.ensure_table(spark, settings, "events")
    file = tmp / f"events-{frame['event_date'].iloc[0]}.parquet"
    frame.assign(event_date=pd.to_datetime(frame["event_date"])).to_parquet(
        file, coerce_timestamps="us", allow_truncated_timestamps=True
    )
    columns = {name: kind for name, kind in tables.ddl_fields(tables.TABLES["events"].ddl)}
    raw = spark.read.parquet(str(file)).withColumn("_ingested_at", F.current_timestamp())
    out = raw.select(
        *[
            (F.col(c) if c in raw.columns else F.lit(None)).cast(kind.lower()).alias(c)
            for c, kind in columns.items()
        ]
    )
    out.write.format("delta").mode("append").save(location)
    return tables.version(spark, settings, "events")


@pytest.fixture(scope="module")
def lake(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("monitor")
    settings = load_settings(
        data_root=root / "var", spark_shuffle_partitions=2, spark_master="local[2]"
    )
    rng = np.random.default_rng(7)
    week = pd.concat([_day(rng, FIRST + timedelta(days=d)) for d in range(7)], ignore_index=True)
    trained_on = _append_events(spark, settings, week, root)
    items = pd.DataFrame(
        {
            "item_id": [f"item-{i}" for i in range(N_ITEMS)],
            "category": [f"cat-{i % N_CATEGORIES}" for i in range(N_ITEMS)],
        }
    )
    items_rows = [
        (r.item_id, None, r.category, None, 1.0, True, None, datetime(2026, 10, 1), None, None)
        for r in items.itertuples()
    ]
    spark.createDataFrame(items_rows, tables.TABLES["items"].ddl).write.format("delta").mode(
        "append"
    ).save(tables.ensure_table(spark, settings, "items"))
    version = register_champion(settings, clustered_model(N_USERS, N_ITEMS, seed=3), root / "work")
    client = setup(settings)
    run_id = alias_version(client, settings.model_name, CHAMPION).run_id
    client.set_tag(run_id, TAG_SILVER_VERSION, str(trained_on))  # as training tags it
    same, shifted = _day(rng, SAME_DAY), _day(rng, SHIFTED_DAY, shifted=True)
    _append_events(spark, settings, same, root)
    _append_events(spark, settings, shifted, root)
    # The lake begins inside the reference span and its first event is past 00:00: that
    # first day counts as partial and the reference drops it (whole days only).
    assert week["ts"].min() > datetime.combine(FIRST, datetime.min.time())
    return {
        "settings": settings,
        "client": client,
        "version": version,
        "root": root,
        "n_reference": int((week["event_date"] > FIRST).sum()),
        "n_same": len(same),
        "n_shifted": len(shifted),
    }


def _at(day: date) -> datetime:
    """The logical date whose one-day window is ``day``."""
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)


def test_same_distribution_raises_no_alert(spark: Any, lake: dict[str, Any]) -> None:
    settings = lake["settings"]
    result = run_drift(spark, settings, lake["client"], "monitor/same", _at(SAME_DAY))
    assert result.recorded, result.reason
    assert result.alerts == [], result.as_dict()
    rows = read_drift(spark, settings, "monitor/same")
    assert len(rows) == 9  # 3 numeric metrics x (psi, ks) + 2 mixes + the unknown share
    assert set(rows["level"]) <= {"ok", "warn"}
    mix = rows[rows.metric == "event_type_mix"].iloc[0]
    # Counted independently: the generated frames, not the lake.
    assert (mix.n_reference, mix.n_current) == (lake["n_reference"], lake["n_same"])
    assert rows["model_version"].unique().tolist() == [lake["version"]]
    assert rows["window_start"].iloc[0] == datetime(2026, 11, 8)
    unknown = rows[rows.metric == "unknown_user_share"].iloc[0]
    assert unknown.value == 0.0 and unknown.level == "ok"


def test_a_mid_day_run_on_unchanged_data_does_not_alert(spark: Any, lake: dict[str, Any]) -> None:
    """A run at 12:00 (as gold triggers it) measures the last whole day. The old window,
    the 24 h before the run, split every user's day in two and alerted on user_activity."""
    settings = lake["settings"]
    noon = datetime.combine(SAME_DAY, datetime.min.time(), UTC) + timedelta(hours=12)
    result = run_drift(spark, settings, lake["client"], "monitor/noon", noon)
    assert result.recorded, result.reason
    assert result.alerts == [], result.as_dict()
    assert result.window_start == datetime(2026, 11, 7, tzinfo=UTC).isoformat()
    assert result.window_end == datetime(2026, 11, 8, tzinfo=UTC).isoformat()


@pytest.fixture(scope="module")
def shifted(spark: Any, lake: dict[str, Any]) -> Any:
    """The drift run of the shifted day (one run, shared by the tests that read it)."""
    return run_drift(spark, lake["settings"], lake["client"], "monitor/shift", _at(SHIFTED_DAY))


def test_a_shifted_day_alerts_on_the_right_metrics(
    spark: Any, lake: dict[str, Any], shifted: Any
) -> None:
    settings = lake["settings"]
    assert set(shifted.alerts) >= SHIFT_ALERTS, shifted.as_dict()
    assert "event_type_mix:psi" not in shifted.alerts
    rows = read_drift(spark, settings, "monitor/shift").set_index(["metric", "statistic"])
    category = rows.loc[("category_mix", "psi")]
    # By hand: the reference spreads over six categories (~1/6 each), the shifted day is
    # all category 0: PSI ≈ (1 − 1/6)·ln 6 + 5·(1/6 − ε)·ln((1/6)/ε) ≈ 7.68.
    assert category.value == pytest.approx(
        (5 / 6) * np.log(6) + 5 * (1 / 6 - 1e-4) * np.log((1 / 6) / 1e-4), rel=0.05
    )
    assert category.n_current == lake["n_shifted"]
    unknown = rows.loc[("unknown_user_share", "share")]
    assert unknown.value == pytest.approx(0.35, abs=0.03)
    assert (unknown.warn_at, unknown.alert_at) == (0.1, 0.2)
    page = report_path(settings, "monitor/shift").read_text()
    assert page.count("data:image/png;base64,") == 6 and "<td>alert</td>" in page


def test_a_drop_of_the_champions_ctr_alerts(spark: Any, lake: dict[str, Any]) -> None:
    """The inputs of SAME_DAY are unchanged, but its recommendations are clicked 40 % as
    often as on the champion's week before: only the outcome shows it. Rows of another
    model version, of the control group and of organic slots must not count."""
    settings = lake["settings"]
    version = lake["version"]
    base = datetime(2026, 11, 30, 12)  # computed after the window closed

    def row(day: date, source: str, impressions: int, clicks: int, **kw: Any) -> tuple:
        values = {"model_version": version, "ab_group": "treatment", **kw}
        return (
            day, values["model_version"], source, "1-3", impressions, clicks, 0, 0, 0.0,
            clicks / impressions, 0.0, base, values["ab_group"],
        )  # fmt: skip

    rows = [row(SAME_DAY - timedelta(days=d), "cdn", 1000, 100) for d in range(1, 8)]
    rows += [
        row(SAME_DAY, "cdn", 800, 32),
        row(SAME_DAY, "service", 200, 8),  # 40 of 1,000 in all: 4 % against 10 %
        row(SAME_DAY, "cdn", 500, 100, ab_group="control"),
        row(SAME_DAY, "cdn", 500, 100, model_version="old"),
        row(SAME_DAY, "organic", 5000, 500),
        row(SAME_DAY - timedelta(days=8), "cdn", 1000, 900),  # before the trailing week
    ]
    location = tables.ensure_table(spark, settings, "rec_performance")
    spark.createDataFrame(rows, tables.TABLES["rec_performance"].ddl).write.format("delta").mode(
        "append"
    ).save(location)
    try:
        result = run_drift(spark, settings, lake["client"], "monitor/ctr", _at(SAME_DAY))
        assert result.alerts == ["rec_ctr:drop"], result.as_dict()
        drop = read_drift(spark, settings, "monitor/ctr").set_index(["metric", "statistic"])
        drop = drop.loc[("rec_ctr", "drop")]
        assert drop.value == pytest.approx(1 - 0.04 / 0.10)
        assert (drop.n_reference, drop.n_current) == (7000, 1000)
        assert drop.p_value < 1e-9 and drop.level == "alert"
        page = report_path(settings, "monitor/ctr").read_text()
        assert "rec_ctr" in page and page.count("data:image/png;base64,") == 7
        # Attribution of the day computed before the day ended (a feedback task that
        # failed this time leaves such rows): no verdict on it.
        stale = [(*row(SAME_DAY, "cdn", 10, 1)[:11], datetime(2026, 11, 8, 18), "treatment")]
        spark.createDataFrame(stale, tables.TABLES["rec_performance"].ddl).write.format(
            "delta"
        ).mode("append").save(location)
        again = run_drift(spark, settings, lake["client"], "monitor/ctr-stale", _at(SAME_DAY))
        assert again.recorded and "rec_ctr:drop" not in again.alerts + again.warnings
        assert "rec_ctr" not in set(read_drift(spark, settings, "monitor/ctr-stale").metric)
    finally:
        from delta.tables import DeltaTable

        # The module's other runs have no CTR, and these runs are no part of their history.
        DeltaTable.forPath(spark, location).delete()
        DeltaTable.forPath(spark, tables.path(settings, "drift")).delete(
            "run_id IN ('monitor/ctr', 'monitor/ctr-stale')"
        )


def test_a_rerun_replaces_its_rows(spark: Any, lake: dict[str, Any], shifted: Any) -> None:
    settings, client = lake["settings"], lake["client"]
    first = read_drift(spark, settings, "monitor/shift")
    total = len(read_drift(spark, settings))
    again = run_drift(spark, settings, client, "monitor/shift", _at(SHIFTED_DAY))
    second = read_drift(spark, settings, "monitor/shift")
    assert len(second) == again.rows == 9
    assert len(read_drift(spark, settings)) == total
    keep = ["metric", "statistic", "value", "p_value", "level", "n_reference", "n_current"]
    pd.testing.assert_frame_equal(
        first[keep].sort_values(keep[:2]).reset_index(drop=True),
        second[keep].sort_values(keep[:2]).reset_index(drop=True),
    )
    assert second["computed_at"].min() >= first["computed_at"].max()


def test_no_champion_records_nothing_and_says_why(spark: Any, lake: dict[str, Any]) -> None:
    settings = lake["settings"].model_copy(update={"model_name": "recflow-no-champion"})
    before = len(read_drift(spark, settings))
    result = run_drift(spark, settings, lake["client"], "monitor/none", _at(SAME_DAY))
    assert result.recorded is False and "no champion" in result.reason
    assert len(read_drift(spark, settings)) == before


def test_the_trigger_reads_the_newest_run_and_reports_an_unreadable_table(
    spark: Any, lake: dict[str, Any], shifted: Any, tmp_path: Path
) -> None:
    settings = lake["settings"]
    drift, problem = trigger_drift(spark, settings)
    assert problem is None and drift is not None
    # Independently: the run of the newest window in the table (the latest computed among
    # runs of that window), alert or not.
    rows = read_drift(spark, settings)
    newest = rows.sort_values(["window_end", "computed_at"]).iloc[-1]
    assert drift["run_id"] == newest["run_id"]
    assert drift["model_version"] == lake["version"]
    runs = rows[rows.run_id == newest["run_id"]]
    assert drift["alert"] == bool((runs.level == "alert").any())
    assert drift["window_end"] == pytest.approx(
        runs["window_end"].iloc[0].tz_localize("UTC").timestamp()
    )
    # The shifted run alone, newest once rerun: its alerts, an episode it starts.
    run_drift(spark, settings, lake["client"], "monitor/shift", _at(SHIFTED_DAY))
    drift, _ = trigger_drift(spark, settings)
    assert drift["run_id"] == "monitor/shift" and drift["alert"] is True
    assert {m.split("=")[0] for m in drift["metrics"]} >= SHIFT_ALERTS
    assert drift["episode_start"] == _at(SHIFTED_DAY).timestamp()
    # A backfill of an older window, computed after it, is not the lake's present state.
    run_drift(spark, settings, lake["client"], "monitor/backfill", _at(SAME_DAY))
    assert trigger_drift(spark, settings)[0]["run_id"] == "monitor/shift"
    # A table whose log is garbage: reported, and no drift.
    broken = settings.model_copy(update={"lake_dir": str(tmp_path / "lake")})
    log_dir = Path(tables.path(broken, "drift")) / "_delta_log"
    log_dir.mkdir(parents=True)
    (log_dir / "00000000000000000000.json").write_text("{not json\n")
    drift, problem = trigger_drift(spark, broken)
    assert drift is None and problem and "unreadable" in problem


DRIVER = """
import json, sys
from datetime import datetime, UTC
from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent, AssetModel
from airflow.utils.session import create_session

dag = DagBag(dag_folder=sys.argv[1]).dags["monitor"]
out = {}
# One run, on the shifted day (the no-alert path is the run_drift test above): each
# dag.test() costs a JVM's worth of Delta work on a busy machine.
for name, day in (("shift", datetime(2026, 11, 10, tzinfo=UTC)),):
    run = dag.test(logical_date=day)
    with create_session() as session:
        events = (
            session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "recflow_drift").count()
        )
    out[name] = {"tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
                 "events": events, "state": str(run.state)}
print("RESULT " + json.dumps(out))
"""


def test_the_monitor_dag_emits_the_drift_asset_on_alert(
    lake: dict[str, Any], tmp_path: Path
) -> None:
    settings: Settings = lake["settings"]
    out = run_airflow_driver(
        DRIVER, tmp_path, timeout=600, RECFLOW_DATA_ROOT=str(settings.data_root)
    )
    tasks = out["shift"]["tasks"]
    # The drift branch, and the run as a whole: feedback runs too (the lake has no answer
    # log, so it has nothing to attribute, which is a success), export_metrics has no
    # Pushgateway configured, and `checked` fails the run if any of them failed.
    drift_tasks = ("compute_drift", "drift_alert", "announce_drift")
    drifted = {t: tasks.get(t) for t in drift_tasks}
    assert drifted == dict.fromkeys(drift_tasks, "success"), out["_error"]
    assert tasks.get("feedback") == "success", out["_error"]
    assert tasks.get("export_metrics") == "success" and tasks.get("checked") == "success", tasks
    assert out["shift"]["state"] == "success", out
    assert out["shift"]["events"] == 1
    # One standalone report per DAG run, named after the run.
    assert len(list(settings.drift_reports_dir.glob("monitor_manual__*.html"))) == 1
