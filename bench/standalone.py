"""recflow's DAGs under the real scheduler: `airflow standalone`, each task its own process.

`dag.test()` runs a DAG's tasks in one process and one Spark JVM; under the scheduler
every task pays for its own process, imports and (if it uses Spark) a JVM with Delta's
warm-up. This script measures what a deployment pays: it generates a shop in a
throwaway data root, starts `airflow standalone` with the environment `recflow airflow`
uses (`jobs.airflow_local`), unpauses the chosen DAGs, lets ingest catch up `--hours`
hourly intervals (the gold Asset then runs features and train), and reads every run's and
task's times from Airflow's REST API. It prints them with the issue-17 targets:
an hourly interval of ~10,000 events through ingest in ≤ 60 s wall, a features run in
≤ 30 s, a training decision that skips in ≤ 5 s. ``--heavy`` switches the light Delta
path off (`RECFLOW_LIGHT_DELTA=false`: Spark for every read and write), the baseline.
Standalone and every task it started are stopped afterwards (by process group and by
their AIRFLOW_HOME).

Run: .venv/bin/python bench/standalone.py [--hours 3] [--users 30000] [--heavy]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs import airflow_local  # noqa: E402
from jobs.config import load_settings  # noqa: E402

BIN = Path(sys.executable).parent


def _seconds(begin: str | None, end: str | None) -> float:
    if not begin or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(begin)).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=3, help="hourly ingest intervals")
    parser.add_argument("--users", type=int, default=30000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--first-hour", type=int, default=12, help="UTC hour of the first one")
    parser.add_argument("--dags", default="ingest,features,train")
    parser.add_argument("--heavy", action="store_true", help="Spark for every lake access")
    parser.add_argument("--deadline-minutes", type=float, default=60)
    args = parser.parse_args()
    dags = args.dags.split(",")

    work = Path(tempfile.mkdtemp(prefix="recflow-standalone-"))
    port = airflow_local.free_port()
    settings = load_settings(data_root=work / "var", gen_users=args.users, gen_items=args.items)
    first = airflow_local.shop_dates(settings).start + timedelta(hours=args.first_hour)
    base = {
        **os.environ,
        "RECFLOW_DATA_ROOT": str(work / "var"),
        "RECFLOW_GEN_USERS": str(args.users),
        "RECFLOW_GEN_ITEMS": str(args.items),
        "RECFLOW_GEN_DAYS": "1",
        "RECFLOW_INGEST_SCHEDULE": "@hourly",
        "RECFLOW_INGEST_START": first.isoformat(),
        "RECFLOW_INGEST_END": (first + timedelta(hours=args.hours - 1)).isoformat(),
        # One training (there is no model yet), then decisions that skip.
        "RECFLOW_RETRAIN_THRESHOLD": str(10**12),
        "RECFLOW_ALS_GRID": "[]",
        "RECFLOW_SEARCH_TRIALS": "1",
        "RECFLOW_EVAL_STRATIFIED": "false",
        "RECFLOW_SPARK_MASTER": "local[2]",
        "RECFLOW_SPARK_SHUFFLE_PARTITIONS": "2",
        "RECFLOW_LIGHT_DELTA": "false" if args.heavy else "true",
    }
    env = airflow_local.environment(settings, port, base=base)
    # Only the DAGs asked for run: the rest stay paused (publish, monitor, privacy …).
    env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"
    started = time.monotonic()
    subprocess.run(
        [str(BIN / "recflow"), "generate", "--days", "1"],
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )
    print(f"shop generated in {time.monotonic() - started:.0f} s under {work}", flush=True)
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True)
    log = (work / "standalone.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "airflow"), "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    print(f"airflow standalone (pid {server.pid}) on :{port}, home {home}", flush=True)
    status = 1
    try:
        if not airflow_local.wait_until_up(port, timeout=600):
            print("the API server did not come up", file=sys.stderr)
            return 1
        login = None
        while login is None:
            login = airflow_local.login(home)
            time.sleep(1)
        api = airflow_local.AirflowApi(port, *login)
        status = _run(api, dags, args, started)
        _report(api, dags, args)
    finally:
        airflow_local.stop_group(server, env[airflow_local.LAUNCH_KEY])
        log.close()
    return status


def _run(
    api: airflow_local.AirflowApi, dags: list[str], args: argparse.Namespace, t0: float
) -> int:
    """Unpause the DAGs once Airflow has parsed them; wait until every run has ended."""
    deadline = t0 + args.deadline_minutes * 60
    unpaused: set[str] = set()
    while time.monotonic() < deadline:
        time.sleep(10)
        known = {d["dag_id"]: d for d in api.recflow_dags()}
        for dag in dags:
            if dag in known and dag not in unpaused:
                api.set_paused(dag, False)
                unpaused.add(dag)
        states = {dag: [r["state"] for r in _runs(api, dag)] for dag in dags}
        print(f"{(time.monotonic() - t0) / 60:5.1f} min  {states}", flush=True)
        if any("failed" in s for s in states.values()):
            return 1
        done = states.get("ingest", []).count("success") >= args.hours
        if done and all(s and all(x == "success" for x in s) for s in states.values()):
            time.sleep(30)  # an Asset event of the last gold update may still queue a run
            states = {dag: [r["state"] for r in _runs(api, dag)] for dag in dags}
            if all(all(x == "success" for x in s) for s in states.values()):
                return 0
    print("deadline passed", file=sys.stderr)
    return 1


def _runs(api: airflow_local.AirflowApi, dag: str) -> list[dict]:
    return api.get(f"/api/v2/dags/{dag}/dagRuns?limit=100&order_by=start_date")["dag_runs"]


def _report(api: airflow_local.AirflowApi, dags: list[str], args: argparse.Namespace) -> None:
    """Every run and task with its duration, then the targets' figures."""
    walls: dict[str, list[float]] = {dag: [] for dag in dags}
    skips: list[float] = []
    for dag in dags:
        for run in _runs(api, dag):
            wall = _seconds(run.get("start_date"), run.get("end_date"))
            walls[dag].append(wall)
            print(f"\n{dag} {run['dag_run_id']}: {run['state']}, {wall:.1f} s wall")
            path = f"/api/v2/dags/{dag}/dagRuns/{run['dag_run_id']}/taskInstances"
            tasks = {t["task_id"]: t for t in api.get(path)["task_instances"]}
            for task in sorted(tasks.values(), key=lambda t: t.get("start_date") or ""):
                seconds = _seconds(task.get("start_date"), task.get("end_date"))
                print(f"  {task['task_id']:<22} {task['state'] or '-':<10} {seconds:6.1f} s")
            decision = tasks.get("should_train")
            if decision and tasks.get("train_model", {}).get("state") == "skipped":
                skips.append(_seconds(decision.get("start_date"), decision.get("end_date")))
    mode = "heavy (Spark everywhere)" if args.heavy else "light (delta-rs for tiny reads/writes)"
    print(f"\n== {mode}; {args.users} users, {args.hours} hourly intervals ==")

    def line(what: str, values: list[float], target: float) -> None:
        values = [v for v in values if v == v]
        if not values:
            print(f"{what:<40} no runs")
            return
        print(
            f"{what:<40} median {statistics.median(values):6.1f} s, max {max(values):6.1f} s"
            f"  (n={len(values)}, target ≤ {target:.0f} s)"
        )

    line("ingest run, one hourly interval", walls.get("ingest", []), 60)
    line("features run", walls.get("features", []), 30)
    line("should_train that skips", skips, 5)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
