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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def environment(users: int, items: int) -> dict[str, str]:
    """The settings of a timeline: only drift (or no model yet) trains, one run per day.

    Shared with the end-to-end test (``tests/e2e/test_shift_recovery_dags.py``), which runs
    the same timeline on a smaller shop.
    """
    return {
        "RECFLOW_GEN_USERS": str(users),
        "RECFLOW_GEN_ITEMS": str(items),
        "RECFLOW_INGEST_SCHEDULE": "@daily",
        # Only drift (or no model yet) trains: the threshold is out of reach.
        "RECFLOW_RETRAIN_THRESHOLD": str(10**12),
        "RECFLOW_MIN_TRAIN_INTERVAL_HOURS": "0",
        "RECFLOW_QUALITY_ENABLED": "false",
        # The gate decides on the time split; the extra stratified evaluation is not needed.
        "RECFLOW_EVAL_STRATIFIED": "false",
        "RECFLOW_SPARK_LOG_LEVEL": "ERROR",
    }


def _environment(root: Path, args: argparse.Namespace) -> None:
    """Settings for the run, set before anything reads them (DAG files read the schedule)."""
    os.environ.update(
        {
            **environment(args.users, args.items),
            "RECFLOW_DATA_ROOT": str(root),
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
    """CTR of the published lists' slots on ``day`` (treatment group, all positions)."""
    from pyspark.sql import functions as F

    from jobs import tables
    from jobs.spark import get_spark

    rows = (
        tables.read_or_create(get_spark(settings), settings, "rec_performance")
        .where((F.col("day") == day) & (F.col("rec_source") == "cdn"))
        # The treatment group's, as the exported gauge (the control group is shown popular).
        .where(F.col("ab_group").isNull() | (F.col("ab_group") == "treatment"))
        .agg(F.sum("impressions").alias("i"), F.sum("clicks").alias("c"))
        .first()
    )
    if not rows or not rows["i"]:
        return None, 0
    return rows["c"] / rows["i"], int(rows["i"])


def _days_written(settings: Any) -> int:
    from jobs.sources.shop import STATE_FILE

    return int(json.loads((Path(settings.landing_dir) / STATE_FILE).read_text())["days_written"])


def _champion(settings: Any) -> str | None:
    from jobs.model.registry import CHAMPION, alias_version, setup

    version = alias_version(setup(settings), settings.model_name, CHAMPION)
    return None if version is None else str(version.version)


def _live(settings: Any) -> str | None:
    """The model version ``recs/latest.json`` points at (what the shop's users are shown)."""
    from jobs.publish.steps import current

    pointer = current(settings)
    return None if pointer is None else str(pointer["model"]["version"])


def _must(run: Any, what: str) -> Any:
    """A DAG run that has to succeed, or SystemExit (a row after it would be a lie)."""
    if str(run.state) != "success":
        raise SystemExit(f"{what} failed: {_states(run)}")
    return run


def _ingest(dags: dict[str, Any], day: str) -> None:
    import pendulum

    _must(dags["ingest"].test(logical_date=pendulum.parse(day).add(days=1)), f"ingest {day}")


def warm_up(
    settings: Any, dags: dict[str, Any], days: int, say: Callable[[str], None] = print
) -> None:
    """``days`` plain days generated, ingested, trained on and published (the first champion)."""
    from jobs.sources.shop import generate

    started = time.perf_counter()
    for day in generate(settings, days=days, force=True).days:
        _ingest(dags, day)
    _must(dags["train"].test(), "warm-up training")
    if _champion(settings) is None:
        raise SystemExit("the warm-up training promoted no champion")
    _must(dags["publish"].test(), "warm-up publish")
    say(
        f"warm-up: {days} days, champion v{_champion(settings)} published "
        f"({time.perf_counter() - started:.0f} s); data root {settings.data_root}"
    )


def react(
    settings: Any,
    dags: dict[str, Any],
    days: int,
    drift: int | None,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """``days`` reacting days after what the landing folder holds; one row per day.

    Each day: the reacting shop generates it from the live publish (``drift`` is the day
    number tastes shift on, counted from the shop's first day), ``ingest`` loads it,
    ``monitor`` runs for it, ``train`` runs (its trigger decides) and ``publish`` follows
    a new champion. Needs a live publish (:func:`warm_up`, or any earlier flow).
    """
    import pendulum

    from jobs.sources.shop import generate

    rows: list[dict[str, Any]] = []
    say(f"{'day':>3} {'date':<10} {'CTR cdn':>8} {'impr.':>7} {'drift alerts':<40} train")
    for _ in range(days):
        t0 = time.perf_counter()
        report = generate(settings, days=1, append=True, react=True, drift_day=drift)
        day = report.days[-1]
        index = _days_written(settings) - 1  # the generator's own day number (0 = first)
        _ingest(dags, day)
        end = pendulum.parse(day).add(days=1)
        monitor = _must(dags["monitor"].test(logical_date=end), f"monitor {day}")
        drifted = monitor.get_task_instance("compute_drift").xcom_pull(task_ids="compute_drift")
        alerts = sorted((drifted or {}).get("alerts") or [])
        before = _champion(settings)
        train = _must(dags["train"].test(), f"train after {day}")
        trained = _states(train).get("train_model") == "success"
        after = _champion(settings)
        if after != before:
            _must(dags["publish"].test(), f"publish of v{after}")
        ctr, impressions = _day_ctr(settings, day)
        row = {
            "day": index,
            "date": day,
            "drift_day": drift,
            "ctr_cdn": ctr,
            "impressions_cdn": impressions,
            "drift_alerts": alerts,
            "trained": trained,
            "champion_before": before,
            "champion_after": after,
            "published": _live(settings),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        outcome = "-"
        if trained:
            outcome = f"v{before} → v{after} (published)" if after != before else f"kept v{before}"
        shown = "n/a" if ctr is None else f"{ctr:.4f}"
        say(
            f"{index:>3} {day:<10} {shown:>8} {impressions:>7} {', '.join(alerts)[:40]:<40} "
            f"{outcome}"
        )
    return rows


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

    from jobs.config import get_settings

    get_settings.cache_clear()
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    settings, dags = get_settings(), _dags()
    started = time.perf_counter()

    def say(line: str) -> None:
        print(line, flush=True)

    warm_up(settings, dags, args.warmup, say)
    rows = react(settings, dags, args.days, args.drift, say)
    say(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
