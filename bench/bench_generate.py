"""Generator throughput: events per second for about a million events.

Run: .venv/bin/python bench/bench_generate.py [--users 30000 --days 4]
"""

from __future__ import annotations

import argparse
import tempfile

from jobs.config import load_settings
from jobs.sources.shop import generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        settings = load_settings(data_root=root, gen_users=args.users, gen_items=args.items)
        report = generate(settings, days=args.days, malformed_fraction=0.01)
    print(f"lines written   {report.lines:,} ({report.files} files)")
    print(f"wall time       {report.seconds:.2f} s")
    print(f"events/second   {report.events_per_second:,.0f}")


if __name__ == "__main__":
    main()
