"""The champion_watch DAG run by Airflow (``dag.test()``): a champion set outside the
train DAG (a reviewer in the MLflow UI) emits the champion Asset publish is scheduled on,
once; an unchanged alias emits nothing (the task is skipped)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

DRIVER = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent, AssetModel
from airflow.utils.session import create_session
from jobs.config import get_settings
from jobs.contracts import ASSET_CHAMPION
from jobs.model.registry import CHAMPION, setup

settings = get_settings()
client = setup(settings)
name = settings.model_name
client.create_registered_model(name)
v1 = client.create_model_version(name, "file:///nowhere").version
v2 = client.create_model_version(name, "file:///nowhere").version
dag = DagBag(dag_folder=sys.argv[1]).dags["champion_watch"]

def run_once():
    run = dag.test()
    with create_session() as session:
        events = (
            session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == ASSET_CHAMPION).count()
        )
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    return {"state": str(run.state), "tasks": states, "events": events}

out = {"none": run_once()}
client.set_registered_model_alias(name, CHAMPION, v1)  # as the MLflow UI does
out["first"] = run_once()
out["again"] = run_once()
client.set_registered_model_alias(name, CHAMPION, v2)
out["moved"] = run_once()
out["tags"] = client.get_registered_model(name).tags
print("RESULT " + json.dumps(out))
"""


def test_champion_watch_emits_the_asset_when_the_alias_moves(run_driver) -> None:
    result = run_driver(DRIVER)
    assert result["none"]["tasks"] == {"announce_champion": "skipped"}, result["_error"]
    assert result["none"]["events"] == 0
    assert result["first"]["tasks"] == {"announce_champion": "success"}, result["_error"]
    assert result["first"]["events"] == 1
    assert result["again"]["tasks"] == {"announce_champion": "skipped"}
    assert result["again"]["events"] == 1
    assert result["moved"]["tasks"] == {"announce_champion": "success"}
    assert result["moved"]["events"] == 2
    assert result["tags"]["recflow.announced_version"] == "2"
