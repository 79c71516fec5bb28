"""The capacity plan (issue 20 part 6): docs/capacity.md, computed from measured figures.

Every measured input names the BENCHMARKS.md text it comes from (``source``), and
``tests/unit/test_capacity.py`` checks that each such text is still in BENCHMARKS.md and
that docs/capacity.md is what this script writes, so the plan cannot drift from the
figures silently. The assumptions (traffic, catalogue, windows) are stated beside them.

    .venv/bin/python bench/capacity.py                      # rewrite docs/capacity.md
    .venv/bin/python bench/capacity.py --measure-lake var/lake   # bytes per row, live files
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "capacity.md"


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    what: str
    source: str  # verbatim text of BENCHMARKS.md that states it


MEASURED = {
    "ingest_events_per_s": Figure(
        8707, "events/s", "bronze → silver → gold on 2 cores (local[*])", "**8,707 events/s**"
    ),
    "score_users_per_s": Figure(
        51035,
        "users/s",
        "blocked scorer, 10,000 items, rank 64, K 50, 2 cores",
        "| 0.98 s | 51,035 |",
    ),
    "upload_users_per_s": Figure(
        3868, "users/s", "upload step to a folder, first publish, 2 cores", "| 3,868 | 20,000 |"
    ),
    "object_bytes": Figure(729, "B", "one user's gzip JSON object (K 50)", "| 729 | 5.17 |"),
    "serve_rps": Figure(
        643.9,
        "requests/s",
        "known-user /recommend, 1 worker, client on the same 2 cores",
        "| known (als) | 8 | 19,317 | 643.9 |",
    ),
    "serve_p99_ms": Figure(17.2, "ms", "its p99", "p99 17.2 ms"),
    "landing_msgs_per_s": Figure(
        60785, "messages/s", "Kafka → landing files, one consumer", "| 60,785 messages/s |"
    ),
    "collector_events_per_s": Figure(
        6107,
        "events/s",
        "collector, 100 events a request, 32 clients, 2 shared cores",
        "| 6,107 events/s;",
    ),
    "als_fit_s": Figure(
        4.77,
        "s",
        "implicit ALS fit, 367,075 training pairs, rank 32, 10 iterations",
        "| 106.01 s | 4.77 s |",
    ),
    "als_fit_pairs": Figure(367075, "pairs", "the pairs of that fit", "367,075 training"),
    "spark_als_fit_s": Figure(
        106.01,
        "s",
        "Spark ALS fit of the same pairs (machine heavily shared: an upper bound)",
        "| 106.01 s | 4.77 s |",
    ),
    "bronze_bytes_per_event": Figure(
        43.2, "B", "bronze events, live Parquet files", "| bronze events | 43.2 B |"
    ),
    "silver_bytes_per_event": Figure(
        21.8, "B", "silver events, live Parquet files", "| silver events | 21.8 B |"
    ),
}

# Stated assumptions: what the plan is for.
ASSUMED = {
    "users": 10_000_000,
    "items": 1_000_000,
    "events_per_day": 1_000_000_000,
    "peak_hour_share": 0.10,  # of a day's events in the busiest hour (2.4x the mean hour)
    "ingest_minutes": 20,  # an hourly interval must finish within this
    "active_share": 0.30,  # of users, daily
    "service_calls_per_active_user": 20,  # session-aware refreshes, fold-ins, /similar
    "service_peak_factor": 3.0,  # peak second over the day's mean
    "target_cpu": 0.6,  # HPA utilisation target
    "cdn_fetches_per_active_user": 10,
    # Of users whose list differs from the one in the slot a publish writes: two slots, so
    # from the publish two back.
    "changed_lists_share": 0.5,
    "put_per_s": 3200,  # 64 upload threads x 50 PUTs/s each (S3 takes 3,500/s a prefix)
    "memory_gb_per_s_per_core": 10.0,  # a core streaming the item operand from RAM
    "training_pairs": 500_000_000,  # distinct (user, item) pairs in the training window
    "rank": 64,
    "bytes_per_event_on_kafka": 400,
    "partition_mb_per_s": 5.0,  # a conservative per-partition write rate
    "retention_days_bronze": 30,
    "put_usd_per_1000": 0.005,
    "cdn_usd_per_10000_https": 0.01,
    "cdn_usd_per_gb": 0.085,
    # 20 recent item ids with times and the user_stats row, key, Redis hash overhead.
    "feast_bytes_per_user": 1200,
    "feast_bytes_per_item": 1400,  # 256 float32 content vector, stock, stats, overhead
}


def plan() -> list[tuple[str, list[tuple[str, str]]]]:
    """(section, [(line, how it was computed)]) of the plan."""
    m = {k: f.value for k, f in MEASURED.items()}
    a = ASSUMED
    per_core_ingest = m["ingest_events_per_s"] / 2
    peak_hour = a["events_per_day"] * a["peak_hour_share"]
    ingest_cores = math.ceil(peak_hour / (per_core_ingest * a["ingest_minutes"] * 60))

    # ALS costs ~ pairs x rank^2 per sweep: scaled from the measured fits (implicit's as
    # the lower bound, Spark's, measured on a loaded machine, as the upper one).
    scale = (a["training_pairs"] / m["als_fit_pairs"]) * (a["rank"] / 32) ** 2
    fit_core_s = m["als_fit_s"] * 2 * scale
    spark_fit_core_s = m["spark_als_fit_s"] * 2 * scale
    # The defaults: 12 search trials, the test refit, two incumbents refit, the final fit
    # and the item-cold fit (the stratified protocol, off by default, doubles the search).
    search_fits = 12 + 1 + 2 + 1 + 1
    train_hours_64 = fit_core_s * search_fits / 64 / 3600
    spark_hours_64 = spark_fit_core_s * search_fits / 64 / 3600

    # Scoring a user costs ~ items x rank: scaled from 10,000 items, rank 64.
    score_core_s_per_user = 2 / m["score_users_per_s"] * (a["items"] / 10_000)
    publish_core_h = score_core_s_per_user * a["users"] / 3600
    publish_cores = math.ceil(publish_core_h / 1.0)  # within one hour
    puts = a["users"] * a["changed_lists_share"]
    put_usd_month = puts / 1000 * a["put_usd_per_1000"] * 30
    # Upload: the PUTs, plus listing the slot (1,000 keys a LIST) for upload and verify.
    upload_min = (puts / a["put_per_s"] + 2 * a["users"] / 1000 * 0.05) / 60

    active = a["users"] * a["active_share"]
    calls = active * a["service_calls_per_active_user"]
    mean_rps = calls / 86400
    peak_rps = mean_rps * a["service_peak_factor"]
    # Per request: the measured serving overhead (1 core at the measured rate, client
    # excluded: half the 2 shared cores) plus the ranking of 1 M items instead of 200.
    overhead_s = 1 / m["serve_rps"]
    # One request streams the whole item operand from memory (a batch reuses it from
    # cache, a single request cannot): that, not the FLOPs, bounds a request's ranking.
    operand_bytes = a["items"] * (a["rank"] + 32) * 4
    rank_s = max(score_core_s_per_user, operand_bytes / (a["memory_gb_per_s_per_core"] * 1e9))
    rank_s_int8 = max(
        score_core_s_per_user, operand_bytes / 4 / (a["memory_gb_per_s_per_core"] * 1e9)
    )
    per_core_rps = 1 / (overhead_s + rank_s)
    replicas_peak = math.ceil(peak_rps / (per_core_rps * a["target_cpu"]))
    replicas_min = max(2, math.ceil(mean_rps / (per_core_rps * a["target_cpu"])))
    factors_mb = a["items"] * (a["rank"] + 32) * 4 / 2**20
    int8_mb = a["items"] * (a["rank"] + 32) / 2**20

    fetches = active * a["cdn_fetches_per_active_user"]
    cdn_usd_month = (
        fetches / 10_000 * a["cdn_usd_per_10000_https"]
        + fetches * m["object_bytes"] / 1e9 * a["cdn_usd_per_gb"]
    ) * 30

    peak_events_s = peak_hour / 3600
    kafka_mb_s = peak_events_s * a["bytes_per_event_on_kafka"] / 1e6
    partitions = max(6, math.ceil(kafka_mb_s / a["partition_mb_per_s"]) * 2)
    landing_consumers = math.ceil(peak_events_s / m["landing_msgs_per_s"])
    collectors = math.ceil(peak_events_s / (m["collector_events_per_s"] / 2 * a["target_cpu"]))

    redis_gb = (
        a["users"] * a["feast_bytes_per_user"] + a["items"] * a["feast_bytes_per_item"]
    ) / 2**30
    day_gb = a["events_per_day"] * (m["bronze_bytes_per_event"] + m["silver_bytes_per_event"]) / 1e9
    year_tb = (
        a["events_per_day"]
        * (
            m["bronze_bytes_per_event"] * a["retention_days_bronze"]
            + m["silver_bytes_per_event"] * 365
        )
        / 1e12
    )

    return [
        (
            "Hourly ingest (Spark)",
            [
                (f"peak hour: **{peak_hour / 1e6:.0f} M events**", "events/day x peak_hour_share"),
                (
                    f"**{ingest_cores} executor cores** (e.g. {math.ceil(ingest_cores / 4)}"
                    f" executors x 4) to finish it in {a['ingest_minutes']} min",
                    f"{per_core_ingest:,.0f} events/s a core (measured on 2), linear scaling",
                ),
            ],
        ),
        (
            "Training (ALS, implicit engine per fit, or Spark ALS past one machine)",
            [
                (
                    f"one fit on {a['training_pairs'] / 1e6:.0f} M pairs at rank {a['rank']}:"
                    f" ~{fit_core_s / 3600:.1f} core-hours",
                    "measured fit x pairs ratio x (rank/32)^2",
                ),
                (
                    f"a whole run ({search_fits} fits): **~{train_hours_64:.1f} h on 64 cores**"
                    " at the implicit engine's cost a core",
                    "search trials + test refit + final + item-cold",
                ),
                (
                    f"past implicit's 50 M-pair limit a fit runs on Spark's ALS: up to"
                    f" **~{spark_hours_64:.0f} h on 64 cores** at its measured rate (a loaded"
                    " machine: an upper bound); cut the search's trials first",
                    "Spark's measured fit x the same scaling",
                ),
            ],
        ),
        (
            "Publish (daily)",
            [
                (
                    f"scoring {a['users'] / 1e6:.0f} M users against {a['items'] / 1e6:.0f} M"
                    f" items: **{publish_core_h:.0f} core-hours**, so {publish_cores} cores"
                    " (score_spark) to publish within the hour",
                    "measured users/s on 2 cores x items ratio",
                ),
                (
                    f"{puts / 1e6:.1f} M PUTs a publish (changed lists only): about"
                    f" **${put_usd_month:,.0f} a month** of PUTs at daily publishes",
                    "users x changed share x PUT price x 30",
                ),
                (
                    f"upload and verify: ~{upload_min:.0f} min (the PUTs at"
                    f" {a['put_per_s']:,}/s, two listings of the slot)",
                    "PUTs / rate + 2 x users / 1,000 keys a LIST x 50 ms",
                ),
                (
                    f"CDN: {fetches / 1e6:.0f} M fetches a day, about **${cdn_usd_month:,.0f} a"
                    " month** (requests and bytes)",
                    f"{m['object_bytes']:.0f} B objects, HTTPS request and GB prices",
                ),
            ],
        ),
        (
            "Online service",
            [
                (
                    f"{calls / 1e6:.0f} M calls a day: mean {mean_rps:,.0f} rps, peak"
                    f" **{peak_rps:,.0f} rps**",
                    "active users x calls each; peak factor",
                ),
                (
                    f"~{per_core_rps:,.0f} rps a core at {a['items'] / 1e6:.0f} M items (the"
                    f" measured {m['serve_rps']:.0f} rps had 200 items);"
                    f" ~{1 / (overhead_s + rank_s_int8):,.0f} with int8 factors",
                    "1 / (measured overhead a request + streaming the item operand once)",
                ),
                (
                    f"**HPA {replicas_min}–{replicas_peak * 2} replicas** of one core"
                    f" ({replicas_peak} at peak, target CPU {a['target_cpu']:.0%})",
                    "peak rps / (rps a core x target); max doubled for a lost zone",
                ),
                (
                    f"item side in memory: {factors_mb:,.0f} MiB float32 (rank + 32 content"
                    f" dims), {int8_mb:,.0f} MiB with RECFLOW_FACTOR_DTYPE=int8",
                    "items x dims x bytes",
                ),
            ],
        ),
        (
            "Real time (Kafka, collector, landing)",
            [
                (
                    f"peak {peak_events_s:,.0f} events/s = {kafka_mb_s:.1f} MB/s:"
                    f" **{partitions} partitions** of the events topic",
                    "2x the partitions the write rate needs, at least 6",
                ),
                (
                    f"{collectors} collector replicas, {landing_consumers} landing"
                    " consumer(s) (one per partition at most)",
                    "measured rates (collector on half of 2 shared cores)",
                ),
            ],
        ),
        (
            "Feast online store (Redis) and the lake",
            [
                (
                    f"Redis: **~{redis_gb:.0f} GiB** (users' recent items, items' features"
                    " and content vectors)",
                    "stated bytes per user and per item",
                ),
                (
                    f"lake growth: {day_gb:.0f} GB a day (bronze + silver); **~{year_tb:.1f} TB**"
                    f" after a year with bronze kept {a['retention_days_bronze']} days",
                    "measured bytes per event of the live Parquet files",
                ),
            ],
        ),
    ]


WHAT_BREAKS = """## What breaks first, and where to scale

