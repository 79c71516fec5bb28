"""Running a DAG with Airflow in its own process (own AIRFLOW_HOME, SQLite metadata DB).

Airflow reads AIRFLOW_HOME once per process, so each end-to-end test writes a small
driver script and runs it in a subprocess (:func:`support.run_airflow_driver`); the
driver prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import run_airflow_driver


@pytest.fixture
def run_driver(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    def run(code: str, **env_overrides: str) -> dict[str, Any]:
        # A guard against a wedged run, not a speed check: a loaded 2-core machine has
        # taken 20 min over the pipeline driver (alone it takes about 11).
        return run_airflow_driver(code, tmp_path, timeout=2700, **env_overrides)

    return run
