"""The features DAG run by Airflow (``dag.test``) over a freshly ingested lake."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

DRIVER = """
import json, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
from jobs import tables
from jobs.features import definitions, online
from jobs.config import get_settings
from jobs.sources.shop import generate
from jobs.ingest.steps import run_interval
from jobs.spark import get_spark

settings = get_settings()
generate(settings, days=1)
run_interval("2026-11-01T00:00:00+00:00", "2026-11-01T11:00:00+00:00", settings=settings)
dag = DagBag(dag_folder=sys.argv[1]).dags["features"]
# A manual run: its data interval ends at the logical date, which is the export's end.
run = dag.test(logical_date=pendulum.datetime(2026, 11, 1, 11, tz="UTC"))
fs = definitions.store(settings)
stats = tables.read_or_create(get_spark(settings), settings, "user_stats")
users = sorted(r.user_id for r in stats.collect())
print("RESULT " + json.dumps({
    "state": str(run.state),
    "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
    "ends": sorted(
        {str(fs.get_feature_view(v).most_recent_end_time) for v in definitions.VIEW_KEYS}
    ),
    "users": len(users),
    "with_stats": len(online.user_stats(fs, users)),
    "with_recent": sum(1 for v in online.recent_items(fs, users).values() if v),
}))
"""


def test_features_dag_applies_and_materializes(run_driver) -> None:
    result = run_driver(
        DRIVER,
        RECFLOW_GEN_USERS="300",
        RECFLOW_GEN_ITEMS="60",
        RECFLOW_QUALITY_ENABLED="false",
    )
    assert result["state"] == "success", result["_error"]
    assert result["tasks"] == {
        "apply_definitions": "success",
        "materialize_features": "success",
    }, result["_error"]
    assert result["ends"] == ["2026-11-01 11:00:00+00:00"]
    assert result["users"] > 0 and result["with_stats"] == result["users"]
    assert 0 < result["with_recent"] <= result["users"]