1. **The online service's ranking.** Every answer scores all items (exact top-K, one
   product): at 1 M items that is ~{rank_ms:.1f} ms of a core per request, against
   ~{overhead_ms:.1f} ms of serving overhead, so replicas grow with the catalogue. Next
   steps, in order: int8 factors (4x less memory, same lists within the bench's
   overlap), then a candidate
   stage (an approximate index or the published list plus the session's neighbours)
   before the exact rescoring.
2. **Publish scoring** grows with users x items; it runs on Spark (`score_spark`) and is
   embarrassingly parallel, so it is a matter of cores; the PUTs are paid only for
   changed lists.
3. **Training** passes the single-node engine's limit (50 M pairs) long before 500 M: the
   Spark engine fits then, and the search budget (trials) is what to cut first.
4. **Ingest** scales with executors; its hourly fixed cost (~40 small Spark jobs) stops
   mattering at this volume.
5. **Redis** fits one node; shard by user key beyond it.
"""


def render() -> str:
    lines = [
        "# Capacity plan",
        "",
        "Computed by `bench/capacity.py` from the figures in BENCHMARKS.md and the",
        "assumptions below; `tests/unit/test_capacity.py` keeps the two in step.",
        "Measured figures come from a 2-core machine; scaling them is stated per line.",
        "",
        "## Assumptions",
        "",
        "| assumption | value |",
        "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in ASSUMED.items()],
        "",
        "## Measured inputs (BENCHMARKS.md)",
        "",
        "| figure | value | what |",
        "|---|---|---|",
        *[f"| {k} | {f.value:,} {f.unit} | {f.what} |" for k, f in MEASURED.items()],
        "",
    ]
    for section, rows in plan():
        lines += [f"## {section}", ""]
        lines += [f"- {line} ({how})" for line, how in rows]
        lines.append("")
    operand = ASSUMED["items"] * (ASSUMED["rank"] + 32) * 4
    lines.append(
        WHAT_BREAKS.format(
            rank_ms=1000 * operand / (ASSUMED["memory_gb_per_s_per_core"] * 1e9),
            overhead_ms=1000 / MEASURED["serve_rps"].value,
        )
    )
    return "\n".join(lines)


def measure_lake(lake: Path) -> None:
    """Bytes per row of the live Parquet files of bronze, silver and gold (delta-rs)."""
    import os

    from deltalake import DeltaTable

    for name in ("bronze/bronze_events", "silver/events", "gold/interactions"):
        table = DeltaTable(str(lake / name))
        files = [f.removeprefix("file://") for f in table.file_uris()]
        size = sum(os.path.getsize(f) for f in files)
        rows = table.to_pyarrow_dataset().count_rows()
        print(f"{name}: {rows:,} rows, {size:,} bytes, {size / max(rows, 1):.1f} B a row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure-lake", type=Path)
    args = parser.parse_args()
    if args.measure_lake:
        measure_lake(args.measure_lake)
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
