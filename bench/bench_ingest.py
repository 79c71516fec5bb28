"""Ingest throughput and incremental cost, bronze → silver → gold on local Spark + Delta.

Two figures from one landing folder and one Spark session:

1. events per second for one ~1 M-event interval (first four generated days);
2. the time to ingest the same ~10 k-event hour into a lake that already holds ~100 k
   events versus ~2 M events. Both lakes read the same landing files, so the measured
   hour is byte-identical; the ratio shows whether hourly cost stays flat as the lake
   grows (target: at most 1.5).

With ``--breakdown`` it measures only the ~10 k-event hour into the ~100 k-event lake
(not the 2 M one: minutes on a shared 2-core machine) and prints where the time goes: each
step's wall time and Spark jobs, each Great Expectations suite's time and the time spent
rendering Data Docs. The instrumentation wraps functions by name and only reads clocks
and Spark's job ids, so the same script measures a baseline tree (run it with
``PYTHONPATH=<worktree of the baseline>``) and the current one.

Run: .venv/bin/python bench/bench_ingest.py [--users 30000 --days 8] [--no-quality]
     [--breakdown]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

from jobs.config import Settings, load_settings
from jobs.contracts import hour_partition
from jobs.ingest.steps import run_interval
from jobs.sources.shop import generate


def hour_counts(settings: Settings, start: datetime, hours: int) -> list[int]:
    out = []
    for h in range(hours):
        folder = settings.events_dir / hour_partition(start + timedelta(hours=h))
        out.append(sum(f.read_bytes().count(b"\n") for f in folder.glob("*.jsonl")))
    return out


def timed(settings: Settings, start: datetime, end: datetime) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = run_interval(start.isoformat(), end.isoformat(), settings=settings)
    seconds = time.perf_counter() - t0
    assert result["audit"]["balanced"], result["audit"]
    return seconds, result


class Breakdown:
    """Seconds and Spark jobs per ingest step, seconds per GX suite and per docs render.

    Wraps ``jobs.ingest.steps``' step functions (``run_interval`` calls them by module
    name), ``jobs.ingest.quality.run_suite`` and GX's ``build_data_docs`` (what the
    checkpoint action and a one-off render both call). Jobs are counted by Spark's job
    ids (they are sequential), read from the status tracker.
    """

    STEPS = ("bronze_step", "catalog_step", "silver_step", "late_step", "gold_step")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.jobs: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.on = False

    @staticmethod
    def _last_job() -> int:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:
            return -1
        ids = spark.sparkContext.statusTracker().getJobIdsForGroup(None)
        return max(ids, default=-1)

    def wrap(self, owner: object, name: str, label: str, jobs: bool) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed_call(*args, **kwargs):
            if not self.on:
                return original(*args, **kwargs)
            first = self._last_job() if jobs else 0
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0
                self.calls[label] += 1
                if jobs:
                    self.jobs[label] += self._last_job() - first

        setattr(owner, name, timed_call)

    def install(self) -> None:
        from great_expectations.data_context import AbstractDataContext

        from jobs.ingest import quality, steps

        for step in self.STEPS:
            self.wrap(steps, step, step, jobs=True)
        # The audit step is wrapped whatever its module calls it now.
        for name in ("audit_step",):
            if hasattr(steps, name):
                self.wrap(steps, name, name, jobs=True)
        self.wrap(quality, "run_suite", "gx: run_suite (all suites)", jobs=True)
        self.wrap(AbstractDataContext, "build_data_docs", "gx: build_data_docs", jobs=False)

    def report(self, total: float) -> None:
        print(f"  {'part':<30} {'calls':>5} {'seconds':>8} {'spark jobs':>10}")
        for label in sorted(self.seconds, key=lambda k: (k.startswith("gx"), k)):
            jobs = self.jobs.get(label, "")
            print(f"  {label:<30} {self.calls[label]:>5} {self.seconds[label]:>8.1f} {jobs:>10}")
        print(f"  {'whole interval':<30} {'':>5} {total:>8.1f} {self._last_job() + 1:>10} (ids)")


def breakdown(args: argparse.Namespace) -> None:
    """The ~10 k-event hour into a ~100 k-event lake, with the parts timed."""
    probe = Breakdown()
    probe.install()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def lake_settings(name: str) -> Settings:
            return load_settings(
                data_root=root / name,
                landing_dir=root / "landing",
                gen_users=args.users,
                gen_items=args.items,
                quality_enabled=args.quality,
            )

        small, warm = lake_settings("small"), lake_settings("warm")
        report = generate(small, days=args.days, malformed_fraction=0.01, progress=False)
        start = datetime.fromisoformat(small.gen_start)
        counts = hour_counts(small, start, 24 * args.days)
        print(f"landing: {report.lines:,} lines in {report.files} hourly files")
        last_day = range(24 * (args.days - 1), 24 * args.days)
        t = min(last_day, key=lambda h: abs(counts[h] - args.hour_events))
        hour = start + timedelta(hours=t)
        k = next(k for k in range(1, t + 1) if sum(counts[t - k : t]) >= args.small_lake)
        timed(warm, start, start + timedelta(hours=1))
        timed(small, hour - timedelta(hours=k), hour)
        print(
            f"measured hour {hour:%Y-%m-%d %H:00}: {counts[t]:,} lines into a lake of "
            f"{sum(counts[t - k : t]):,} events (quality gates {'on' if args.quality else 'off'})"
        )
        probe.on = True
        seconds, _ = timed(small, hour, hour + timedelta(hours=1))
        probe.on = False
        probe.report(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--big-days", type=int, default=4, help="days in the throughput run")
    parser.add_argument("--small-lake", type=int, default=100_000)
    parser.add_argument("--hour-events", type=int, default=10_000)
    parser.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--breakdown", action="store_true", help="the 100 k lake, timed by part")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def lake_settings(name: str) -> Settings:
            return load_settings(
                data_root=root / name,
                landing_dir=root / "landing",
                gen_users=args.users,
                gen_items=args.items,
                quality_enabled=args.quality,
            )

        big, small, warm = lake_settings("big"), lake_settings("small"), lake_settings("warm")
        report = generate(big, days=args.days, malformed_fraction=0.01, progress=True)
        start = datetime.fromisoformat(big.gen_start)
        counts = hour_counts(big, start, 24 * args.days)
        print(f"landing: {report.lines:,} lines in {report.files} hourly files")

        # The measured hour: the last day's hour closest to --hour-events lines.
        last_day = range(24 * (args.days - 1), 24 * args.days)
        t = min(last_day, key=lambda h: abs(counts[h] - args.hour_events))
        hour = start + timedelta(hours=t)
        k = next(k for k in range(1, t + 1) if sum(counts[t - k : t]) >= args.small_lake)

        # Warm the JVM (first Delta writes are slow on this machine) on a throwaway lake.
        timed(warm, start, start + timedelta(hours=1))

        split = start + timedelta(days=args.big_days)
        n_big = sum(counts[: 24 * args.big_days])
        seconds, _ = timed(big, start, split)
        print(
            f"throughput: {n_big:,} events bronze→gold in {seconds:.1f} s "
            f"= {n_big / seconds:,.0f} events/s (quality gates {'on' if args.quality else 'off'})"
        )
        timed(big, split, hour)
        timed(small, hour - timedelta(hours=k), hour)
        lake_sizes = {"small": sum(counts[t - k : t]), "big": sum(counts[:t])}

        print(f"measured hour {hour:%Y-%m-%d %H:00}: {counts[t]:,} lines")
        figures = {}
        for name, settings in (("small", small), ("big", big)):
            seconds, _ = timed(settings, hour, hour + timedelta(hours=1))
            figures[name] = seconds
            print(f"  lake of {lake_sizes[name]:>9,} events: {seconds:6.1f} s")
        print(f"incremental cost ratio (big / small): {figures['big'] / figures['small']:.2f}")


if __name__ == "__main__":
    main()
