"""The stream worker against a real Kafka broker and a real Feast online store.

A click produced to the topic is in ``user_recent_items`` within a bound; what silver
would not count never is; a worker stopped and started again goes on from its committed
offsets; and after the same events the push and the hourly batch materialization write
the same lists (the Spark test, in the ``long`` tier; the rule itself is checked against
the batch's with Hypothesis in tests/unit/test_stream_features.py).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.config import Settings, load_settings
from jobs.contracts import hour_partition
from jobs.features import definitions, export, online
from jobs.stream.client import client_config, ensure_topics
from jobs.stream.features import WorkerStats, run

pytestmark = pytest.mark.integration

VISIBLE_WITHIN = 10.0  # seconds: generous for a loaded CI machine; the benchmark measures


class Worker:
    """``jobs.stream.features.run`` in a thread, started and stopped by the test."""

    def __init__(self, settings: Settings) -> None:
        self.stop = threading.Event()
        self.assigned = threading.Event()
        self.stats = WorkerStats()  # updated as the worker goes
        self.error: BaseException | None = None

        def body() -> None:
            try:
                run(settings, self.stop.is_set, on_assigned=self.assigned.set, stats=self.stats)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                self.error = exc

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        if not self.assigned.wait(60):
            self.close()
            raise AssertionError(f"the worker got no partitions within 60 s ({self.error})")

    def close(self) -> WorkerStats:
        self.stop.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error
        return self.stats


def produce(settings: Settings, lines: list[tuple[str, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer(client_config(settings, **{"enable.idempotence": True}))
    try:
        for key, value in lines:
            producer.produce(settings.kafka_events_topic, value=value, key=key.encode())
        assert producer.flush(30) == 0
    finally:
        producer.close()


def event(user: str, item: str, ts: datetime, kind: str = "click", **extra: object) -> bytes:
    return json.dumps(
        {
            "event_id": uuid.uuid4().hex,
            "ts": ts.isoformat(),
            "user_id": user,
            "item_id": item,
            "event_type": kind,
            **extra,
        }
    ).encode()


def wait_for(check: Callable[[], bool], within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not visible within {within} s")


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Feast registry and online store with recflow's definitions applied (shared)."""
    root = tmp_path_factory.mktemp("stream-feast") / "var"
    definitions.apply(load_settings(data_root=root))
    return root


@pytest.fixture
def settings(kafka: str, applied: Path) -> Iterator[Settings]:
    """Fresh topics and consumer group per test, on the module's broker and store."""
    tag = uuid.uuid4().hex[:8]
    s = load_settings(
        data_root=applied,
        kafka_bootstrap=kafka,
        kafka_events_topic=f"events-{tag}",
        kafka_catalog_topic=f"catalog-{tag}",
        kafka_features_group=f"features-{tag}",
        feast_recent_items=3,
    )
    ensure_topics(s)
    yield s


def test_a_click_is_in_the_online_store_within_a_bound(settings: Settings) -> None:
    fs = definitions.store(settings)
    user = f"user-{uuid.uuid4().hex[:6]}"
    worker = Worker(settings)
    try:
        now = datetime.now(UTC)
        produce(
            settings,
            [
                (user, event(user, "a", now - timedelta(seconds=3))),
                (user, event(user, "b", now - timedelta(seconds=2), "purchase")),
                (user, event(user, "c", now - timedelta(seconds=1), "impression")),  # weight 0
                (user, event(user, "d", now, consent=False)),  # not to be kept
                (user, b'{"event_id": "broken'),
            ],
        )
        took = wait_for(lambda: online.recent_items(fs, [user])[user] == ["b", "a"], VISIBLE_WITHIN)
        time.sleep(0.5)  # anything still to come would now be pushed: nothing is
        assert online.recent_items(fs, [user])[user] == ["b", "a"]
    finally:
        stats = worker.close()
    assert stats.messages == 5 and stats.touches == 2 and stats.skipped == 3
    assert took < VISIBLE_WITHIN


def test_a_restarted_worker_goes_on_from_its_committed_offsets(settings: Settings) -> None:
    fs = definitions.store(settings)
    user = f"user-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    worker = Worker(settings)
    try:
        produce(settings, [(user, event(user, "first", now - timedelta(seconds=5)))])
        wait_for(lambda: online.recent_items(fs, [user])[user] == ["first"], VISIBLE_WITHIN)
    finally:
        worker.close()
    # While no worker runs, the user clicks twice more; the next worker picks those up
    # (from the group's committed offset, not the topic's end) on top of the online row.
    produce(
        settings,
        [
            (user, event(user, "second", now - timedelta(seconds=4))),
            (user, event(user, "third", now - timedelta(seconds=3))),
        ],
    )
    worker = Worker(settings)
    try:
        wait_for(
            lambda: online.recent_items(fs, [user])[user] == ["third", "second", "first"],
            VISIBLE_WITHIN,
        )
    finally:
        stats = worker.close()
    assert stats.messages == 2


