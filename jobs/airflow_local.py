"""`recflow airflow`: the real scheduler, API server and UI on this data root, in one command.

`make demo` runs the DAGs with ``dag.test()`` (one process). To watch them scheduled, a
newcomer needs ``airflow standalone`` with a dozen settings right: the DAGs folder, no
example DAGs, recflow's DAGs unpaused, loopback only, and an ingest schedule whose
intervals are the generated shop's days (the embedded hourly schedule from
``RECFLOW_INGEST_START`` would otherwise catch up a month of mostly empty hours, minutes
each). This module builds that environment once, for the command and for
``bench/standalone.py``, and reads the login Airflow generates.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobs.config import Settings
from jobs.sources.shop import STATE_FILE

DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"
# Every process of one launch carries this variable with the launch's own id.
LAUNCH_KEY = "AIRFLOW_STANDALONE_LAUNCH"
# Airflow's simple auth manager writes the generated passwords here, under AIRFLOW_HOME.
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


@dataclass(frozen=True)
class ShopDates:
    """The span of the generated shop's events: whole UTC days."""

    start: datetime
    end: datetime

    @property
    def days(self) -> int:
        return round((self.end - self.start) / timedelta(days=1))


def shop_dates(settings: Settings) -> ShopDates:
    """The days the generator wrote (its state file in landing), else the settings'.

    The state file counts what was really written, so a shop extended with
    ``recflow generate --append`` (or by the demo's reacting day) is covered whole.
    """
    state_path = settings.landing_dir / STATE_FILE
    start, days = settings.gen_start, settings.gen_days
    try:
        state = json.loads(state_path.read_text())
        start, days = state["start"], int(state["days_written"])
    except FileNotFoundError:
        pass  # nothing generated yet: the settings say what `recflow generate` will write
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{state_path} is not a generator state file: {exc}") from None
    first = datetime.fromisoformat(start).astimezone(UTC)
    first = first.replace(hour=0, minute=0, second=0, microsecond=0)
    return ShopDates(first, first + timedelta(days=days))


def scheduler_home(settings: Settings) -> Path:
    """AIRFLOW_HOME of the scheduler, beside (not inside) the demo's ``<data_root>/airflow``.

    The demo's ``dag.test()`` runs hold the logical dates the scheduler gives the same
    intervals (one run per DAG and logical date is all Airflow allows), so a scheduler on
    the demo's metadata DB would stop at the second day. The lake is shared: the
    scheduler's runs find the demo's batches done and skip them.
    """
    return settings.data_root / "airflow-scheduler"


