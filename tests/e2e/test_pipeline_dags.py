"""The whole flow run by Airflow, one DAG after the other, over one lake.

ingest (a generated week with malformed and duplicated lines, daily intervals) → features
(Feast apply + materialize) → train (trains and promotes, then skips when nothing new
arrived) → publish (every user's JSON, ``latest.json`` flipped, the Bento built) →
privacy (two people erased everywhere and verified) → the loop closed: days of the
reacting shop shown the live lists, each through ingest → monitor → train → publish
(``bench/shift_recovery.py``'s ``react``): quiet days raise no drift alert and train
nothing; a taste shift is detected, retrained through the gate, published, and the
next day's CTR recovers. Each DAG runs with ``dag.test()`` as its Asset would start it.
One lake for all: each stage reads what the previous one wrote, as in production, and the
lake is built once, by the module's ``spine`` fixture; the loop (marked ``long``: about a
quarter of an hour, run by ``make test-all``) continues on it rather than paying for a
week, a first champion and a first publish again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port, run_airflow_driver

from jobs.monitor import servers

# Long (`make test-all`): about 11 minutes alone on two cores and twice that on a loaded
# machine, more than a third of what CI may spend on the whole suite.
pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.long]

# The week is days 0–6; days 7–9 react without drift, tastes shift on day 10; days 11
# and 12 show the recovery.
QUIET, SHIFT = 3, 10

DRIVER = (
    f"""
QUIET, SHIFT = {QUIET}, {SHIFT}
"""
    + """
import json, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
from jobs import tables
from jobs.config import get_settings
from jobs.features import definitions, online
from jobs.model.registry import CHAMPION, alias_version, setup
from jobs.publish.steps import current, recs_for
from jobs.sources.shop import generate
from jobs.spark import get_spark
from pyspark.sql.functions import col as tables_col

settings = get_settings()
report = generate(settings, malformed_fraction=0.02, duplicate_fraction=0.02)
dags = DagBag(dag_folder=sys.argv[1]).dags

def tasks(run):
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}

import os
out = {"days": report.days, "ingest": [], "push": []}
# The first two runs push their figures: to a Pushgateway that is down, then to one that
# is up (the others push nothing: the URL is unset).
gateways = [os.environ.pop("DOWN_URL"), os.environ.pop("UP_URL", "")]
for i, day in enumerate(report.days):  # a daily interval ends at the logical date given
    if i < 2 and gateways[i]:
        os.environ["RECFLOW_PUSHGATEWAY_URL"] = gateways[i]
    else:
        os.environ.pop("RECFLOW_PUSHGATEWAY_URL", None)
    get_settings.cache_clear()  # settings are read once per process; this one changes them
    run = dags["ingest"].test(logical_date=pendulum.parse(day).add(days=1))
    out["ingest"].append(str(run.state))
    out["push"].append(tasks(run).get("push_ingest_metrics"))
settings = get_settings()
spark = get_spark(settings)
audit = tables.read_or_create(spark, settings, "ingest_audit").collect()
quarantine = tables.read_or_create(spark, settings, "quarantine").where("source = 'events'")
out.update(
    batches=sorted(r.batch_id for r in audit),
    balanced=all(r.balanced for r in audit),
    read=sum(r.read_lines for r in audit),
    quarantined=sum(r.quarantined for r in audit),
    quarantine_rows=quarantine.count(),
    generated_malformed=report.malformed,
    malformed_not_consented=report.malformed_not_consented,
    quality=[dict(r.quality) for r in audit],
    silver=tables.read_or_create(spark, settings, "events").count(),
    gold=tables.read_or_create(spark, settings, "interactions").count(),
)
last_end = pendulum.parse(report.days[-1]).add(days=1)

run = dags["features"].test(logical_date=last_end)
fs = definitions.store(settings)
VIEWS = definitions.VIEW_KEYS
users = sorted(r.user_id for r in tables.read_or_create(spark, settings, "user_stats").collect())
out["features"] = {
    "state": str(run.state),
    "tasks": tasks(run),
    "ends": sorted({str(fs.get_feature_view(v).most_recent_end_time) for v in VIEWS}),
    "users": len(users),
    "with_stats": len(online.user_stats(fs, users)),
    "with_recent": sum(1 for v in online.recent_items(fs, users).values() if v),
}

out["train"] = []
for _ in range(2):
    run = dags["train"].test()
    out["train"].append({"state": str(run.state), "tasks": tasks(run)})
client = setup(settings)
champion = alias_version(client, settings.model_name, CHAMPION)
out["champion"] = None if champion is None else str(champion.version)
out["versions"] = len(client.search_model_versions(f"name = '{settings.model_name}'"))

