"""What the small tasks cost as separate processes: the light Delta path against Spark.

Under the real scheduler each task is a fresh process; `dag.test()` hides that. This runs
each small step the way a task runs it — a fresh Python process calling one
`jobs.*.steps` function — on a copy of a data root (`make demo`'s `var/` by default), once
with `RECFLOW_LIGHT_DELTA=true` (delta-rs: no JVM) and once with `false` (Spark, as
before), alternating, and prints the median wall time of each and the ratio. The steps:

- `should_train`: the training decision (skips: a model exists, nothing new);
- `record_audit`: one audit row (a retry of the same run id, so reruns add nothing);
- `upsert_catalog`: no new catalog file;
- `reload_late`: nothing late.

Run: .venv/bin/python bench/task_overhead.py [--root var] [--repeat 3]
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
from datetime import timedelta
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


def _last_interval(root: Path) -> tuple[str, str]:
    """The day after the newest audited interval (what the next daily run would ingest)."""
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(str(root / "lake" / "audit" / "ingest_audit"))
    sql = "SELECT max(interval_end) AS e FROM a"
    end = pa.table(QueryBuilder().register("a", table).execute(sql).read_all())["e"][0].as_py()
    return end.isoformat(), (end + timedelta(days=1)).isoformat()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT / "var"), help="data root to copy")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    source = Path(args.root)
    if not (source / "lake").exists():
        raise SystemExit(f"no lake under {source}: run `make demo` first")
    work = Path(tempfile.mkdtemp(prefix="recflow-tasks-"))
    try:
        root = work / "var"
        shutil.copytree(source, root, symlinks=True)
        driver = work / "driver.py"
        driver.write_text(DRIVER)
        start, end = _last_interval(root)
        steps = ["should_train", "record_audit", "upsert_catalog", "reload_late"]
        times: dict[tuple[str, str], list[float]] = {}
        for rep in range(args.repeat):
            for step in steps:
                for mode in ("light", "spark"):
                    env = {
                        **os.environ,
                        "PYTHONPATH": str(ROOT),
                        "RECFLOW_DATA_ROOT": str(root),
                        "RECFLOW_LIGHT_DELTA": "true" if mode == "light" else "false",
                        "PYTHONWARNINGS": "ignore",
                    }
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
