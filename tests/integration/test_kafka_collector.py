"""The event collector over HTTP (`recflow collector`) against a real Kafka broker.

Good events are on the topic after a 202, keyed by user; every bad body of the corpus
gets its 4xx and puts nothing on the topic; with the broker stopped the collector answers
503 with Retry-After within its timeout instead of hanging.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from support import free_port, stop_process, wait_for_port

from jobs.config import Settings, load_settings
from jobs.stream.broker import start_broker
from jobs.stream.client import client_config, ensure_topics

pytestmark = pytest.mark.integration


def _event(event_id: str, user: str = "u1") -> dict[str, object]:
    return {
        "event_id": event_id,
        "ts": datetime.now(UTC).isoformat(),
        "user_id": user,
        "item_id": "i1",
        "event_type": "click",
    }


def _serve(settings: Settings, root: Path, timeout: float = 2.0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "RECFLOW_DATA_ROOT": str(root),
        "RECFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RECFLOW_KAFKA_EVENTS_TOPIC": settings.kafka_events_topic,
        "RECFLOW_COLLECTOR_TIMEOUT_SECONDS": str(timeout),
        "RECFLOW_COLLECTOR_MAX_EVENTS": "50",
    }
    recflow = Path(sys.executable).parent / "recflow"
    proc = subprocess.Popen(
        [str(recflow), "collector", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def _topic(bootstrap: str) -> Settings:
    return load_settings(kafka_bootstrap=bootstrap, kafka_events_topic=f"ev-{uuid.uuid4().hex}")


def _read_all(settings: Settings, expect: int, wait: float = 20.0) -> list[tuple[bytes, bytes]]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        client_config(settings, **{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([settings.kafka_events_topic])
    out: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(100, timeout=0.5):
                if message.error() is None:
                    out.append((message.key(), message.value()))
            if len(out) >= expect:
                # A little longer: anything beyond what was expected must show too.
                deadline = min(deadline, time.monotonic() + 2)
    finally:
        consumer.close()
    return out


@pytest.fixture(scope="module")
def collector(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    settings = _topic(kafka)
    ensure_topics(settings)
    proc, url = _serve(settings, tmp_path_factory.mktemp("root"))
    try:
        yield settings, url
    finally:
        stop_process(proc)


BAD_BODIES = [
    (b"", 422, "empty_line"),
    (b"not json", 422, "unparseable"),
    (b"\xff\xfe", 422, "bad_encoding"),
    (json.dumps({**_event("b1"), "user_id": None}).encode(), 422, "missing_field"),
    (json.dumps([_event("b2"), {**_event("b3"), "event_type": "hover"}]).encode(), 422, None),
    (json.dumps([_event(f"b{i}") for i in range(51)]).encode(), 413, "too_large"),
    (b"[" + b"1," * 600_000 + b"1]", 413, "too_large"),  # over the byte limit
]


def test_events_reach_the_topic_and_bad_bodies_reach_nothing(collector: tuple) -> None:
    settings, url = collector
    with httpx.Client(timeout=30) as client:
        for body, status, error in BAD_BODIES:
            answer = client.post(f"{url}/events", content=body)
            assert answer.status_code == status, (body[:60], answer.text)
            if error:
                assert answer.json()["error"] == error
        named = client.post(f"{url}/events", json={**_event("b4"), "ts": "soon"}).json()
        assert named["field"] == "ts" and named["error"] == "bad_timestamp"
        one = client.post(f"{url}/events", json=_event("g1", "ü-1"))
        batch = client.post(f"{url}/events", json=[_event(f"g{i}", f"u{i}") for i in (2, 3, 4)])
    assert one.status_code == batch.status_code == 202
    assert batch.json() == {"accepted": 3}
    seen = _read_all(settings, expect=4)
    assert sorted(json.loads(v)["event_id"] for _, v in seen) == ["g1", "g2", "g3", "g4"]
    assert {k.decode() for k, _ in seen} == {"ü-1", "u2", "u3", "u4"}


def test_a_stopped_broker_answers_503_with_retry_after_not_a_hang(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    broker = start_broker(load_settings(), tmp_path_factory.mktemp("kafka-down"))
    settings = _topic(broker.bootstrap)
    ensure_topics(settings)
    proc, url = _serve(settings, tmp_path_factory.mktemp("root-down"), timeout=2.0)
    try:
        with httpx.Client(timeout=30) as client:
            assert client.post(f"{url}/events", json=_event("up")).status_code == 202
            broker.stop()
            started = time.monotonic()
            answer = client.post(f"{url}/events", json=_event("down"))
            took = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert took < 2.0 + 10, took  # bounded by the collector's timeout, not hanging
    finally:
        stop_process(proc)
        broker.stop()


def test_up_lands_a_posted_event_as_a_landing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`recflow up`'s Kafka part: a local broker, the topics, the collector and the landing
    consumer; an event posted to the collector is a landing file within seconds."""
    from jobs.cli import _start_stream, _stop_all
    from jobs.config import get_settings

    port = free_port()
    for key, value in {
        "RECFLOW_DATA_ROOT": str(tmp_path),
        "RECFLOW_KAFKA_LOCAL_PORT": "0",
        "RECFLOW_COLLECTOR_PORT": str(port),
        "RECFLOW_KAFKA_BATCH_SECONDS": "0.2",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    started: list = []
    try:
        _start_stream(settings, started)
        assert [s.name for s in started] == ["kafka", "landing", "worker", "collector"]
        wait_for_port(port, started[-1].proc)
        answer = httpx.post(f"http://127.0.0.1:{port}/events", json=_event("via-up"), timeout=30)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 60
        landed: list[Path] = []
        while not landed and time.monotonic() < deadline:
            landed = list(settings.events_dir.rglob("kafka-*.jsonl"))
            time.sleep(0.2)
        assert landed, "the posted event never reached the landing folder"
        assert json.loads(landed[0].read_bytes())["event_id"] == "via-up"
    finally:
        _stop_all([(s.name, s.stop) for s in reversed(started)])
    assert all(s.proc.poll() is not None for s in started)
