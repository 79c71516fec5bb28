"""The ingest DAG run by Airflow (``dag.test``) over generated hours, in its own process.

Airflow reads AIRFLOW_HOME once per process, so the run happens in a subprocess with its
own SQLite metadata database and recflow data root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = """
import json, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
from jobs.config import get_settings
from jobs.generate import generate
from jobs import lake
from jobs.spark_session import get_spark

settings = get_settings()
generate(settings, days=1, malformed_fraction=0.05, duplicate_fraction=0.02)
dag = DagBag(dag_folder=sys.argv[1]).dags["ingest"]
states = []
for hour in (11, 12):  # a data interval ends at the logical date given to dag.test
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 1, hour, tz="UTC"))
    states.append(str(run.state))
spark = get_spark(settings)
audit = lake.read(spark, settings, "ingest_audit").collect()
print("RESULT " + json.dumps({
    "states": states,
    "batches": sorted(r.batch_id for r in audit),
    "balanced": all(r.balanced for r in audit),
    "silver": lake.read(spark, settings, "events").count(),
    "gold": lake.read(spark, settings, "interactions").count(),
}))
"""


def _first_error(output: str) -> str:
    """The first task error of a run (Airflow logs a lot; the cause is what matters)."""
    at = output.find("Traceback")
    return output[max(0, at - 500) : at + 4000] if at >= 0 else output[-3000:]


def test_ingest_dag_runs_two_hours(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "RECFLOW_DATA_ROOT": str(tmp_path / "var"),
        "RECFLOW_GEN_USERS": "400",
        "RECFLOW_GEN_ITEMS": "100",
        "RECFLOW_SPARK_MASTER": "local[2]",
        "RECFLOW_SPARK_SHUFFLE_PARTITIONS": "2",
    }
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True)
    # A file, not ``python -c``: pyspark.sql.connect (imported by Great Expectations)
    # takes a __main__ without __file__ for a doctest run and calls sys.exit(0).
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    done = subprocess.run(
        [sys.executable, str(driver), str(ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    output = done.stdout + done.stderr
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, _first_error(output)
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["states"] == ["success", "success"], _first_error(output)
    assert result["batches"] == ["20261101T1000-20261101T1100", "20261101T1100-20261101T1200"]
    assert result["balanced"] is True
    assert result["silver"] > 0 and result["gold"] > 0
