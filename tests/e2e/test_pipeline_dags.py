"""The whole flow run by Airflow, one DAG after the other, over one lake.

ingest (a generated week with malformed and duplicated lines, daily intervals) → features
(Feast apply + materialize) → train (trains and promotes, then skips when nothing new
arrived) → publish (every user's JSON, ``latest.json`` flipped, the Bento built) →
privacy (two people erased everywhere and verified). Each
DAG runs with ``dag.test()`` as its Asset would start it. One lake for all four: each
stage reads what the previous one wrote, as in production, and the lake is built once.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

DRIVER = """
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

out = {"days": report.days, "ingest": []}
for day in report.days:  # a daily data interval ends at the logical date given to dag.test
    run = dags["ingest"].test(logical_date=pendulum.parse(day).add(days=1))
    out["ingest"].append(str(run.state))
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


def test_ingest_features_train_publish_by_airflow(run_driver) -> None:
    result = run_driver(
        DRIVER,
        RECFLOW_INGEST_SCHEDULE="@daily",
        RECFLOW_GEN_USERS="1500",
        RECFLOW_GEN_ITEMS="150",
        RECFLOW_GEN_DAYS="7",  # a week: enough history per user for CF to beat popularity
        RECFLOW_GATE_MIN_LIFT="0.05",
        RECFLOW_ALS_GRID="[]",
        RECFLOW_SEARCH_TRIALS="1",  # the defaults only: the e2e tests the flow, not the search
        RECFLOW_ALS_ITERATIONS="8",
        RECFLOW_EVAL_STRATIFIED="false",
        RECFLOW_PUBLISH_K="5",
    )
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