stock = {r.item_id: r.in_stock for r in tables.read_or_create(spark, settings, "items").collect()}
spark.stop()  # the publish DAG starts its own session, as a fresh worker would
run = dags["publish"].test()
import bentoml
lists = [recs_for(settings, u)[1] for u in users[:300]]
out["publish"] = {
    "state": str(run.state),
    "tasks": tasks(run),
    "live": current(settings),
    "out_of_stock": sorted(i for i, ok in stock.items() if ok is False),
    "items": sorted({i["item_id"] for body in lists for i in body["items"]}),
    "sources": sorted({body["source"] for body in lists}),
    "bentos": [str(b.tag) for b in bentoml.bentos.list()],
}

# privacy: two people ask to be forgotten; the DAG erases and verifies (its own session).
from jobs.privacy.erasure import models_remaining
from jobs.privacy.steps import request_step
gone = [u for u in users if recs_for(settings, u)[1]["source"] == "als"][:2]
request_step(gone, settings=settings)
spark = get_spark(settings)
run = dags["privacy"].test()
spark = get_spark(settings)
requests = tables.read_or_create(spark, settings, "erasure_requests").collect()
out["privacy"] = {
    "state": str(run.state),
    "tasks": tasks(run),
    "sources": [recs_for(settings, u)[1]["source"] for u in gone],
    "silver": tables.read_or_create(spark, settings, "events")
    .where(tables_col("user_id").isin(gone)).count(),
    "requests": sorted((r.status, r.user_id) for r in requests),
    "models": models_remaining(settings, gone),
}

print("RESULT " + json.dumps(out))
"""
)

# The loop closed, on the lake the spine left: the reacting shop, shown the live lists,
# through ingest → monitor → train (only drift trains: the threshold is out of reach) →
# publish, as the benchmark bench/shift_recovery.py runs it. Quiet days, then tastes shift.
LOOP_DRIVER = (
    f"""
QUIET, SHIFT = {QUIET}, {SHIFT}
"""
    + """
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import DagBag
from jobs.config import get_settings

settings = get_settings()
dags = DagBag(dag_folder=sys.argv[1]).dags
sys.path.insert(0, str(Path(sys.argv[1]).parent / "bench"))
from shift_recovery import react
say = lambda line: print(line, flush=True)
out = {"loop": react(settings, dags, QUIET + 3, SHIFT, say=say)}
if out["loop"][-3]["trained"] is False and out["loop"][-2]["trained"]:
    # Detected the day after the shift: one more day to measure the recovery.
    out["loop"] += react(settings, dags, 1, SHIFT, say=say)
print("RESULT " + json.dumps(out))
"""
)


# The shop and model settings both drivers run with (the loop continues the spine's lake).
ENV = {
    "RECFLOW_INGEST_SCHEDULE": "@daily",
    "RECFLOW_GEN_USERS": "1500",
    "RECFLOW_GEN_ITEMS": "150",
    "RECFLOW_GEN_DAYS": "7",  # a week: enough history per user for CF to beat popularity
    "RECFLOW_GATE_MIN_LIFT": "0.05",
    "RECFLOW_ALS_GRID": "[]",
    "RECFLOW_SEARCH_TRIALS": "1",  # the defaults only: the e2e tests the flow, not the search
    "RECFLOW_ALS_ITERATIONS": "8",
    "RECFLOW_EVAL_STRATIFIED": "false",
    "RECFLOW_PUBLISH_K": "5",
    # The loop: only drift (or no model) trains, and nothing waits between trainings.
    "RECFLOW_RETRAIN_THRESHOLD": str(10**12),
    "RECFLOW_MIN_TRAIN_INTERVAL_HOURS": "0",
}
# A guard against a wedged run, not a speed check: a loaded 2-core machine has taken 20 min
# over the pipeline driver (alone it takes about 11).
TIMEOUT = 2700


@pytest.fixture(scope="module")
def spine(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """The week through ingest, features, train, publish and privacy; the lake stays for
    the loop. Returns the driver's answer, what the Pushgateway held and the work folder."""
    from jobs.config import load_settings

    work = tmp_path_factory.mktemp("e2e")
    gateway = None
    if servers.shutil.which("prometheus-pushgateway"):  # `make monitoring-deps` (CI: always)
        gateway = servers.start_pushgateway(load_settings(), work / "gw")
    try:
        result = run_airflow_driver(
            DRIVER,
            work,
            timeout=TIMEOUT,
            DOWN_URL=f"http://127.0.0.1:{free_port()}",
            UP_URL=gateway.url if gateway else "",
            **ENV,
        )
        pushed = httpx.get(f"{gateway.url}/metrics", timeout=10).text if gateway else ""
    finally:
        if gateway:
            gateway.stop()
    return result, pushed, work


def test_ingest_features_train_publish_by_airflow(spine) -> None:
    result, pushed, _ = spine
    _assert_the_pipeline(result)
    # Down: the run and its push task still succeed (the push is logged as not done); up:
    # the ingest group's gauges are on the Pushgateway.
    assert result["push"][:2] == ["success", "success"], result["_error"]
    if pushed:
        assert 'recflow_ingest_last_success_timestamp_seconds{group="ingest"' in pushed
        assert 'recflow_ingest_quarantine_ratio{group="ingest"' in pushed


