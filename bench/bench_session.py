"""Event → visible in the service's answer: how long after a click the next /recommend
of that user follows it.

Everything real, on 127.0.0.1 (``jobs.stream.live``): a Kafka broker, the stream worker,
the collector and the champion's Bento over HTTP, on the data root ``make demo`` built
(it needs the champion and the applied Feast store). Open loop: ``--events`` clicks, one
per request at ``--rate`` per second, each by a different known user on an item they
never had; for each, the time from the POST to the collector until that user's
``/recommend`` answers ``als_session`` (polled every ``--poll`` seconds, so figures
include up to one poll interval). Also the collector's request latency and the worker's
append → pushed delay (broker clock).

Run: .venv/bin/python bench/bench_session.py [--events 1000] [--rate 10] [--poll 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime

import httpx

from jobs.config import get_settings
from jobs.model import control
from jobs.model.registry import CHAMPION, alias_version, load_version, setup
from jobs.publish import layout
from jobs.stream.live import live_stack


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one(
    client: httpx.AsyncClient,
    collector: str,
    service: str,
    request: dict[str, object],
    item: str,
    poll: float,
    timeout: float,
) -> tuple[float, float]:
    event = {
        "event_id": uuid.uuid4().hex,
        "ts": datetime.now(UTC).isoformat(),
        "user_id": request["user_id"],
        "item_id": item,
        "event_type": "click",
    }
    started = time.perf_counter()
    posted = await client.post(f"{collector}/events", json=event)
    posted.raise_for_status()
    acked = time.perf_counter() - started
    while time.perf_counter() - started < timeout:
        answer = (await client.post(f"{service}/recommend", json=request)).json()
        if answer["source"] == "als_session":
            return time.perf_counter() - started, acked
        await asyncio.sleep(poll)
    return float("inf"), acked


async def run(args: argparse.Namespace, live, users: list[tuple[dict, str]]) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        # Warm-up and baseline: each user's answer must still be the static one.
        fresh = []
        for request, item in users:
            answer = (await client.post(f"{live.service_url}/recommend", json=request)).json()
            if answer["source"] == "als":
                fresh.append((request, item))
        fresh = fresh[: args.events]
        print(f"{len(fresh)} users whose answer is the published list; {args.rate}/s")
        tasks = []
        started = time.perf_counter()
        for n, (request, item) in enumerate(fresh):
            await asyncio.sleep(max(0.0, started + n / args.rate - time.perf_counter()))
            tasks.append(
                asyncio.create_task(
                    one(
                        client,
                        live.collector_url,
                        live.service_url,
                        request,
                        item,
                        args.poll,
                        args.timeout,
                    )
                )
            )
        results = await asyncio.gather(*tasks)
    visible = [r[0] * 1000 for r in results]
    acked = [r[1] * 1000 for r in results]
    missed = sum(v == float("inf") for v in visible)
    done = [v for v in visible if v != float("inf")]
    print(
        f"event → visible in the answer: n={len(done)} p50 {pct(done, 0.5):.0f} ms, "
        f"p99 {pct(done, 0.99):.0f} ms, max {max(done):.0f} ms; not visible within "
        f"{args.timeout:.0f} s: {missed}"
    )
    print(f"collector POST (acks=all): p50 {pct(acked, 0.5):.1f} ms, p99 {pct(acked, 0.99):.1f} ms")
    lag = live.worker.lag_ms
    print(
        f"worker append → pushed: n={len(lag)} p50 {pct(lag, 0.5):.0f} ms, "
        f"p99 {pct(lag, 0.99):.0f} ms; pushes {live.worker.pushes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    settings = get_settings()
    champion = alias_version(setup(settings), settings.model_name, CHAMPION)
    if champion is None:
        raise SystemExit("no champion under RECFLOW_DATA_ROOT: run `make demo` first")
    model = load_version(settings, champion.version)
    secret = settings.hmac_secret()
    users = []
    for row, user in enumerate(model.user_ids):
        user = str(user)
        if control.in_control(user, settings):
            continue
        seen = set(model.seen.indices[model.seen.indptr[row] : model.seen.indptr[row + 1]])
        item = next(j for j in range(len(model.item_ids)) if j not in seen)
        request = {"user_id": user, "user_key": layout.user_key(secret, user), "k": 10}
        users.append((request, str(model.item_ids[item])))
    print(
        f"model v{champion.version}: {len(model.user_ids):,} users, {len(model.item_ids):,} items"
    )
    with live_stack(settings) as live:
        asyncio.run(run(args, live, users))


if __name__ == "__main__":
    main()
