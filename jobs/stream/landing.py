"""Kafka into the landing folder, exactly once: files first, offsets after.

Why files and not a second bronze source: the ingest's validation, quarantine, audit
(lines read = rows written) and late handling all start from landing files, so a topic
that becomes files gets every one of them unchanged, and an outage of the broker or of
the lake never couples the two.

Exactly once rests on three rules:

1. Each file holds a contiguous offset range of one partition and is named by it:
   ``kafka-<topic>~<topic id>-p<partition>-<first>-<last>.jsonl``. The topic id (Kafka's
   UUID of this incarnation of the topic) keeps a topic deleted and created again, or a
   broker reset, from being mistaken for the old one: its offsets start at 0 again. It
   goes into the folder of the hour (events) or day (catalog) the broker appended its
   messages in (never older than the late-data window); topics are created
   with ``LogAppendTime``, so within a partition those stamps never go back and a batch
   cuts into files at hour boundaries without reordering anything.
2. A file is written to a temporary name the ingest does not read, flushed to disk and
   renamed; files of a batch are written in offset order; the offsets are committed
   after the last one.
3. At start (and whenever partitions are assigned) the consumer reads its committed
   offset and skips past the files already on disk that continue it without a gap: a
   consumer killed after some files of a batch but before its commit resumes exactly
   after the last file written, never writing an offset twice or skipping one.

One writer per partition: Kafka's group protocol gives each partition to one member and
revokes it only inside ``consume()``, between batches, so two members never write the
same offsets. (Not covered: a member that stalls past ``max.poll.interval.ms`` in the
middle of a batch while its partitions move on, or two groups landing the same topic
into one folder; both would write overlapping files, which silver's dedupe by
``event_id`` absorbs but bronze would count twice.)

A file that arrives in an hour already ingested is a late file to the ingest (a name new
to its interval, even one that ran empty) and is loaded by its next run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from jobs.config import Settings
from jobs.contracts import hour_partition
from jobs.stream.client import IdleClock, client_config, good_messages

log = logging.getLogger(__name__)

FILE_RE = re.compile(
    r"^kafka-(?P<topic>.+)-p(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.jsonl$"
)
OFFSET_DIGITS = 20  # zero-padded: names sort in offset order


class Message(Protocol):
    """What the consumer needs of a confluent_kafka.Message (tests build plain ones)."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass
class Chunk:
    """Consecutive messages of one partition appended in one hour: one landing file."""

    topic: str
    partition: int
    hour: datetime
    first: int
    last: int
    lines: list[bytes] = field(default_factory=list)
    label: str = ""  # the topic's name in file names (``topic~id``); the topic when empty


def file_name(topic: str, partition: int, first: int, last: int) -> str:
    return f"kafka-{topic}-p{partition}-{first:0{OFFSET_DIGITS}d}-{last:0{OFFSET_DIGITS}d}.jsonl"


def as_line(value: bytes | None) -> bytes:
    """One message as one landing line, whatever its bytes.

    A line break inside a value would turn one message into several lines (the audit
    would count lines no message had). A value that parses as JSON with breaks in it was
    pretty-printed: the breaks sit between tokens (strict JSON allows no raw control
    character inside a string), so a space keeps it the same document. Any other value
    with breaks is invalid anyway: they become NUL bytes, so it stays invalid and is
    quarantined as such instead of being mended into a valid record. A message without a
    value (a tombstone) lands as ``null``, which silver quarantines as not an object.
    """
    if value is None:
        return b"null"
    if b"\n" not in value and b"\r" not in value:
        return value
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return value.replace(b"\r", b"\x00").replace(b"\n", b"\x00")
    return value.replace(b"\r\n", b" ").replace(b"\r", b" ").replace(b"\n", b" ")


