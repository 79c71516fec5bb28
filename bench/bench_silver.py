"""Silver throughput before and after a change, on the same ~1 M landing events.

Issue 12 made validation strict (values checked against silver's types, lines read as
bytes, explicit dtypes); it must not cost more than 10 % of silver's throughput. This
script measures both sides on byte-identical input in one run:

1. generates one multi-day interval of the synthetic shop once (~1 M events by default);
2. checks out the baseline revision into a temporary git worktree;
3. for each side (baseline, current, repeated ``--rounds`` times, alternating so machine
   load falls on both alike) copies the landing folder into a fresh lake and, in a
   subprocess whose ``PYTHONPATH`` is that side's tree, loads bronze (not timed), then
   times the silver step (validate, quarantine, de-duplicate, MERGE) and, separately, the
   pure-Python parser over every landing line;
4. prints events/s for both and the ratio current/baseline (the best round of each).

Run: .venv/bin/python bench/bench_silver.py [--baseline bd12583] [--users 30000 --days 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from jobs.config import load_settings
from jobs.sources.shop import generate

REPO = Path(__file__).resolve().parents[1]

# Runs inside one side's tree: its own jobs package, the shared landing copy.
CHILD = r"""
import json, sys, time
from jobs.config import load_settings
from jobs import tables
from jobs.ingest.steps import bronze_step, silver_step
from jobs.ingest.silver import time_window
from jobs.ingest.validate import Rejected, parse_event

root, start, end, users, items = sys.argv[1:6]
settings = load_settings(data_root=root, quality_enabled=False, gen_users=int(users),
                         gen_items=int(items))
bronze_step(start, end, settings=settings)
t0 = time.perf_counter()
result = silver_step(start, end, settings=settings)
silver_s = time.perf_counter() - t0
window = time_window(settings, tables.Interval.parse(start, end))
lines = [l for f in sorted(settings.events_dir.rglob("*.jsonl"))
         for l in f.read_text("utf-8", errors="replace").splitlines()]
t0 = time.perf_counter()
ok = 0
for line in lines:
    try:
        parse_event(line, window)
        ok += 1
    except Rejected:
        pass
parse_s = time.perf_counter() - t0
print(json.dumps({"silver_s": silver_s, "parse_s": parse_s, "lines": len(lines),
                  "parsed_ok": ok, "inserted": result.get("inserted"),
                  "quarantined": result.get("quarantined"),
                  "balanced": result.get("balanced")}))
"""


def run_side(
    tree: Path, landing: Path, lake: Path, args: argparse.Namespace, start: str, end: str
) -> dict:
    shutil.rmtree(lake, ignore_errors=True)
    shutil.copytree(landing, lake / "landing")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env = {k: v for k, v in env.items() if not k.startswith("RECFLOW_")}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(lake), start, end, str(args.users), str(args.items)],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(lake, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default="bd12583", help="revision before the change")
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gen = load_settings(data_root=root / "gen", gen_users=args.users, gen_items=args.items)
        report = generate(gen, days=args.days, malformed_fraction=0.01, progress=True)
        print(f"landing: {report.lines:,} lines in {report.files} hourly files", flush=True)
        start = datetime.fromisoformat(gen.gen_start)
        end = start + timedelta(days=args.days)
        baseline = root / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline],
            check=True,
            capture_output=True,
        )
        try:
            sides = {"baseline": baseline, "current": REPO}
            best: dict[str, dict] = {}
            for n in range(args.rounds):
                for name, tree in sides.items():
                    got = run_side(
                        tree,
                        gen.landing_dir,
                        root / f"lake-{name}",
                        args,
                        start.isoformat(),
                        end.isoformat(),
                    )
                    print(f"round {n + 1} {name}: {json.dumps(got)}", flush=True)
                    if name not in best or got["silver_s"] < best[name]["silver_s"]:
                        best[name] = got
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)],
                check=False,
            )
    for name, got in best.items():
        print(
            f"{name}: {got['lines']:,} lines; silver {got['silver_s']:.1f} s = "
            f"{got['lines'] / got['silver_s']:,.0f} events/s; parser "
            f"{got['lines'] / got['parse_s']:,.0f} lines/s"
        )
    ratio = best["baseline"]["silver_s"] / best["current"]["silver_s"]
    parse_ratio = best["baseline"]["parse_s"] / best["current"]["parse_s"]
    print(
        f"silver throughput current/baseline = {ratio:.3f} (target >= 0.90); "
        f"parser current/baseline = {parse_ratio:.3f}"
    )


if __name__ == "__main__":
    main()
