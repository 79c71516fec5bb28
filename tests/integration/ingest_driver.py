"""One ingest interval in a process of its own: the subject of the kill tests.

Usage: ``python ingest_driver.py LAKE_DIR LANDING_DIR START END``. Prints ``RESULT {audit}``
when the interval is done. A file, not ``python -c``: Great Expectations imports
``pyspark.sql.connect``, which exits when ``__main__`` has no ``__file__``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jobs.config import load_settings
from jobs.ingest.steps import run_interval


def main() -> None:
    lake, landing, start, end = sys.argv[1:5]
    settings = load_settings(
        data_root=Path(lake).parent,
        lake_dir=lake,
        landing_dir=Path(landing),
        spark_shuffle_partitions=2,
        spark_master="local[2]",
        quality_enabled=False,
    )
    result = run_interval(start, end, settings=settings)
    print("RESULT " + json.dumps(result["audit"], default=str), flush=True)


if __name__ == "__main__":
    main()
