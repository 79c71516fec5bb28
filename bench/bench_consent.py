"""Cost of bronze's consent redaction: one 100 k-line interval loaded into bronze with and
without it, in one Spark session.

Three variants of ``jobs.ingest.bronze.load_events`` on the same landing file (2 % of the
lines say ``"consent": false``), each forced (the batch is rewritten every time), run
alternately ``--repeat`` times; the median of each is printed:

- ``before``: the line kept as it is (redaction replaced by a NULL reason);
- ``consent``: the consent rules (JSON read of ``$.consent``, textual check);
- ``consent+withdrawn``: the same with 100 withdrawn users (subject hash of every line's
  ``user_id``, broadcast join, ``ts`` parse).

Run: .venv/bin/python bench/bench_consent.py [--lines 100000 --repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from jobs import tables
from jobs.config import load_settings
from jobs.contracts import events_file
from jobs.ingest import bronze
from jobs.privacy.consent import withdraw_consent
from jobs.spark import get_spark

START = datetime.fromisoformat("2026-11-01T09:00:00+00:00")


def landing(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for i in range(n):
            rec = {
                "event_id": f"e-{i:09d}",
                "ts": f"2026-11-01T09:{i % 60:02d}:00Z",
                "user_id": f"u{i % 5000}",
                "item_id": f"i{i % 700}",
                "event_type": "view",
                "session_id": f"s{i // 7}",
                "position": i % 20,
                "consent": i % 50 != 0,
            }
            out.write(json.dumps(rec) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-consent-"))
    settings = load_settings(data_root=root, spark_shuffle_partitions=2, quality_enabled=False)
    landing(events_file(settings.events_dir, START, "part-0"), args.lines)
    spark = get_spark(settings)
    interval = tables.Interval.parse(START, START.replace(hour=10))
    real = bronze.redact

    def before(_spark: object, _settings: object, raw: Any) -> Any:
        return raw.withColumn("_redacted", F.lit(None).cast("string"))

    def run(variant: str) -> float:
        bronze.redact = before if variant == "before" else real
        t0 = time.perf_counter()
        result = bronze.load_events(spark, settings, interval, force=True)
        seconds = time.perf_counter() - t0
        assert result.bronze_rows == args.lines
        return seconds

    run("consent")  # warm-up: table creation, JIT, Delta log
    times: dict[str, list[float]] = {"before": [], "consent": []}
    for _ in range(args.repeat):
        for variant in times:
            times[variant].append(run(variant))
    withdraw_consent(spark, settings, [f"u{i}" for i in range(100)], at=START)
    times["consent+withdrawn"] = [run("consent") for _ in range(args.repeat)]
    redacted = (
        tables.read_or_create(spark, settings, "bronze_events")
        .groupBy("_redacted")
        .count()
        .collect()
    )
    bronze.redact = real
    for variant, values in times.items():
        print(
            f"{variant:<18} median {statistics.median(values):6.2f} s  "
            f"runs {', '.join(f'{v:.2f}' for v in values)}"
        )
    print("bronze rows by _redacted:", {r["_redacted"]: r["count"] for r in redacted})


if __name__ == "__main__":
    main()
