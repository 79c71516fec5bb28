"""The publish DAG run by Airflow: a registered champion and the lake's stock in, every
user's JSON out, ``latest.json`` flipped to it; out-of-stock items nowhere."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

DRIVER = """
import json, sys
from datetime import UTC, datetime
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[1]).parent / "tests"))
from airflow.dag_processing.dagbag import DagBag
from support import clustered_model, register_champion
from jobs import tables
from jobs.config import get_settings
from jobs.publish.steps import current, recs_for
from jobs.spark import get_spark

settings = get_settings()
model = clustered_model()
version = register_champion(settings, model, settings.data_root / "work")
spark = get_spark(settings)
location = tables.ensure_table(spark, settings, "items")
now = datetime(2026, 11, 29, tzinfo=UTC)
rows = [(str(i), i.endswith("3"), now) for i in model.item_ids]  # item-3, item-13, ... in stock
spark.createDataFrame(rows, "item_id string, in_stock boolean, updated_at timestamp") \\
    .write.format("delta").mode("append").save(location)
spark.stop()

run = DagBag(dag_folder=sys.argv[1]).dags["publish"].test()
import bentoml
bentos = [str(b.tag) for b in bentoml.bentos.list()]
live = current(settings)
lists = [recs_for(settings, str(u))[1] for u in model.user_ids]
print("RESULT " + json.dumps({
    "state": str(run.state),
    "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
    "version": version,
    "live": live,
    "items": sorted({i["item_id"] for body in lists for i in body["items"]}),
    "sources": sorted({body["source"] for body in lists}),
    "bentos": bentos,
}))
"""


def test_publish_dag_publishes_the_champion_and_flips_latest(run_driver) -> None:
    result = run_driver(DRIVER, RECFLOW_PUBLISH_K="5")
    assert result["state"] == "success", result["_error"]
    assert set(result["tasks"].values()) == {"success"}, result["_error"]
    live = result["live"]
    assert live["model"]["version"] == result["version"]
    assert live["publish_id"].endswith(f"-v{result['version']}")
    assert result["sources"] == ["als"]
    # Only items whose id ends in 3 are in stock in the lake's catalog.
    assert result["items"] and all(i.endswith("3") for i in result["items"])
    # The online service of the published model was built as a Bento.
    assert result["bentos"] == [f"recflow:v{result['version']}"]
