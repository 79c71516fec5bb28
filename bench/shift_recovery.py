"""The loop closed, day by day: a taste shift, its detection, retraining and recovery.

Builds a throwaway data root and runs the real DAGs with ``dag.test()`` (one process; the
same tasks the scheduler runs), one simulated day at a time:

1. ``--warmup`` plain days are generated, ingested, trained on and published (day 0's
   champion);
2. then each day: the reacting shop generates the day from the live publish (its
   recommended slots carry the attribution fields; ``--drift D`` shifts tastes and the
   catalog mix from day D), ``ingest`` loads it, ``monitor`` computes drift and what users
   did with the recommendations, ``train`` runs when its trigger says so (the retrain
   threshold is set out of reach, so only drift or a missing model trains), and
   ``publish`` follows a new champion.

Prints one line per day: CTR of the recommended slots (``monitor/rec_performance``, cdn
rows), the drift metrics at alert level, whether training ran and what the gate did, and
the live model. ``--json FILE`` writes the same rows. Without ``--drift`` the run shows
whether the monitor raises false alarms over a quiet week.

Run: .venv/bin/python bench/shift_recovery.py [--warmup 7] [--days 6] [--drift 9]
     [--users 2000] [--items 200] [--root DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _environment(root: Path, args: argparse.Namespace) -> None:
    """Settings for the run, set before anything reads them (DAG files read the schedule)."""
    os.environ.update(
        {
            "RECFLOW_DATA_ROOT": str(root),
            "RECFLOW_GEN_USERS": str(args.users),
            "RECFLOW_GEN_ITEMS": str(args.items),
            "RECFLOW_INGEST_SCHEDULE": "@daily",
            # Only drift (or no model yet) trains: the threshold is out of reach.
            "RECFLOW_RETRAIN_THRESHOLD": str(10**12),
            "RECFLOW_MIN_TRAIN_INTERVAL_HOURS": "0",
            "RECFLOW_QUALITY_ENABLED": "false",
            "RECFLOW_SPARK_LOG_LEVEL": "ERROR",
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )


def _dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags")).dags


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _day_ctr(settings: Any, day: str) -> tuple[float | None, int]:
    """CTR of the published lists' slots on ``day`` (all model versions and positions)."""
    from pyspark.sql import functions as F

    from jobs import tables
    from jobs.spark import get_spark

    rows = (
        tables.read_or_create(get_spark(settings), settings, "rec_performance")
        .where((F.col("day") == day) & (F.col("rec_source") == "cdn"))
        .agg(F.sum("impressions").alias("i"), F.sum("clicks").alias("c"))
        .first()
    )
    if not rows or not rows["i"]:
        return None, 0
    return rows["c"] / rows["i"], int(rows["i"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=7)
    parser.add_argument("--days", type=int, default=6, help="reacting days after warm-up")
    parser.add_argument("--drift", type=int, default=None, help="day the tastes shift")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="recflow-shift-"))
    _environment(root, args)
    warnings.filterwarnings("ignore")

    import pendulum

    from jobs.config import get_settings
    from jobs.model.registry import CHAMPION, alias_version, setup
    from jobs.sources.shop import generate

    get_settings.cache_clear()
    settings = get_settings()
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    dags = _dags()
    client = setup(settings)

    def champion() -> str | None:
        version = alias_version(client, settings.model_name, CHAMPION)
        return None if version is None else str(version.version)

    def ingest(day: str) -> None:
        run = dags["ingest"].test(logical_date=pendulum.parse(day).add(days=1))
        if str(run.state) != "success":
            raise SystemExit(f"ingest of {day} failed: {_states(run)}")

    started = time.perf_counter()
    warm = generate(settings, days=args.warmup, force=True)
    for day in warm.days:
        ingest(day)
    dags["train"].test()
    if champion() is None:
        raise SystemExit("the warm-up training promoted no champion")
    dags["publish"].test()
    print(
        f"warm-up: {args.warmup} days, champion v{champion()} published "
        f"({time.perf_counter() - started:.0f} s); data root {root}",
        flush=True,
    )

    rows: list[dict[str, Any]] = []
    header = f"{'day':>3} {'date':<10} {'CTR cdn':>8} {'impr.':>7} {'drift alerts':<40} train"
    print(header)
    for n in range(args.days):
        index = args.warmup + n
        t0 = time.perf_counter()
        report = generate(settings, days=1, append=True, react=True, drift_day=args.drift)
        day = report.days[-1]
        ingest(day)
        end = pendulum.parse(day).add(days=1)
        monitor = dags["monitor"].test(logical_date=end)
        drift = monitor.get_task_instance("compute_drift").xcom_pull(task_ids="compute_drift")
        alerts = sorted((drift or {}).get("alerts") or [])
        before = champion()
        train = dags["train"].test()
        trained = _states(train).get("train_model") == "success"
        after = champion()
        if after != before:
            dags["publish"].test()
        ctr, impressions = _day_ctr(settings, day)
        row = {
            "day": index,
            "date": day,
            "drift_day": args.drift,
            "ctr_cdn": ctr,
            "impressions_cdn": impressions,
            "drift_alerts": alerts,
            "trained": trained,
            "champion_before": before,
            "champion_after": after,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        outcome = "-"
        if trained:
            outcome = f"v{before} → v{after} (published)" if after != before else f"kept v{before}"
        shown = "n/a" if ctr is None else f"{ctr:.4f}"
        print(
            f"{index:>3} {day:<10} {shown:>8} {impressions:>7} {', '.join(alerts)[:40]:<40} "
            f"{outcome}",
            flush=True,
        )
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
