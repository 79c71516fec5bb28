"""Every DAG under the real scheduler: `airflow standalone`, each task its own process.

Generates a two-day shop in a throwaway data root, starts `airflow standalone` (SQLite,
API server on a free 127.0.0.1 port) with recflow's DAGs unpaused and daily ingest
intervals, and waits until ingest has caught up and the Assets have run features, train,
publish and monitor (scheduled on the gold Asset OR a daily cron). Prints each DAG run's
state and every task's duration; exits non-zero if a run failed or the deadline passed.
Stops the server by its process group afterwards.

Run: .venv/bin/python bench/standalone.py [--days 2] [--deadline-minutes 40]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAGS = ("ingest", "features", "train", "publish", "monitor")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _airflow(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def _json(text: str) -> list[dict]:
    """The JSON the CLI printed: its last line (warnings such as "[warning ] …" come first)."""
    lines = [x for x in text.splitlines() if x.startswith(("[{", "[]", "{"))]
    return json.loads(lines[-1]) if lines else []


def _runs(env: dict[str, str], dag: str) -> list[dict]:
    return _json(_airflow(env, "dags", "list-runs", dag, "-o", "json"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--deadline-minutes", type=float, default=40)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="recflow-standalone-"))
    port = _free_port()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=args.days)
    env = {
        **os.environ,
        # standalone starts its scheduler, API server, … as `airflow` subcommands.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        # Task processes report to the API server: the port chosen above, not 8080.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # A 2-core box busy starting JVMs answers slowly: give task processes time.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "RECFLOW_DATA_ROOT": str(work / "var"),
        "RECFLOW_INGEST_SCHEDULE": "@daily",
        "RECFLOW_INGEST_START": first_day.isoformat(),
        "RECFLOW_GEN_START": first_day.isoformat(),
        "RECFLOW_GEN_DAYS": str(args.days),
        "RECFLOW_GEN_USERS": "800",
        "RECFLOW_GEN_ITEMS": "120",
        "RECFLOW_ALS_GRID": "[]",
        "RECFLOW_EVAL_STRATIFIED": "false",
        "RECFLOW_GATE_MIN_LIFT": "0",
        "RECFLOW_SPARK_MASTER": "local[2]",
        "RECFLOW_SPARK_SHUFFLE_PARTITIONS": "2",
    }
    subprocess.run(
        [str(BIN / "recflow"), "generate"], env=env, check=True, capture_output=True, timeout=600
    )
    log = (work / "standalone.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "airflow"), "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    print(f"airflow standalone (pid {server.pid}), home {work}", flush=True)
    started = time.monotonic()
    deadline = started + args.deadline_minutes * 60
    status = 1
    try:
        while time.monotonic() < deadline:
            time.sleep(20)
            if server.poll() is not None:
                print("airflow standalone exited", file=sys.stderr)
                break
            try:
                runs = {dag: _runs(env, dag) for dag in DAGS}
            except (RuntimeError, ValueError, subprocess.TimeoutExpired):
                continue  # the metadata DB is still being created
            states = {dag: [r["state"] for r in rs] for dag, rs in runs.items()}
            print(f"{(time.monotonic() - started) / 60:5.1f} min  {states}", flush=True)
            if any("failed" in s for s in states.values()):
                break
            ingest_done = states["ingest"].count("success") >= args.days
            if ingest_done and all(s and all(x == "success" for x in s) for s in states.values()):
                status = 0
                break
        _report(env)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    print(f"{'ok' if status == 0 else 'FAILED'} after {(time.monotonic() - started) / 60:.1f} min")
    return status


def _report(env: dict[str, str]) -> None:
    """Every run's tasks with their durations, from the scheduler's own records."""
    for dag in DAGS:
        for run in _runs(env, dag):
            print(f"\n{dag} {run['run_id']}: {run['state']}")
            tasks = _json(
                _airflow(env, "tasks", "states-for-dag-run", dag, run["run_id"], "-o", "json")
            )
            for task in tasks:
                begin, end = task.get("start_date"), task.get("end_date")
                seconds = (
                    (datetime.fromisoformat(end) - datetime.fromisoformat(begin)).total_seconds()
                    if begin and end
                    else float("nan")
                )
                print(f"  {task['task_id']:<22} {task['state']:<10} {seconds:6.1f} s")


if __name__ == "__main__":
    raise SystemExit(main())
