"""What the small tasks cost as separate processes: the light Delta path against Spark.

Under the real scheduler each task is a fresh process; `dag.test()` hides that. This runs
each small step the way a task runs it — a fresh Python process calling one
`jobs.*.steps` function — on a lake of its own (a generated shop, one day ingested by
Spark in a set-up process, so the landing paths bronze recorded are this lake's), once
with `RECFLOW_LIGHT_DELTA=true` (delta-rs: no JVM) and once with `false` (Spark, as
before), alternating, and prints the median wall time of each and the ratio. The steps:

- `should_train`: the training decision (no model here: it decides to train, reading the
  same facts a skipping decision reads);
- `record_audit`: one audit row (a retry of the same run id, so reruns add nothing);
- `upsert_catalog`: no new catalog file;
- `reload_late`: nothing late (the next day's interval; the ingested day is within
  `RECFLOW_LATE_DATA_HOURS`).

Run: .venv/bin/python bench/task_overhead.py [--users 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DRIVER = """
import json, sys, time
t0 = time.monotonic()
step = sys.argv[1]
if step == "should_train":
    from jobs.train.steps import trigger_step
    out = trigger_step()
elif step == "record_audit":
    from jobs.ingest.steps import audit_step
    bronze = {"fingerprint": "bench", "read_lines": 1, "bronze_rows": 1}
    silver = {"balanced": True, "bronze_rows": 1, "inserted": 1, "silver_version": 0}
    out = audit_step("2000-01-01T00:00:00+00:00", "2000-01-01T01:00:00+00:00", bronze,
                     silver, None, run_id="bench-task-overhead")
elif step == "upsert_catalog":
    from jobs.ingest.steps import catalog_step
    out = catalog_step()
elif step == "reload_late":
    from jobs.ingest.steps import late_step
    out = late_step(sys.argv[2], sys.argv[3])
print(json.dumps({"inside": time.monotonic() - t0, "out": str(out)[:160]}))
"""


SETUP = """
import sys
from jobs.config import get_settings
from jobs.ingest.steps import run_interval
from jobs.sources.shop import generate
settings = get_settings()
generate(settings, days=1)
run_interval(sys.argv[1], sys.argv[2], settings=settings)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="recflow-tasks-"))
    try:
        root = work / "var"
        base = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "RECFLOW_DATA_ROOT": str(root),
            "RECFLOW_GEN_USERS": str(args.users),
            "PYTHONWARNINGS": "ignore",
        }
        day = "2026-11-01T00:00:00+00:00", "2026-11-02T00:00:00+00:00"
        (work / "setup.py").write_text(SETUP)
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, str(work / "setup.py"), *day], env=base, check=True, timeout=1800
        )
        print(f"set-up (one generated day ingested by Spark): {time.monotonic() - t0:.0f} s")
        driver = work / "driver.py"
        driver.write_text(DRIVER)
        start, end = day[1], "2026-11-03T00:00:00+00:00"
        steps = ["should_train", "record_audit", "upsert_catalog", "reload_late"]
        times: dict[tuple[str, str], list[float]] = {}
        for rep in range(args.repeat):
            for step in steps:
                for mode in ("light", "spark"):
                    env = {**base, "RECFLOW_LIGHT_DELTA": str(mode == "light").lower()}
                    t0 = time.monotonic()
                    done = subprocess.run(
                        [sys.executable, str(driver), step, start, end],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=900,
                        check=False,
                    )
                    wall = time.monotonic() - t0
                    if done.returncode != 0:
                        print(done.stderr[-3000:], file=sys.stderr)
                        raise SystemExit(f"{step} ({mode}) exited {done.returncode}")
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    times.setdefault((step, mode), []).append(wall)
                    print(
                        f"rep {rep + 1} {step:<15} {mode:<5} {wall:6.1f} s "
                        f"(inside {result['inside']:5.1f} s) {result['out'][:90]}",
                        flush=True,
                    )
        print(f"\n{'task (own process)':<18} {'light':>8} {'spark':>8} {'ratio':>7}")
        for step in steps:
            light = statistics.median(times[(step, "light")])
            heavy = statistics.median(times[(step, "spark")])
            print(f"{step:<18} {light:7.1f}s {heavy:7.1f}s {heavy / light:6.1f}x")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
