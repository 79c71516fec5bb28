"""Time of one drift run (jobs.monitor.monitor.run_drift) on a lake of a given size.

Builds a throwaway data root: ``--events`` silver events over ``--days`` days (written by
Spark from ``spark.range``, so 2 M events need no driver memory), a catalog, and a random
champion in its own MLflow store tagged with the silver version of all but the last day
(the reference: that version's last ``monitor_reference_days``; the current window: the
last day). Prints the rows it recorded and the wall time of a cold and a warm run (the
warm one is what a long-running Spark Connect server would see; the cold one includes
Spark's first Delta reads). ``--dag`` then runs the whole ``monitor`` DAG on that lake with
``dag.test()`` in a fresh process (drift, feedback over its attribution days, the metrics
export) and prints its wall time and each task's duration.

Run: .venv/bin/python bench/monitor_drift.py [--events 2000000] [--users 50000]
     [--items 5000] [--days 8] [--root DIR] [--dag]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.model.artifact import RecModel
from jobs.model.ranking import Seen
from jobs.monitor.monitor import TAG_SILVER_VERSION, run_drift

START = datetime(2026, 11, 1)
REPO = Path(__file__).resolve().parents[1]

DAG_DRIVER = """
import json, sys, time
import pendulum
from airflow.dag_processing.dagbag import DagBag

dag = DagBag(dag_folder=sys.argv[1]).dags["monitor"]
t0 = time.perf_counter()
run = dag.test(logical_date=pendulum.parse(sys.argv[2]))
seconds = time.perf_counter() - t0
tasks = {
    ti.task_id: [str(ti.state), (ti.end_date - ti.start_date).total_seconds()]
    for ti in run.get_task_instances() if ti.start_date and ti.end_date
}
print("RESULT " + json.dumps({"state": str(run.state), "seconds": seconds, "tasks": tasks}))
"""


def run_dag(root: Path, end: datetime) -> None:
    """The monitor DAG on the lake, by dag.test() in its own process (its own JVM)."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "RECFLOW_DATA_ROOT": str(root / "var"),
    }
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True)
    driver = root / "monitor_dag.py"
    driver.write_text(DAG_DRIVER)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(driver), str(REPO / "dags"), end.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    wall = time.perf_counter() - t0
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        raise SystemExit((done.stdout + done.stderr)[-4000:])
    out = json.loads(lines[-1].removeprefix("RESULT "))
    print(
        f"monitor DAG ({out['state']}): {out['seconds']:.1f} s in dag.test(), {wall:.1f} s with"
        " the process start"
    )
    for task, (state, seconds) in out["tasks"].items():
        print(f"  {task:<16} {state:<8} {seconds:7.1f} s")


def write_events(spark, settings: Settings, n: int, users: int, items: int, days: int) -> int:
    """Append ``n`` events spread over ``days`` days (day by day: one version per day)."""
    from pyspark.sql import functions as F

    location = tables.ensure_table(spark, settings, "events")
    fields = tables.ddl_fields(tables.TABLES["events"].ddl)
    per_day = n // days
    version_before_last = -1
    for day in range(days):
        start = START + timedelta(days=day)
        frame = (
            spark.range(per_day)
            .withColumn("event_id", F.concat(F.lit(f"d{day}-"), F.col("id").cast("string")))
            .withColumn(
                "ts",
                F.lit(start) + F.make_interval(secs=(F.rand(day) * 86_399).cast("int")),
            )
            .withColumn("event_date", F.lit(start.date()))
            .withColumn(
                "user_id",
                F.concat(F.lit("user-"), (F.rand(day + 100) * users).cast("int").cast("string")),
            )
            .withColumn(
                "item_id",
                # Popularity skewed like a shop's: the square of a uniform draw.
                F.concat(
                    F.lit("item-"), (F.pow(F.rand(day + 200), 2) * items).cast("int").cast("string")
                ),
            )
            .withColumn(
                "event_type",
                F.element_at(
                    F.array(*[F.lit(t) for t in ("view",) * 7 + ("click",) * 2 + ("purchase",)]),
                    (F.rand(day + 300) * 10).cast("int") + 1,
                ),
            )
            .withColumn("_ingested_at", F.current_timestamp())
        )
        cols = [
            (F.col(c) if c in frame.columns else F.lit(None)).cast(k.lower()).alias(c)
            for c, k in fields
        ]
        frame.select(*cols).write.format("delta").mode("append").save(location)
        if day == days - 2:
            version_before_last = tables.version(spark, settings, "events")
    return version_before_last


