"""Ingest throughput and incremental cost, bronze → silver → gold on local Spark + Delta.

Two figures from one landing folder and one Spark session:

1. events per second for one ~1 M-event interval (first four generated days);
2. the time to ingest the same ~10 k-event hour into a lake that already holds ~100 k
   events versus ~2 M events. Both lakes read the same landing files, so the measured
   hour is byte-identical; the ratio shows whether hourly cost stays flat as the lake
   grows (target: at most 1.5).

Run: .venv/bin/python bench/bench_ingest.py [--users 30000 --days 8] [--no-quality]
"""

from __future__ import annotations

import argparse
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--big-days", type=int, default=4, help="days in the throughput run")
    parser.add_argument("--small-lake", type=int, default=100_000)
    parser.add_argument("--hour-events", type=int, default=10_000)
    parser.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

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
