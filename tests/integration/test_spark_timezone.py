"""Timestamps survive a worker whose local time zone is not UTC.

PySpark converts naive datetimes with the process's local zone; the lake stores naive
UTC. A child process with ``TZ=Europe/Berlin`` round-trips 02:00 on the spring-forward
day (a local time that does not exist in Berlin) through Spark: it must come back as 02:00.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
CHILD = """
import datetime, sys
from jobs.config import load_settings
from jobs.spark import get_spark
spark = get_spark(load_settings(data_root=sys.argv[1], spark_master="local[1]"))
value = datetime.datetime(2026, 3, 29, 2, 0)
back = spark.createDataFrame([(value,)], "t TIMESTAMP").collect()[0]["t"]
print("ROUNDTRIP", back.isoformat())
"""


def test_naive_utc_timestamps_round_trip_in_any_local_zone(tmp_path: Path) -> None:
    env = {**os.environ, "TZ": "Europe/Berlin", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert "ROUNDTRIP 2026-03-29T02:00:00" in out.stdout, out.stdout + out.stderr[-2000:]
