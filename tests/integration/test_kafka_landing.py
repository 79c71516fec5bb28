"""Kafka into landing and on through the ingest, against a real broker (KRaft, Maven's jars).

The landing consumer is killed with SIGKILL right after its 2nd, 5th and 9th file (each
batch writes several files, one per partition and hour, so most of these kills fall in
the middle of a batch, after some files and before the commit); a last run drains the
topic. The oracle is what was produced: every message is on disk exactly once, each
partition's files cover its offsets without a gap or an overlap, and the ingest then
takes the files like any others (silver, quarantine with reasons, a balanced audit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs import tables
from jobs.config import Settings, load_settings
from jobs.stream.client import client_config, ensure_topics
from jobs.stream.landing import FILE_RE, as_line, consume, topic_labels, written_ranges

pytestmark = [pytest.mark.integration, pytest.mark.spark]

KILL_AFTER = (2, 5, 9)
# Each run gathers batches of another size: a run that read again what a killed one had
# written would cut it into other files, and the overlap would show.
BATCH_MAX = (15, 11, 7)
N_GOOD = 300
BAD = [
    (b'{"event_id": "bad-json", "ts": ', "unparseable"),
    # A raw line break inside a string: invalid JSON, and it must not become valid.
    (b'{"event_id": "raw-break", "title": "two\nlines"}', "unparseable"),
    (None, "not_an_object"),
    (b"\xff\xfe not utf-8", "bad_encoding"),
]

DRIVER = """
import os, signal, sys
from jobs.config import get_settings
from jobs.stream.landing import consume

kill_after = int(sys.argv[1])
written = []

def after_file(path):
    written.append(path)
    if len(written) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

consume(get_settings(), lambda: False, idle_stop=5, after_file=after_file)
"""


def _event(i: int, now: datetime) -> dict[str, Any]:
    return {
        "event_id": f"k-{i}",
        "ts": now.isoformat(),
        "user_id": f"u{i % 17}",
        "item_id": f"i{i % 11}",
        "event_type": "view",
    }


@pytest.fixture(scope="module")
def landed(
    kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, list[bytes | None], list[int]]:
    from confluent_kafka import Producer

    run = uuid.uuid4().hex[:8]
    env = {
        "RECFLOW_DATA_ROOT": str(tmp_path_factory.mktemp("root")),
        "RECFLOW_KAFKA_BOOTSTRAP": kafka,
        "RECFLOW_KAFKA_EVENTS_TOPIC": f"events-{run}",
        "RECFLOW_KAFKA_CATALOG_TOPIC": f"catalog-{run}",
        "RECFLOW_KAFKA_LANDING_GROUP": f"landing-{run}",
        # Static membership: each restart takes the partitions back at once (no waiting
        # for the killed member's session to time out).
        "RECFLOW_KAFKA_LANDING_INSTANCE": "lander-1",
        "RECFLOW_KAFKA_BATCH_MAX": "15",
        "RECFLOW_KAFKA_BATCH_SECONDS": "0.5",
        "RECFLOW_SPARK_MASTER": "local[2]",
        "RECFLOW_SPARK_SHUFFLE_PARTITIONS": "2",
        "RECFLOW_QUALITY_ENABLED": "false",
    }
    settings = load_settings(**{k.removeprefix("RECFLOW_").lower(): v for k, v in env.items()})
    ensure_topics(settings)
    now = datetime.now(UTC)
    produced: list[bytes | None] = [json.dumps(_event(i, now)).encode() for i in range(N_GOOD)]
    # A pretty-printed event is one message and must stay one record.
    produced.append(json.dumps(_event(N_GOOD, now), indent=2).encode())
    produced += [value for value, _ in BAD]
    producer = Producer(client_config(settings))
    for i, value in enumerate(produced):
        producer.produce(settings.kafka_events_topic, value=value, key=str(i % 7).encode())
    assert producer.flush(30) == 0
    driver = Path(tmp_path_factory.mktemp("driver")) / "driver.py"
    driver.write_text(DRIVER)
    codes = []
    for kill_after, batch_max in zip(KILL_AFTER, BATCH_MAX, strict=True):
        done = subprocess.run(
            [sys.executable, str(driver), str(kill_after)],
            env={**os.environ, **env, "RECFLOW_KAFKA_BATCH_MAX": str(batch_max)},
            capture_output=True,
            timeout=300,
        )
        codes.append(done.returncode)
    consume(settings.model_copy(update={"kafka_batch_max": 13}), lambda: False, idle_stop=5)
    return settings, produced, codes


def _landed_lines(settings: Settings) -> list[bytes]:
    lines = []
    for path in settings.events_dir.rglob("*"):
        if path.is_file():
            assert FILE_RE.match(path.name), f"not a landing file: {path.name}"
            lines += path.read_bytes().splitlines()
    return lines


def test_every_message_lands_exactly_once_through_sigkills(landed: tuple) -> None:
    settings, produced, codes = landed
    assert codes == [-9] * len(KILL_AFTER)  # each driver died by SIGKILL, as planned
    assert Counter(_landed_lines(settings)) == Counter(as_line(v) for v in produced)
    topic = settings.kafka_events_topic
    name = topic_labels(settings)[topic]  # the topic's name and Kafka id: this incarnation
    covered = 0
    for partition in range(settings.kafka_partitions):
        ranges = written_ranges(settings, topic, partition, name)
        expected = 0
        for first, last in ranges:  # contiguous, from 0, no overlap
            assert first == expected, ranges
            expected = last + 1
        covered += expected
    assert covered == len(produced)
    # Drained: another run finds nothing to land and writes no file.
    again = consume(settings, lambda: False, idle_stop=2)
    assert again.messages == 0 and again.files == []


def test_landed_files_go_through_the_ingest_like_any_others(spark: Any, landed: tuple) -> None:
    settings, produced, _ = landed
    hours = sorted(
        datetime.strptime(f"{p.parent.parent.name}/{p.parent.name}", "dt=%Y-%m-%d/hr=%H")
        for p in settings.events_dir.rglob("kafka-*.jsonl")
    )
    from jobs.ingest.steps import run_interval

    audits = []
    for hour in sorted(set(hours)):
        start = hour.replace(tzinfo=UTC)
        result = run_interval(
            start.isoformat(), (start + timedelta(hours=1)).isoformat(), settings=settings
        )
        audits.append(result["audit"])
    assert all(a["status"] == "ok" and a["balanced"] for a in audits), audits
    assert sum(a["read_lines"] for a in audits) == len(produced)
    silver = {r.event_id for r in tables.read_or_create(spark, settings, "events").collect()}
    assert silver == {f"k-{i}" for i in range(N_GOOD + 1)}
    reasons = Counter(
        r.reason for r in tables.read_or_create(spark, settings, "quarantine").collect()
    )
    assert reasons == Counter(reason for _, reason in BAD)