def environment(
    settings: Settings,
    port: int,
    home: Path | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``airflow standalone`` for this data root.

    Ingest runs one interval per day of the generated shop (``@daily`` from its first day
    to its last: ``RECFLOW_INGEST_END`` ends the catchup), unless ``RECFLOW_INGEST_*`` are
    set explicitly, which win. The other DAGs follow Assets and need no dates.
    """
    base = dict(os.environ if base is None else base)
    home = home or scheduler_home(settings)
    dates = shop_dates(settings)
    binaries = str(Path(sys.executable).parent)
    env = {
        **base,
        # standalone starts its scheduler, API server, … as `airflow` subcommands.
        "PATH": f"{binaries}{os.pathsep}{base.get('PATH', '')}",
        "AIRFLOW_HOME": str(home.resolve()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX": "glob",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        # Task processes report to the API server on the port chosen above, not 8080.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # Two cores busy starting JVMs answer slowly: give task processes time.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "RECFLOW_DATA_ROOT": str(settings.data_root.resolve()),
    }
    env.setdefault("RECFLOW_INGEST_SCHEDULE", "@daily")
    if "RECFLOW_INGEST_START" not in base:
        env["RECFLOW_INGEST_START"] = dates.start.isoformat()
        # Airflow schedules every interval that starts at or before end_date: the last
        # one to run starts before the shop's end, whatever the schedule's step.
        last = dates.end - timedelta(seconds=1)
        env.setdefault("RECFLOW_INGEST_END", last.isoformat())
    # Names this launch's processes (all of them inherit it) for stop_group: matching on
    # AIRFLOW_HOME alone would also hit a shell that exported it, or another launch.
    env[LAUNCH_KEY] = uuid.uuid4().hex
    return env


def login(home: Path) -> tuple[str, str] | None:
    """The (user, password) Airflow generated for its UI, once the API server wrote it."""
    try:
        users = json.loads((home / PASSWORDS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(users, dict) or not users:
        return None
    user = "admin" if "admin" in users else next(iter(users))
    return user, str(users[user])


def wait_until_up(port: int, timeout: float) -> bool:
    """Whether the API server answers its health check within ``timeout`` seconds."""
    url = f"http://127.0.0.1:{port}/api/v2/monitor/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass  # not listening yet: standalone migrates the DB and starts its parts first
        time.sleep(2)
    return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_group(
    proc: subprocess.Popen[bytes], launch: str | None = None, timeout: float = 60.0
) -> None:
    """Stop standalone and everything it started: its process group (SIGTERM, then SIGKILL
    after ``timeout`` seconds), and with ``launch`` (the environment's ``LAUNCH_KEY``)
    every task process of that launch still running (see :func:`groups_with_env`)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass  # it exited between the poll and the signal
    # Task processes left behind in the group; none left is the usual case.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if launch is not None:
        for group in groups_with_env(LAUNCH_KEY, launch):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)  # gone already: nothing to stop


def groups_with_env(key: str, value: str) -> set[int]:
    """Process groups of this user's processes whose environment has ``key=value``.

    Airflow starts each task in a process group of its own (and the task its Spark JVM
    there), so stopping standalone's group leaves running tasks behind; they all inherit
    the launch's ``LAUNCH_KEY``, which names them and nothing else.
    """
    wanted = f"{key}={value}".encode()
    groups = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted in environ.read_bytes().split(b"\0"):
                groups.add(os.getpgid(int(environ.parent.name)))
        except (OSError, ValueError):
            continue  # exited meanwhile, or another user's process: not ours to stop
    groups.discard(os.getpgid(0))  # never this process's own group
    return groups


class AirflowApi:
    """The few calls of Airflow's REST API (v2) recflow makes, with the generated login.

    Used to unpause recflow's DAGs (the metadata DB of `make demo` already holds them,
    paused as Airflow creates them by default) and by ``bench/standalone.py`` to read runs
    and task durations from the scheduler's own records.
    """

    def __init__(self, port: int, user: str, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        answer = self._call("POST", "/auth/token", {"username": user, "password": password})
        self.token = str(answer["access_token"])

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if getattr(self, "token", None):
            request.add_header("authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"{}")

    def get(self, path: str) -> dict:
        return self._call("GET", path)

    def recflow_dags(self) -> list[dict]:
        return self.get("/api/v2/dags?tags=recflow&limit=100")["dags"]

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def unpause(self) -> list[str]:
        """Unpause every recflow DAG that is paused; returns their ids."""
        done = []
        for dag in self.recflow_dags():
            if dag["is_paused"]:
                self.set_paused(dag["dag_id"], False)
                done.append(dag["dag_id"])
        return done


def free_port() -> int:
    """A port free on 127.0.0.1 now (for benchmarks and tests that start standalone)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PID_FILE = "recflow-airflow.pid"


def record_launch(home: Path, pid: int) -> None:
    """Remember the running standalone, so a second launch on the same home refuses."""
    (home / PID_FILE).write_text(f"{pid}\n")


def running_launch(home: Path) -> int | None:
    """The pid of a standalone still running on ``home`` (one SQLite DB, one scheduler)."""
    try:
        pid = int((home / PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        return pid  # alive, another user's: still not ours to share
    return pid
