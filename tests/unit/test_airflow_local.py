"""`recflow airflow`'s environment: dates of the generated shop, loopback, unpaused DAGs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs import airflow_local
from jobs.config import IngestSchedule, Settings, load_settings
from jobs.sources.shop import STATE_FILE


def _state(settings: Settings, start: str, days: int) -> None:
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    (settings.landing_dir / STATE_FILE).write_text(
        json.dumps({"start": start, "days_written": days, "world": {}})
    )


def test_ingest_covers_exactly_the_days_the_generator_wrote(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var", gen_start="2026-10-01T00:00:00+00:00")
    # Nothing generated yet: what `recflow generate` would write with these settings.
    planned = airflow_local.shop_dates(settings)
    assert planned.start == datetime(2026, 10, 1, tzinfo=UTC) and planned.days == 7

    # The generator's state wins (a shop extended by --append or the demo's reacting day),
    # and a start inside a day counts from that day's midnight, in UTC.
    _state(settings, "2026-11-03T05:30:00+01:00", 9)
    dates = airflow_local.shop_dates(settings)
    assert dates.start == datetime(2026, 11, 3, tzinfo=UTC)
    assert dates.end == datetime(2026, 11, 12, tzinfo=UTC) and dates.days == 9

    env = airflow_local.environment(settings, 18080, base={"PATH": "/usr/bin"})
    assert env["RECFLOW_INGEST_SCHEDULE"] == "@daily"
    assert env["RECFLOW_INGEST_START"] == "2026-11-03T00:00:00+00:00"
    # The last interval starts on the shop's last day: none starts at its end.
    assert env["RECFLOW_INGEST_END"] == "2026-11-11T23:59:59+00:00"
    # The DAG file reads exactly these at parse time, and accepts them.
    parsed = IngestSchedule(
        ingest_schedule=env["RECFLOW_INGEST_SCHEDULE"],
        ingest_start=env["RECFLOW_INGEST_START"],
        ingest_end=env["RECFLOW_INGEST_END"],
    )
    assert parsed.ingest_end == "2026-11-11T23:59:59+00:00"
    # Each launch gets its own id, which names its processes for stop_group.
    again = airflow_local.environment(settings, 18080, base={"PATH": "/usr/bin"})
    assert again[airflow_local.LAUNCH_KEY] != env[airflow_local.LAUNCH_KEY]


def test_the_server_stays_on_loopback_and_explicit_settings_win(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var")
    base = {
        "PATH": "/usr/bin",
        "RECFLOW_INGEST_SCHEDULE": "@hourly",
        "RECFLOW_INGEST_START": "2026-11-05T00:00:00+00:00",
    }
    env = airflow_local.environment(settings, 18081, base=base)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1" and env["AIRFLOW__API__PORT"] == "18081"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18081/execution/"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert Path(env["AIRFLOW__CORE__DAGS_FOLDER"], "ingest.py").exists()
    assert Path(env["AIRFLOW_HOME"]).is_absolute() and Path(env["RECFLOW_DATA_ROOT"]).is_absolute()
    assert env["RECFLOW_INGEST_SCHEDULE"] == "@hourly"
    assert env["RECFLOW_INGEST_START"] == "2026-11-05T00:00:00+00:00"
    assert "RECFLOW_INGEST_END" not in env
    assert env["PATH"].split(":")[-1] == "/usr/bin"


def test_a_broken_state_file_is_an_error_not_a_guess(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var")
    settings.landing_dir.mkdir(parents=True)
    (settings.landing_dir / STATE_FILE).write_text('{"start": "2026-11-01T00:00:00+00:00"}')
    with pytest.raises(ValueError, match="generator state"):
        airflow_local.shop_dates(settings)


def test_the_login_is_read_from_what_airflow_generated(tmp_path: Path) -> None:
    assert airflow_local.login(tmp_path) is None
    (tmp_path / airflow_local.PASSWORDS_FILE).write_text("{not json")
    assert airflow_local.login(tmp_path) is None
    (tmp_path / airflow_local.PASSWORDS_FILE).write_text(json.dumps({"admin": "s3cret"}))
    assert airflow_local.login(tmp_path) == ("admin", "s3cret")


def test_an_ingest_end_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        IngestSchedule(ingest_end="2026-11-12T00:00:00")


def test_task_processes_in_groups_of_their_own_are_found_by_their_launch(
    tmp_path: Path,
) -> None:
    """Airflow runs each task in a process group of its own: stopping standalone's group
    leaves them running, so they are found by the launch id they inherit, and a process
    that merely shares the AIRFLOW_HOME (a shell that exported it) is not."""
    import os
    import subprocess
    import sys

    home = str(tmp_path / "airflow-scheduler")
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    task = subprocess.Popen(
        sleep,
        env={**os.environ, "AIRFLOW_HOME": home, airflow_local.LAUNCH_KEY: "launch-1"},
        start_new_session=True,
    )
    shell_env = {**os.environ, "AIRFLOW_HOME": home}
    shell = subprocess.Popen(sleep, env=shell_env, start_new_session=True)
    try:
        assert airflow_local.groups_with_env(airflow_local.LAUNCH_KEY, "launch-1") == {task.pid}
        assert not airflow_local.groups_with_env(airflow_local.LAUNCH_KEY, "launch-2")
    finally:
        for child in (task, shell):
            child.kill()
            child.wait()
    assert not airflow_local.groups_with_env(airflow_local.LAUNCH_KEY, "launch-1")


def test_a_second_launch_on_the_same_home_is_refused(tmp_path: Path) -> None:
    import os

    assert airflow_local.running_launch(tmp_path) is None
    airflow_local.record_launch(tmp_path, os.getpid())
    assert airflow_local.running_launch(tmp_path) == os.getpid()
    airflow_local.record_launch(tmp_path, 2**22 + 12345)  # beyond pid_max: not running
    assert airflow_local.running_launch(tmp_path) is None
