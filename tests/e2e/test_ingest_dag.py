"""The ingest DAG run by Airflow (``dag.test``) over generated hours."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

DRIVER = """
import json, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
from jobs.config import get_settings
from jobs.sources.shop import generate
from jobs import tables
from jobs.spark import get_spark

settings = get_settings()
generate(settings, days=1, malformed_fraction=0.05, duplicate_fraction=0.02)
dag = DagBag(dag_folder=sys.argv[1]).dags["ingest"]
states = []
for hour in (11, 12):  # a data interval ends at the logical date given to dag.test
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 1, hour, tz="UTC"))
    states.append(str(run.state))
spark = get_spark(settings)
audit = tables.read_or_create(spark, settings, "ingest_audit").collect()
print("RESULT " + json.dumps({
    "states": states,
    "batches": sorted(r.batch_id for r in audit),
    "balanced": all(r.balanced for r in audit),
    "quality": [dict(r.quality) for r in audit],
    "silver": tables.read_or_create(spark, settings, "events").count(),
    "gold": tables.read_or_create(spark, settings, "interactions").count(),
}))
"""


def test_ingest_dag_runs_two_hours(run_driver) -> None:
    result = run_driver(DRIVER, RECFLOW_GEN_USERS="400", RECFLOW_GEN_ITEMS="100")
    assert result["states"] == ["success", "success"], result["_error"]
    assert result["batches"] == ["20261101T1000-20261101T1100", "20261101T1100-20261101T1200"]
    assert result["balanced"] is True
    assert all("silver_events" in q and "gold_interactions" in q for q in result["quality"])
    assert result["silver"] > 0 and result["gold"] > 0
