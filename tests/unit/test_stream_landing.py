"""The landing consumer's pure parts: lines, files per hour and partition, where to resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from jobs.config import load_settings
from jobs.stream.landing import (
    FILE_RE,
    Chunk,
    as_line,
    chunks,
    file_name,
    label,
    oldest_hour,
    resume_offset,
    write_chunk,
    written_ranges,
)

H9 = int(datetime(2026, 11, 30, 9, 59, 59, tzinfo=UTC).timestamp() * 1000)
H10 = H9 + 1000


@dataclass
class Msg:
    t: str
    p: int
    o: int
    v: bytes | None
    ts: int

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def value(self) -> bytes | None:
        return self.v

    def timestamp(self) -> tuple[int, int]:
        return (2, self.ts)  # TIMESTAMP_LOG_APPEND_TIME


def _parses(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


@given(st.binary(max_size=200) | st.none())
def test_any_value_is_one_line_and_keeps_its_validity(value: bytes | None) -> None:
    line = as_line(value)
    assert b"\n" not in line and b"\r" not in line
    if value is None:
        assert line == b"null"
    elif _parses(value):
        assert json.loads(line) == json.loads(value)
    else:
        assert not _parses(line)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists, max_leaves=8))
def test_pretty_printed_json_lands_as_the_same_document(doc: object) -> None:
    pretty = json.dumps({"event": doc}, indent=2).encode()
    assert json.loads(as_line(pretty)) == {"event": doc}


def test_a_raw_break_inside_a_string_stays_invalid() -> None:
    assert not _parses(as_line(b'{"title": "two\nlines"}'))


def test_files_break_at_the_hour_and_at_offset_gaps_per_partition() -> None:
    msgs = [
        Msg("ev", 0, 5, b"a", H9),
        Msg("ev", 1, 0, b"b", H9),
        Msg("ev", 0, 6, b"c", H9),
        Msg("ev", 0, 7, b"d", H10),  # the next hour: a new file
        Msg("ev", 0, 9, b"e", H10),  # offset 8 compacted away: a new file
        Msg("ev", 1, 1, b"f", H9),
    ]
    got = [(c.partition, c.hour.hour, c.first, c.last, c.lines) for c in chunks(msgs)]
    assert got == [
        (0, 9, 5, 6, [b"a", b"c"]),
        (1, 9, 0, 1, [b"b", b"f"]),
        (0, 10, 7, 7, [b"d"]),
        (0, 10, 9, 9, [b"e"]),
    ]


def test_no_file_goes_to_an_hour_older_than_the_late_window() -> None:
    settings = load_settings(late_data_hours=48)
    now = datetime(2026, 11, 30, 15, 20, tzinfo=UTC)
    floor = oldest_hour(settings, now)
    assert floor == datetime(2026, 11, 28, 16, tzinfo=UTC)
    old = Msg("ev", 0, 0, b"a", H9 - 5 * 86_400_000)  # appended five days ago
    (chunk,) = chunks([old], floor)
    assert chunk.hour == floor
    assert oldest_hour(load_settings(late_data_hours=0), now) == now.replace(minute=0)


def test_a_topic_id_in_the_name_keeps_incarnations_apart(tmp_path) -> None:
    settings = load_settings(data_root=tmp_path)
    topic = settings.kafka_events_topic
    hour = datetime(2026, 11, 30, 9, tzinfo=UTC)
    old, new = label(topic, "AAAAAAAAAAAAAA+/AAAAAA"), label(topic, "BBBBBBBBBBBBBBBBBBBBBB")
    assert "/" not in old and "+" not in old
    write_chunk(settings, Chunk(topic, 0, hour, 0, 99, [b"{}"] * 100, label=old))
    # The topic was created again: its offsets restart at 0, and the old file is not its.
    assert written_ranges(settings, topic, 0, new) == []
    assert resume_offset(0, written_ranges(settings, topic, 0, new)) == 0
    assert written_ranges(settings, topic, 0, old) == [(0, 99)]
    (msg,) = [Msg(topic, 0, 0, b"x", H9)]
    assert chunks([msg], labels={topic: new})[0].label == new


def test_resume_skips_the_files_that_continue_the_commit_and_nothing_else() -> None:
    assert resume_offset(0, []) == 0
    assert resume_offset(10, [(0, 4), (5, 9)]) == 10  # all committed
    assert resume_offset(10, [(5, 9), (10, 14), (15, 15)]) == 16  # killed before the commit
    assert resume_offset(10, [(10, 14), (20, 25)]) == 15  # a gap: the rest is read again
    assert resume_offset(10, [(12, 14)]) == 10  # does not continue the commit
    assert resume_offset(50, [(0, 99), (100, 120)]) == 121  # a commit inside a file


@given(st.lists(st.integers(1, 5), min_size=1, max_size=12), st.integers(0, 12))
def test_a_kill_after_any_file_of_a_batch_resumes_after_the_last_one(
    sizes: list[int], written: int
) -> None:
    committed = 100
    ranges, first = [], committed
    for size in sizes:
        ranges.append((first, first + size - 1))
        first += size
    kept = ranges[: min(written, len(ranges))]
    expected = kept[-1][1] + 1 if kept else committed
    assert resume_offset(committed, kept) == expected


def test_written_files_are_named_by_their_offsets_and_found_again(tmp_path) -> None:
    settings = load_settings(data_root=tmp_path)
    hour = datetime(2026, 11, 30, 9, tzinfo=UTC)
    for first, last in ((0, 2), (3, 3)):
        chunk = Chunk(
            settings.kafka_events_topic, 1, hour, first, last, [b"{}"] * (last - first + 1)
        )
        path = write_chunk(settings, chunk)
        assert path.parent == settings.events_dir / "dt=2026-11-30" / "hr=09"
        assert FILE_RE.match(path.name)
        assert path.read_bytes().count(b"\n") == last - first + 1
    catalog = Chunk(settings.kafka_catalog_topic, 0, hour, 7, 7, [b"{}"])
    assert write_chunk(settings, catalog).parent == settings.catalog_dir / "dt=2026-11-30"
    assert written_ranges(settings, settings.kafka_events_topic, 1) == [(0, 2), (3, 3)]
    assert written_ranges(settings, settings.kafka_events_topic, 0) == []
    assert written_ranges(settings, settings.kafka_catalog_topic, 0) == [(7, 7)]
    assert not list(tmp_path.rglob(".*tmp-*"))  # no temporary file left behind
    # Names sort in offset order (zero-padded).
    assert file_name("t", 0, 9, 10) < file_name("t", 0, 10, 10)


def test_cluster_ids_are_never_read_as_options() -> None:
    from jobs.stream.broker import cluster_id

    ids = {cluster_id() for _ in range(3000)}  # about 47 would start with "-" by chance
    assert len(ids) == 3000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
