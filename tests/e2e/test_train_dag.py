"""The train DAG run by Airflow: it trains and promotes when there is no model, and
short-circuits when nothing new arrived since."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

DRIVER = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from jobs.config import get_settings
from jobs.sources.shop import generate
from jobs.ingest.steps import run_interval
from jobs.model.registry import CHAMPION, alias_version, setup

settings = get_settings()
generate(settings, days=7)  # a week: enough history per user for CF to beat popularity
run_interval("2026-11-01T00:00:00+00:00", "2026-11-08T00:00:00+00:00", settings=settings)
dag = DagBag(dag_folder=sys.argv[1]).dags["train"]
runs = []
for _ in range(2):
    run = dag.test()
    runs.append({
        "state": str(run.state),
        "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
    })
client = setup(settings)
champion = alias_version(client, settings.model_name, CHAMPION)
versions = client.search_model_versions(f"name = '{settings.model_name}'")
print("RESULT " + json.dumps({
    "runs": runs,
    "champion": None if champion is None else str(champion.version),
    "versions": len(versions),
}))
"""


def test_train_dag_trains_once_then_skips(run_driver) -> None:
    result = run_driver(
        DRIVER,
        RECFLOW_GEN_USERS="2000",
        RECFLOW_GEN_ITEMS="200",
        RECFLOW_GATE_MIN_LIFT="0.05",
        RECFLOW_ALS_GRID="[]",
        RECFLOW_ALS_ITERATIONS="8",
        RECFLOW_EVAL_STRATIFIED="false",
    )
    first, second = result["runs"]
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