@pytest.mark.spark
@pytest.mark.long  # a shop's day through ingest and Feast twice (~2.5 min); make test-all
def test_push_and_batch_materialization_agree_after_the_same_events(
    spark: Any, kafka: str, tmp_path: Path
) -> None:
    """A shop's first eleven hours go through the batch (ingest, export, materialize); its
    twelfth hour goes through Kafka to the worker, and then through the batch too. The
    worker's lists and the batch's lists are the same for every user."""
    from jobs.ingest.steps import run_interval
    from jobs.sources.shop import generate

    start = datetime(2026, 11, 1, tzinfo=UTC)
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        data_root=tmp_path / "var",
        spark_master="local[2]",
        spark_shuffle_partitions=2,
        gen_users=300,
        gen_items=60,
        quality_enabled=False,
        feast_recent_items=3,
        kafka_bootstrap=kafka,
        kafka_events_topic=f"events-{tag}",
        kafka_catalog_topic=f"catalog-{tag}",
        kafka_features_group=f"features-{tag}",
    )
    generate(settings, days=1)
    # The busiest hour after the first few goes through Kafka; the hours before it are the
    # batch's starting point.
    hours = {
        start + timedelta(hours=h): sorted(
            (settings.events_dir / hour_partition(start + timedelta(hours=h))).glob("*.jsonl")
        )
        for h in range(4, 24)
    }
    end1 = max(hours, key=lambda h: sum(len(f.read_bytes().splitlines()) for f in hours[h]))
    end2 = end1 + timedelta(hours=1)
    lines = [x for f in hours[end1] for x in f.read_bytes().splitlines()]
    run_interval(start.isoformat(), end1.isoformat(), settings=settings)
    definitions.apply(settings)
    export.materialize(settings, end1, spark)
    ensure_topics(settings)

    worker = Worker(settings)
    try:
        produce(settings, [(_user_of(x), x) for x in lines])
        wait_for(lambda: worker.stats.messages >= len(lines), 60)
    finally:
        stats = worker.close()
    assert stats.messages == len(lines) and stats.users_pushed >= 10
    fs = definitions.store(settings)
    everyone = sorted({_user_of(x) for x in lines} - {""})
    pushed = online.recent_items(fs, everyone)

    run_interval(end1.isoformat(), end2.isoformat(), settings=settings)
    export.materialize(settings, end2, spark)
    batch = online.recent_items(definitions.store(settings), everyone)
    assert pushed == batch


def _user_of(line: bytes) -> str:
    try:
        value = json.loads(line)
        return str(value.get("user_id") or "") if isinstance(value, dict) else ""
    except ValueError:
        return ""


def test_an_unreadable_deny_list_holds_the_batch_until_it_is_back(
    kafka: str, applied: Path
) -> None:
    """In production the deny list is required: while it cannot be read nothing is pushed
    and nothing committed; once it is there, the held batch is pushed, without the people
    it names."""
    from jobs.subjects import (
        add_to_deny_list,
        deny_list_path,
        key_id,
        subject_hash_with_key,
        subject_key,
    )

    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        data_root=applied,
        env="prod",
        publish_secret="p" * 40,
        subject_secret="s" * 40,
        kafka_bootstrap=kafka,
        kafka_events_topic=f"events-{tag}",
        kafka_catalog_topic=f"catalog-{tag}",
        kafka_features_group=f"features-{tag}",
        feast_recent_items=3,
    )
    ensure_topics(settings)
    deny = deny_list_path(settings)
    deny.unlink(missing_ok=True)
    fs = definitions.store(settings)
    kept, erased = f"kept-{tag}", f"erased-{tag}"
    now = datetime.now(UTC)
    worker = Worker(settings)
    try:
        produce(settings, [(u, event(u, "x", now)) for u in (kept, erased)])
        deadline = time.monotonic() + 30
        while worker.stats.failures < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.stats.failures >= 2 and worker.stats.messages == 0
        assert online.recent_items(fs, [kept])[kept] == []
        key = key_id(subject_key(settings.subject_secret_value()))
        add_to_deny_list(deny, [subject_hash_with_key(subject_key("s" * 40), erased)], key)
        wait_for(lambda: online.recent_items(fs, [kept])[kept] == ["x"], VISIBLE_WITHIN)
    finally:
        stats = worker.close()
        deny.unlink(missing_ok=True)
    assert online.recent_items(fs, [erased])[erased] == []
    assert stats.messages == 2 and stats.touches == 1 and stats.skipped == 1
