"""Running a DAG with Airflow in its own process (own AIRFLOW_HOME, SQLite metadata DB).

Airflow reads AIRFLOW_HOME once per process, so each end-to-end test writes a small
driver script and runs it in a subprocess; the driver prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _first_error(output: str) -> str:
    """The first task error of a run (Airflow logs a lot; the cause is what matters)."""
    at = output.find("Traceback")
    return output[max(0, at - 500) : at + 4000] if at >= 0 else output[-3000:]


@pytest.fixture
def run_driver(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    def run(code: str, **env_overrides: str) -> dict[str, Any]:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "RECFLOW_DATA_ROOT": str(tmp_path / "var"),
            "RECFLOW_SPARK_MASTER": "local[2]",
            "RECFLOW_SPARK_SHUFFLE_PARTITIONS": "2",
            **env_overrides,
        }
        airflow = Path(sys.executable).parent / "airflow"
        subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True)
        # A file, not ``python -c``: pyspark.sql.connect (imported by Great Expectations)
        # takes a __main__ without __file__ for a doctest run and calls sys.exit(0).
        driver = tmp_path / "driver.py"
        driver.write_text(code)
        done = subprocess.run(
            [sys.executable, str(driver), str(ROOT / "dags")],
            env=env,
            capture_output=True,
            text=True,
            # A guard against a wedged run, not a speed check: a loaded 2-core machine
            # has taken 20 min over the pipeline driver (alone it takes about 11).
            timeout=2700,
            cwd=ROOT,
        )
        output = done.stdout + done.stderr
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        assert lines, _first_error(output)
        result = json.loads(lines[-1].removeprefix("RESULT "))
        result["_error"] = _first_error(output)
        return result

    return run
