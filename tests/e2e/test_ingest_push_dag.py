"""The ingest DAG's last task under Airflow: its figures reach a real Pushgateway in their
own group, and a Pushgateway that is down leaves the ingest run successful."""

from __future__ import annotations

import httpx
import pytest
from support import free_port

from jobs.monitor import servers

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.spark,
    pytest.mark.skipif(
        servers.shutil.which("prometheus-pushgateway") is None,
        reason="Pushgateway not installed (`make monitoring-deps`)",
    ),
]

DRIVER = """
import json, os, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
from jobs.config import get_settings
from jobs.sources.shop import generate

settings = get_settings()
report = generate(settings, malformed_fraction=0.05, duplicate_fraction=0.0)
dag = DagBag(dag_folder=sys.argv[1]).dags["ingest"]
out = []
for url in (os.environ["DOWN_URL"], os.environ["UP_URL"]):
    os.environ["RECFLOW_PUSHGATEWAY_URL"] = url
    day = report.days[len(out)]
    run = dag.test(logical_date=pendulum.parse(day).add(days=1))
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    out.append({"state": str(run.state), "push": states.get("push_ingest_metrics")})
print("RESULT " + json.dumps({"runs": out}))
"""


def test_ingest_pushes_its_group_and_survives_a_down_gateway(run_driver, tmp_path) -> None:
    from jobs.config import load_settings

    gateway = servers.start_pushgateway(load_settings(), tmp_path / "gw")
    try:
        result = run_driver(
            DRIVER,
            RECFLOW_INGEST_SCHEDULE="@daily",
            RECFLOW_GEN_USERS="200",
            RECFLOW_GEN_ITEMS="50",
            RECFLOW_GEN_DAYS="2",
            DOWN_URL=f"http://127.0.0.1:{free_port()}",
            UP_URL=gateway.url,
        )
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    finally:
        gateway.stop()
    down, up = result["runs"]
    # Down: the run and its push task still succeed (the push is logged as not done).
    assert down == {"state": "success", "push": "success"}, result["_error"]
    assert up == {"state": "success", "push": "success"}, result["_error"]
    assert 'recflow_ingest_last_success_timestamp_seconds{group="ingest"' in text
    assert 'recflow_ingest_quarantine_ratio{group="ingest"' in text
