"""`make demo`: the whole flow on embedded defaults, narrated step by step.

At this stage: generate a sample shop into the landing folder, then run the doctor
(Java, Spark with Delta, a Delta round trip with time travel). Later stages extend this
into ingest → train → publish → serve.
"""

from __future__ import annotations

import sys

from jobs.config import get_settings


def _step(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def main() -> int:
    from jobs.doctor import run_checks
    from jobs.generate import generate

    settings = get_settings()
    print(f"recflow demo — data root {settings.data_root}")

    _step("1. generate a sample shop")
    report = generate(settings, force=True, progress=True)
    types = report.events_by_type
    print(
        f"{report.users:,} users, {report.items:,} items, {len(report.days)} days "
        f"({report.days[0]} .. {report.days[-1]}), {report.files} hourly files"
    )
    print("events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(types.items())))
    print(
        f"CTR {types['click'] / types['impression']:.2%}; "
        f"{report.events_per_second:,.0f} events/s; landing in {settings.landing_dir}"
    )

    _step("2. doctor: Java, Spark with Delta, Delta round trip")
    results = run_checks(
        settings,
        on_result=lambda c: print(
            f"[{'ok' if c.ok else 'FAIL':>4}] {c.name:<30} {c.seconds:5.1f} s  {c.detail}",
            flush=True,
        ),
    )
    if not all(c.ok for c in results):
        print("doctor found problems; see above", file=sys.stderr)
        return 1
    print("\ndemo finished: the landing folder holds the shop; next stages ingest it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
