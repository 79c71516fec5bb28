"""Real time, measured: the collector's throughput, event → landing file latency, and the
landing consumer's throughput. Everything runs here, on 127.0.0.1: a Kafka broker (KRaft,
Maven Central's jars), `recflow collector` and `recflow stream landing` as processes of
their own, the load generator in this process.

1. **Collector throughput** (closed loop): ``--clients`` concurrent HTTP clients post
   ``--events`` events, one per request and then in batches of ``--batch``; events/s and
   request latency p50/p99. Every request waits for the broker's acknowledgement.
2. **Event → landing file** (open loop): ``--latency-events`` events posted one by one
   at ``--rate`` per second; for each, the time from the POST until a landing file holding
   it is in place (files are polled every 20 ms, so figures include up to 20 ms of
   polling); p50, p99, max.
3. **Landing throughput**: ``--bulk`` events produced straight to the topic, then the
   time the landing consumer takes to put all of them in files (messages/s).

Run: .venv/bin/python bench/bench_stream.py [--events 20000] [--clients 32] [--batch 100]
     [--latency-events 1000] [--rate 50] [--bulk 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from jobs.config import Settings, load_settings
from jobs.stream.broker import free_port, start_broker
from jobs.stream.client import client_config, ensure_topics


def event(i: int, tag: str) -> dict[str, object]:
    return {
        "event_id": f"{tag}-{i}",
        "ts": datetime.now(UTC).isoformat(),
        "user_id": f"u{i % 5000}",
        "item_id": f"i{i % 700}",
        "event_type": "view",
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(url: str, total: int, clients: int, batch: int, tag: str) -> tuple:
    latencies: list[float] = []
    counter = iter(range(0, total, batch))

    async def client_task(client: httpx.AsyncClient) -> None:
        for start in counter:
            n = min(batch, total - start)
            body = event(start, tag) if batch == 1 else [event(start + j, tag) for j in range(n)]
            t0 = time.perf_counter()
            answer = await client.post(f"{url}/events", json=body)
            latencies.append(time.perf_counter() - t0)
            if answer.status_code != 202:
                raise RuntimeError(f"{answer.status_code}: {answer.text}")

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_task(client) for _ in range(clients)))
        took = time.perf_counter() - t0
    return total / took, pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000


def landed_ids(settings: Settings, seen_files: set[Path]) -> list[str]:
    """Event ids of landing files not seen before (marks them seen)."""
    ids = []
    for path in settings.events_dir.rglob("kafka-*.jsonl"):
        if path in seen_files:
            continue
        seen_files.add(path)
        ids += [json.loads(line)["event_id"] for line in path.read_bytes().splitlines()]
    return ids


async def open_loop_latency(url: str, settings: Settings, n: int, rate: float) -> list[float]:
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    seen_files: set[Path] = set()
    landed_ids(settings, seen_files)  # what earlier phases landed is not this phase's

    async def watch() -> None:
        while len(arrived) < n:
            now = time.perf_counter()
            for event_id in landed_ids(settings, seen_files):
                if event_id in sent and event_id not in arrived:
                    arrived[event_id] = now
            await asyncio.sleep(0.02)

    async def send(client: httpx.AsyncClient) -> None:
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            body = event(i, "lat")
            sent[str(body["event_id"])] = time.perf_counter()
            tasks.append(asyncio.create_task(client.post(f"{url}/events", json=body)))
        answers = await asyncio.gather(*tasks)
        assert all(a.status_code == 202 for a in answers)

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.wait_for(asyncio.gather(watch(), send(client)), timeout=n / rate + 120)
    return [(arrived[k] - sent[k]) * 1000 for k in sent]


def bulk_landing(settings: Settings, n: int, env: dict[str, str]) -> float:
    from confluent_kafka import Producer

    bulk = settings.model_copy(
        update={"kafka_events_topic": "bulk", "kafka_landing_group": "bulk-landing"}
    )
    ensure_topics(bulk)
    producer = Producer(client_config(bulk, **{"linger.ms": 20}))
    for i in range(n):
        producer.produce("bulk", json.dumps(event(i, "bulk")).encode(), key=str(i % 5000))
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    recflow = str(Path(sys.executable).parent / "recflow")
    t0 = time.perf_counter()
    subprocess.run(
        [recflow, "stream", "landing", "--idle-stop", "2"],
        env={
            **env,
            "RECFLOW_KAFKA_EVENTS_TOPIC": "bulk",
            "RECFLOW_KAFKA_LANDING_GROUP": "bulk-landing",
        },
        check=True,
        capture_output=True,
    )
    took = time.perf_counter() - t0 - 2  # the idle wait at the end is not work
    lines = sum(p.read_bytes().count(b"\n") for p in bulk.events_dir.rglob("kafka-bulk~*-p*.jsonl"))
    assert lines == n, (lines, n)
    return n / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--latency-events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--bulk", type=int, default=200_000)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    broker = start_broker(load_settings(), root / "kafka")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        env = {
            **os.environ,
            "RECFLOW_DATA_ROOT": str(root / "var"),
            "RECFLOW_KAFKA_BOOTSTRAP": broker.bootstrap,
            "RECFLOW_KAFKA_BATCH_SECONDS": "0.05",
            "RECFLOW_KAFKA_LANDING_INSTANCE": "bench-1",
        }
        settings = load_settings(
            data_root=root / "var", kafka_bootstrap=broker.bootstrap, kafka_batch_seconds=0.05
        )
        ensure_topics(settings)
        recflow = str(Path(sys.executable).parent / "recflow")
        procs.append(subprocess.Popen([recflow, "collector", "--port", str(port)], env=env))
        procs.append(subprocess.Popen([recflow, "stream", "landing"], env=env))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        print(f"broker {broker.bootstrap}, collector {url}, root {root}", flush=True)
        for batch in (1, args.batch):
            total = args.events if batch > 1 else args.events // 5
            rate, p50, p99 = asyncio.run(closed_loop(url, total, args.clients, batch, f"b{batch}"))
            print(
                f"collector, {batch:>3} event(s)/request, {args.clients} clients: "
                f"{rate:,.0f} events/s; request p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                flush=True,
            )
        time.sleep(2)  # let the landing consumer catch up before the latency phase
        lat = asyncio.run(open_loop_latency(url, settings, args.latency_events, args.rate))
        print(
            f"event → landing file, {args.latency_events} events at {args.rate:g}/s: "
            f"p50 {statistics.median(lat):.0f} ms, p99 {pct(lat, 0.99):.0f} ms,"
            f" max {max(lat):.0f} ms",
            flush=True,
        )
        rate = bulk_landing(settings, args.bulk, env)
        print(f"landing consumer, {args.bulk:,} messages: {rate:,.0f} messages/s", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        broker.stop()


if __name__ == "__main__":
    main()