def test_the_loop_closes_by_airflow(spine) -> None:
    """Days of the reacting shop on the spine's lake, each through ingest, monitor, train
    and publish (about 15 minutes on two cores: `make test-all`)."""
    _, _, work = spine
    result = run_airflow_driver(LOOP_DRIVER, work, timeout=TIMEOUT, **ENV)
    _assert_the_loop(result)


def _assert_the_pipeline(result: dict) -> None:
    # ingest: every day a successful run; every batch balances; nothing lost or doubled
    assert result["ingest"] == ["success"] * 7, result["_error"]
    days = result["days"]
    assert result["batches"] == sorted(
        f"{d.replace('-', '')}T0000-{e.replace('-', '')}T0000"
        for d, e in zip(days, [*days[1:], "2026-11-08"], strict=True)
    )
    assert result["balanced"] is True
    # Every malformed line is quarantined, except those of non-consenting users: consent is
    # judged first, and their content is not kept even in quarantine.
    assert result["quarantined"] == result["quarantine_rows"] > 0
    assert (
        result["quarantined"] >= result["generated_malformed"] - result["malformed_not_consented"]
    )
    assert all("silver_events" in q and "gold_interactions" in q for q in result["quality"])
    assert 0 < result["gold"] < result["silver"] < result["read"]

    features = result["features"]
    assert features["state"] == "success", result["_error"]
    assert features["tasks"] == {
        "apply_definitions": "success",
        "materialize_features": "success",
    }
    assert features["ends"] == ["2026-11-08 00:00:00+00:00"]
    assert features["users"] > 0 and features["with_stats"] == features["users"]
    assert 0 < features["with_recent"] <= features["users"]

    first, second = result["train"]
    assert first["state"] == "success", result["_error"]
    assert first["tasks"] == {
        "should_train": "success",
        "train_model": "success",
        "champion_changed": "success",
        "announce_champion": "success",
    }, result["_error"]
    assert result["champion"] == "1" and result["versions"] == 1
    assert second["state"] == "success"
    assert second["tasks"]["should_train"] == "success"
    assert {second["tasks"][t] for t in ("train_model", "announce_champion")} == {"skipped"}

    publish = result["publish"]
    assert publish["state"] == "success", result["_error"]
    assert set(publish["tasks"].values()) == {"success"}, result["_error"]
    assert publish["live"]["model"]["version"] == result["champion"]
    assert publish["live"]["publish_id"].endswith(f"-v{result['champion']}")
    assert "als" in publish["sources"]
    assert publish["items"] and not set(publish["items"]) & set(publish["out_of_stock"])
    assert publish["bentos"] == [f"recflow:v{result['champion']}"]

    privacy = result["privacy"]
    assert privacy["state"] == "success", result["_error"]
    assert privacy["tasks"] == {"erase": "success", "load_access_log": "success"}
    # The two people's lists are gone from the CDN (they get popular.json), their events
    # from silver and their rows from every model copy; the requests keep no id.
    assert privacy["sources"] == ["popular", "popular"]
    assert privacy["silver"] == 0 and privacy["models"] == []
    assert privacy["requests"] == [["done", None], ["done", None]]


def _assert_the_loop(result: dict) -> None:
    """Quiet days raise nothing; a taste shift is detected on its day or the next, a drift
    training is promoted and published the same day, and within the two days after it
    the lists are clicked more than on the shift day.

    A new champion trained one day after the shift still has mostly old days in its own
    reference window, so the monitor may alert again the next day and retrain once more
    (a new champion is a new episode); each such model must be published too.
    """
    rows = result["loop"]
    by_day = {row["day"]: row for row in rows}
    assert sorted(by_day)[: QUIET + 3] == list(range(SHIFT - QUIET, SHIFT + 3)), rows
    first = by_day[SHIFT - QUIET]["champion_before"]
    quiet = [by_day[d] for d in range(SHIFT - QUIET, SHIFT)]
    assert all(not r["drift_alerts"] for r in quiet), [r["drift_alerts"] for r in quiet]
    assert not any(r["trained"] for r in quiet), quiet
    assert all(r["champion_after"] == first == r["published"] for r in quiet), quiet
    assert all(r["impressions_cdn"] > 0 for r in quiet), quiet

    detected = [r for r in rows if r["day"] >= SHIFT and r["drift_alerts"]]
    assert detected and detected[0]["day"] in (SHIFT, SHIFT + 1), rows
    answer = detected[0]
    assert answer["trained"] and answer["champion_before"] == first, answer
    assert answer["champion_after"] not in (None, first), "the gate kept the pre-shift model"
    # Whatever trained in the loop was published the day it was promoted.
    assert all(r["published"] == r["champion_after"] for r in rows), rows
    later = [by_day[answer["day"] + n] for n in (1, 2) if answer["day"] + n in by_day]
    assert len(later) == 2, rows
    assert max(r["ctr_cdn"] for r in later) > by_day[SHIFT]["ctr_cdn"], rows