def appended_hour(message: Message) -> datetime:
    """The hour the broker appended the message in (UTC), from its timestamp.

    A message without one (a very old producer against a CreateTime topic) is placed in
    the hour it is consumed: it is about to be landed now. Any hour would be correct for
    exactly-once (a file is a contiguous offset range whatever its folder); the hour
    decides only which ingest interval reads it first.
    """
    kind, stamp = message.timestamp()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if kind == 0 or stamp < 0:  # TIMESTAMP_NOT_AVAILABLE
        return now
    try:
        return datetime.fromtimestamp(stamp // 1000, tz=UTC).replace(minute=0, second=0)
    except (OverflowError, OSError, ValueError):
        # A producer's CreateTime beyond year 9999 (a topic not created by recflow): the
        # message still lands, in the hour it is consumed.
        return now


def oldest_hour(settings: Settings, now: datetime) -> datetime:
    """The oldest hour folder a file may still go to: the ingest reloads files that arrive
    late only within ``late_data_hours``, so an older message (a consumer that was down
    for days) goes to the oldest hour still inside that window, or to the current hour
    when late reloads are off. Which folder a file is in does not matter for exactly-once
    (files are found by name, in every folder); it decides which run loads it."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour - timedelta(hours=max(0, settings.late_data_hours - 1))


def label(topic: str, topic_id: str) -> str:
    """A topic incarnation's name in file names (``~`` is not allowed in topic names; the
    id is base64, made safe for a file name)."""
    safe = topic_id.replace("+", "-").replace("/", "_").rstrip("=")
    return f"{topic}~{safe}"


def chunks(
    messages: Iterable[Message],
    floor: datetime | None = None,
    labels: dict[str, str] | None = None,
) -> list[Chunk]:
    """Messages (in the order consumed) as files: a new one at each partition's hour change
    or offset gap (a compacted or transactional topic may skip offsets); no file goes to an
    hour before ``floor``."""
    out: list[Chunk] = []
    open_: dict[tuple[str, int], Chunk] = {}
    for message in messages:
        key = (message.topic(), message.partition())
        hour = appended_hour(message)
        if floor is not None and hour < floor:
            hour = floor
        current = open_.get(key)
        if current is None or current.hour != hour or message.offset() != current.last + 1:
            current = Chunk(
                key[0],
                key[1],
                hour,
                message.offset(),
                message.offset(),
                label=(labels or {}).get(key[0], key[0]),
            )
            open_[key] = current
            out.append(current)
        current.last = message.offset()
        current.lines.append(as_line(message.value()))
    return out


def folder(settings: Settings, topic: str, hour: datetime) -> Path:
    """Landing folder of one chunk: the events' hour folder, or the catalog's day folder."""
    if topic == settings.kafka_catalog_topic:
        return settings.catalog_dir / f"dt={hour:%Y-%m-%d}"
    return settings.events_dir / hour_partition(hour)


def write_chunk(settings: Settings, chunk: Chunk) -> Path:
    """Write one file atomically (temporary name, fsync, rename, fsync of the folder).

    The temporary name ends in ``.tmp-…``: the ingest reads ``*.jsonl`` only, so a file
    half-written by a killed consumer is never loaded, and the next start overwrites
    nothing (it writes the same offsets under the same final name).
    """
    target = folder(settings, chunk.topic, chunk.hour)
    target.mkdir(parents=True, exist_ok=True)
    path = target / file_name(chunk.label or chunk.topic, chunk.partition, chunk.first, chunk.last)
    temp = target / f".{path.name}.tmp-{uuid.uuid4().hex}"
    with temp.open("wb") as fh:
        fh.write(b"\n".join(chunk.lines) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    temp.replace(path)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def written_ranges(
    settings: Settings, topic: str, partition: int, name: str | None = None
) -> list[tuple[int, int]]:
    """(first, last) offsets of every landing file of one partition, in offset order
    (``name``: the topic's label in file names, see :func:`label`)."""
    name = name or topic
    root = settings.catalog_dir if topic == settings.kafka_catalog_topic else settings.events_dir
    pattern = f"kafka-{name}-p{partition}-*.jsonl"
    found = []
    for path in root.rglob(pattern):
        match = FILE_RE.match(path.name)
        if match and match["topic"] == name and int(match["partition"]) == partition:
            found.append((int(match["first"]), int(match["last"])))
    return sorted(found)


def resume_offset(committed: int, ranges: list[tuple[int, int]]) -> int:
    """Where to read on: after the files that continue ``committed`` without a gap.

    Files below ``committed`` were committed already. A file starting past the first gap
    cannot exist when files are written in offset order; if one does (a folder restored
    from elsewhere), it is not trusted and its offsets are read again.
    """
    position = committed
    for first, last in ranges:
        if last < position:
            continue
        if first > position:
            break
        # The file holds ``position`` (a commit inside a file: the oldest retained offset
        # moved into it): everything up to its end is on disk already.
        position = last + 1
    return position


@dataclass
class LandingStats:
    """What one consumer run did (for logs, the CLI and tests)."""

    batches: int = 0
    messages: int = 0
    files: list[str] = field(default_factory=list)
    resumed: dict[str, int] = field(default_factory=dict)
    assigned: bool = False


def topic_labels(settings: Settings, timeout: float = 30.0) -> dict[str, str]:
    """Each landed topic's label (name and Kafka topic id); a clear error when missing."""
    from confluent_kafka import KafkaException, TopicCollection
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(settings))
    topics = [settings.kafka_events_topic, settings.kafka_catalog_topic]
    futures = admin.describe_topics(TopicCollection(topics), request_timeout=timeout)
    labels = {}
    for name, future in futures.items():
        try:
            labels[name] = label(name, str(future.result().topic_id))
        except KafkaException as exc:
            raise RuntimeError(
                f"topic {name!r}: {exc.args[0].str()} (create it: `recflow stream topics`)"
            ) from None
    return labels


