"""Erasure of many people from a big lake and a big publish: wall time and what it rewrites.

Issue 14's figure: 1,000 users erased from a lake of ~2 M events and a publish of ~50 k
users. The script:

1. generates the synthetic shop (``--users``, ``--days``) and ingests it as one interval
   (bronze, silver, gold; Great Expectations off);
2. registers a model holding every gold user (random factors: erasure does not care how
   good they are) and publishes it to the local bucket (one object per user);
3. as a baseline in the same process, times one full scan of silver and bronze (what any
   erasure must at least read);
4. records ``--erase`` erasure requests and runs the privacy step, timing each phase;
5. prints the phases, the rows deleted per table, the Delta files each DELETE removed and
   added and the rows it copied (what was rewritten), and the ratio of the lake phase to
   the baseline scan.

Run: .venv/bin/python bench/bench_erasure.py [--users 50000 --days 5 --erase 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from jobs import tables
from jobs.config import load_settings
from jobs.sources.shop import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--erase", type=int, default=1_000)
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="Data root; one that already holds a lake is reused as is (no generate, ingest"
        " or publish: the people erased by an earlier run are gone from it).",
    )
    args = parser.parse_args()

    root = args.root or Path(tempfile.mkdtemp(prefix="recflow-bench-erasure-"))
    settings = load_settings(
        data_root=root,
        quality_enabled=False,
        gen_users=args.users,
        gen_items=args.items,
        publish_keep=3,
        spark_driver_memory="4g",
    )
    from jobs.ingest.steps import run_interval
    from jobs.spark import get_spark

    spark = get_spark(settings)
    t0 = time.perf_counter()
    reuse = (root / "lake" / "silver" / "events").exists()
    if not reuse:
        generate(settings, days=args.days)
        start = datetime.fromisoformat(settings.gen_start)
        end = start + timedelta(days=args.days)
        run_interval(start.isoformat(), end.isoformat(), settings=settings)
    built = time.perf_counter() - t0
    events = tables.read_or_create(spark, settings, "events").count()
    users = sorted(
        r[0]
        for r in tables.read_or_create(spark, settings, "user_stats").select("user_id").collect()
    )
    print(f"lake: {events:,} silver events, {len(users):,} users (built in {built:.0f} s)")

    t0 = time.perf_counter()
    if not reuse:
        _register_and_publish(settings, spark, users, root)
        print(f"model and {len(users):,} users published in {time.perf_counter() - t0:.0f} s")

    t0 = time.perf_counter()
    # Real reads (count(*) alone is answered from Delta's statistics without a scan).
    tables.read_or_create(spark, settings, "events").selectExpr("count(distinct user_id)").collect()
    for name in ("bronze_events", "quarantine"):
        tables.read_or_create(spark, settings, name).selectExpr("sum(length(value))").collect()
    scan = time.perf_counter() - t0

    from jobs.privacy.steps import erase_step, request_step

    rng = np.random.default_rng(7)
    gone = [str(u) for u in rng.choice(users, size=min(args.erase, len(users)), replace=False)]
    versions = {
        n: tables.version(spark, settings, n)
        for n in ("events", "bronze_events", "quarantine", "interactions", "user_stats")
    }
    t0 = time.perf_counter()
    request_step(gone, settings=settings)
    result = erase_step(settings)
    wall = time.perf_counter() - t0

    print(f"\nerased {result['people']:,} people in {wall:.1f} s (requests included)")
    for phase, seconds in result["seconds"].items():
        print(f"  {phase:<10} {seconds:8.1f} s")
    print("removed:")
    print(json.dumps(result["removed"], indent=2))
    print("Delta rewrites (the MERGE deletes):")
    for name, before in versions.items():
        print(f"  {name:<14} {_rewrites(spark, settings, name, before)}")
    print(f"\nbaseline: one full scan of silver, bronze and quarantine {scan:.1f} s")
    print(f"lake phase / baseline scan: {result['seconds']['lake'] / scan:.1f}x")


def _register_and_publish(settings, spark, users: list[str], root: Path) -> None:
    import mlflow

    from jobs.model.artifact import RecModel
    from jobs.model.ranking import Seen
    from jobs.model.registry import CHAMPION, log_model, setup
    from jobs.publish.steps import publish_all

    items = sorted(
        r[0] for r in tables.read_or_create(spark, settings, "items").select("item_id").collect()
    )
    rng = np.random.default_rng(3)
    model = RecModel(
        user_ids=np.array(users),
        item_ids=np.array(items),
        user_factors=rng.normal(size=(len(users), 32)).astype(np.float32),
        item_factors=rng.normal(size=(len(items), 32)).astype(np.float32),
        popularity=rng.random(len(items)).astype(np.float32),
        seen=Seen.from_lists([rng.choice(len(items), 5, replace=False) for _ in users]),
        params={"rank": 32},
    )
    client = setup(settings)
    with mlflow.start_run():
        info = log_model(model, root / "work", settings.model_name)
    client.set_registered_model_alias(
        settings.model_name, CHAMPION, str(info.registered_model_version)
    )
    publish_all(settings, in_stock={}, spark=spark, progress=True)


def _rewrites(spark, settings, name: str, before: int) -> str:
    from delta.tables import DeltaTable

    history = (
        DeltaTable.forPath(spark, tables.path(settings, name))
        .history()
        .where(f"version > {before} AND operation = 'MERGE'")
        .collect()
    )
    totals: dict[str, int] = {}
    for row in history:
        for key in (
            "numTargetRowsDeleted",
            "numTargetFilesRemoved",
            "numTargetFilesAdded",
            "numTargetRowsCopied",
        ):
            totals[key] = totals.get(key, 0) + int((row["operationMetrics"] or {}).get(key, 0))
    return ", ".join(f"{k} {v:,}" for k, v in totals.items()) or "no delete"


if __name__ == "__main__":
    main()