def write_items(spark, settings: Settings, items: int) -> None:
    from pyspark.sql import functions as F

    location = tables.ensure_table(spark, settings, "items")
    frame = (
        spark.range(items)
        .withColumn("item_id", F.concat(F.lit("item-"), F.col("id").cast("string")))
        .withColumn("category", F.concat(F.lit("cat-"), (F.col("id") % 20).cast("string")))
        .withColumn("updated_at", F.lit(START))
    )
    fields = tables.ddl_fields(tables.TABLES["items"].ddl)
    cols = [
        (F.col(c) if c in frame.columns else F.lit(None)).cast(k.lower()).alias(c)
        for c, k in fields
    ]
    frame.select(*cols).write.format("delta").mode("append").save(location)


def register(settings: Settings, users: int, items: int, silver_version: int, work: Path) -> None:
    """A random rank-32 champion whose run says it read ``silver_version``."""
    import mlflow

    from jobs.model.registry import CHAMPION, log_model, setup

    rng = np.random.default_rng(0)
    model = RecModel(
        user_ids=np.array([f"user-{u}" for u in range(users)]),
        item_ids=np.array([f"item-{i}" for i in range(items)]),
        user_factors=rng.normal(0, 0.3, (users, 32)).astype(np.float32),
        item_factors=rng.normal(0, 0.3, (items, 32)).astype(np.float32),
        popularity=rng.random(items).astype(np.float32),
        seen=Seen.from_lists([rng.choice(items, 5, replace=False) for _ in range(users)]),
        params={"rank": 32},
        public_popularity=rng.random(items).astype(np.float32),
        public_budget={"mechanism": "benchmark"},
    )
    client = setup(settings)
    with mlflow.start_run():
        mlflow.set_tag(TAG_SILVER_VERSION, str(silver_version))
        info = log_model(model, work, settings.model_name)
    client.set_registered_model_alias(
        settings.model_name, CHAMPION, str(info.registered_model_version)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--dag", action="store_true", help="then run the monitor DAG on it")
    args = parser.parse_args()
    if args.days < 2:
        parser.error("--days must be at least 2 (a reference and a current day)")
    root = args.root or Path(tempfile.mkdtemp(prefix="recflow-bench-drift-"))
    settings = load_settings(data_root=root / "var")
    from jobs.model.registry import setup
    from jobs.spark import get_spark

    spark = get_spark(settings)
    t0 = time.perf_counter()
    silver_version = write_events(spark, settings, args.events, args.users, args.items, args.days)
    write_items(spark, settings, args.items)
    register(settings, args.users, args.items, silver_version, root / "work")
    print(
        f"lake: {args.events} events, {args.users} users, {args.items} items, {args.days} days"
        f" under {root} (built in {time.perf_counter() - t0:.1f} s)"
    )
    end = datetime.combine((START + timedelta(days=args.days)).date(), datetime.min.time(), UTC)
    client = setup(settings)
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        result = run_drift(spark, settings, client, f"bench/{label}", end)
        seconds = time.perf_counter() - t0
        print(
            f"drift run ({label}): {seconds:.1f} s; {result.rows} rows; alerts {result.alerts};"
            f" {result.reason}"
        )
    print(f"report: {result.report}")
    if args.dag:
        run_dag(root, end)


if __name__ == "__main__":
    main()