def _on_assign(
    settings: Settings, stats: LandingStats, labels: dict[str, str]
) -> Callable[[Any, list[Any]], None]:
    from confluent_kafka import OFFSET_INVALID

    def assign(consumer: Any, partitions: list[Any]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        for tp in committed:
            low, _ = consumer.get_watermark_offsets(tp, timeout=30)
            start = low if tp.offset == OFFSET_INVALID or tp.offset < low else tp.offset
            if tp.offset != OFFSET_INVALID and tp.offset < low:
                log.warning(
                    "%s[%d]: committed offset %d is below the oldest retained %d: the"
                    " messages between were deleted by retention before landing",
                    tp.topic,
                    tp.partition,
                    tp.offset,
                    low,
                )
            ranges = written_ranges(settings, tp.topic, tp.partition, labels.get(tp.topic))
            tp.offset = resume_offset(start, ranges)
            if tp.offset != start:
                stats.resumed[f"{tp.topic}[{tp.partition}]"] = tp.offset - start
        consumer.assign(committed)
        stats.assigned = True

    return assign


def consume(
    settings: Settings,
    should_stop: Callable[[], bool],
    idle_stop: float | None = None,
    after_file: Callable[[Path], None] | None = None,
) -> LandingStats:
    """Land the events and catalog topics until ``should_stop()`` (or ``idle_stop``
    seconds without a message); returns what was done. ``after_file`` is called with each
    file as soon as it is in place (the kill test stops the process there)."""

    from confluent_kafka import Consumer, TopicPartition

    stats = LandingStats()
    labels = topic_labels(settings)
    config = {
        "group.id": settings.kafka_landing_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }
    if settings.kafka_landing_instance:
        config["group.instance.id"] = settings.kafka_landing_instance
    consumer = Consumer(client_config(settings, **config))
    topics = [settings.kafka_events_topic, settings.kafka_catalog_topic]
    consumer.subscribe(topics, on_assign=_on_assign(settings, stats, labels))
    idle = IdleClock(idle_stop)
    try:
        while not should_stop():
            good = good_messages(
                consumer.consume(settings.kafka_batch_max, timeout=settings.kafka_batch_seconds)
            )
            if idle.drained(bool(good), stats.assigned):
                break
            if not good:
                continue
            written = []
            for chunk in chunks(good, oldest_hour(settings, datetime.now(UTC)), labels):
                written.append(write_chunk(settings, chunk))
                if after_file is not None:
                    after_file(written[-1])
            ends: dict[tuple[str, int], int] = {}
            for message in good:
                ends[(message.topic(), message.partition())] = message.offset() + 1
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()],
                asynchronous=False,
            )
            stats.batches += 1
            stats.messages += len(good)
            stats.files.extend(str(p) for p in written)
    finally:
        consumer.close()
    return stats
