"""The service's answer log: its lines, its parser, and the control group's answers."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import clustered_model

from jobs.answer_log import FIELDS, AnswerLog, answers_dir
from jobs.config import load_settings
from jobs.linelog_load import usable_rows
from jobs.model.artifact import RecModel
from jobs.monitor.answers import parse_line, row_fields
from jobs.privacy.access import parse_line as access_parse
from jobs.serve import answers, schemas

T = datetime(2026, 11, 29, 6, 0, 0, 123456, tzinfo=UTC)


def _lines(directory: Path) -> list[bytes]:
    return [
        line
        for path in sorted(directory.glob("dt=*/*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def test_answers_dir_defaults_under_landing(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path)
    assert answers_dir(settings) == tmp_path / "landing" / "answers"
    moved = load_settings(data_root=tmp_path, answers_dir=tmp_path / "elsewhere")
    assert answers_dir(moved) == tmp_path / "elsewhere"


def test_one_line_per_answer_in_the_file_of_its_day(tmp_path: Path) -> None:
    log = AnswerLog(tmp_path)
    assert log.record("r1", "a" * 32, "7", "als", "treatment", ["i3", "i1"], ts=T)
    assert log.record("r2", "b" * 32, "7", "popular", "control", [], ts=T)
    log.close()
    (folder,) = tmp_path.iterdir()
    assert folder.name == "dt=2026-11-29"
    first, second = (json.loads(x) for x in _lines(tmp_path))
    assert tuple(first) == FIELDS
    assert first == {
        "ts": "2026-11-29T06:00:00.123456Z",
        "request_id": "r1",
        "subject": "a" * 32,
        "model_version": "7",
        "source": "als",
        "group": "treatment",
        "items": [{"item_id": "i3", "rank": 1}, {"item_id": "i1", "rank": 2}],
    }
    assert second["items"] == [] and second["group"] == "control"


def test_the_writer_is_the_shared_background_writer(tmp_path: Path) -> None:
    """Many request threads, one background writer: every answer once, none torn."""
    log = AnswerLog(tmp_path, background=True)

    def answer(n: int) -> None:
        for i in range(200):
            log.record(f"r{n}-{i}", "c" * 32, "7", "als", "treatment", ["i\u00e9", "i2"])

    threads = [threading.Thread(target=answer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    rows = [parse_line(line) for line in _lines(tmp_path)]
    assert len(rows) == 1200 and log.written == 1200 and log.dropped == 0
    assert all(r is not None and [x["item_id"] for x in r] == ["i\u00e9", "i2"] for r in rows)


def test_a_full_queue_drops_the_answer_and_counts_it(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = AnswerLog(tmp_path, background=True, on_drop=dropped.append, queue_size=1)
    gate = threading.Event()
    original = log._write

    def slow_disk(rec):  # type: ignore[no-untyped-def]
        gate.wait(10)
        return original(rec)

    log._write = slow_disk  # type: ignore[method-assign]
    results = [log.record(f"r{i}", "d" * 32, "7", "als", "treatment", ["i1"]) for i in range(8)]
    assert results.count(False) >= 5 and len(dropped) == results.count(False) == log.dropped
    gate.set()
    log.close()
    assert len(_lines(tmp_path)) == results.count(True)


def test_a_written_line_parses_to_one_row_per_item(tmp_path: Path) -> None:
    log = AnswerLog(tmp_path)
    log.record("r1", "a" * 32, "7", "fold_in", "treatment", ["x", "y", "z"], ts=T)
    log.close()
    (line,) = _lines(tmp_path)
    rows = parse_line(line)
    assert rows is not None
    assert [(r["item_id"], r["rank"]) for r in rows] == [("x", 1), ("y", 2), ("z", 3)]
    assert {r["ab_group"] for r in rows} == {"treatment"} and rows[0]["ts"] == T


GOOD = {
    "ts": "2026-11-29T06:00:00.000001Z",
    "request_id": "r",
    "subject": "s" * 32,
    "model_version": "7",
    "source": "als",
    "group": "treatment",
    "items": [{"item_id": "i1", "rank": 1}],
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


# No deadline: the first example pays Arrow's start-up, seconds on a loaded machine.
@settings(deadline=None)
@given(
    st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=4),
    st.sets(st.sampled_from(FIELDS), max_size=2),
)
def test_any_line_is_rows_that_fit_or_none(patch: dict, removed: set[str]) -> None:
    """Whatever a line holds, the parser returns None or rows of the table's types."""
    body = {k: v for k, v in {**GOOD, **patch}.items() if k not in removed}
    rows = parse_line(json.dumps(body).encode())
    if rows is None:
        return
    assert set(body) == set(FIELDS)
    table = pa.Table.from_pylist(rows, schema=row_fields())
    assert table.num_rows == len(body["items"])
    assert set(table.column("ab_group").to_pylist()) <= {"treatment", "control"}


@pytest.mark.parametrize(
    "line",
    [b"", b"not json", b"[]", b'{"ts": 1}', json.dumps({**GOOD, "group": "other"}).encode()],
)
def test_bad_lines_are_not_answers(line: bytes) -> None:
    assert parse_line(line) is None


@pytest.fixture(scope="module")
def model() -> RecModel:
    return clustered_model()


def test_a_control_user_gets_popularity_even_when_known(model: RecModel) -> None:
    online = answers.OnlineModel.of(model, name="m", version="7")
    known = str(model.user_ids[0])
    request = schemas.RecommendRequest(user_id=known, k=5, recent_item_ids=[str(model.item_ids[1])])
    treated = answers.recommend(online, request, None, None, "r1")
    control = answers.recommend(online, request, None, None, "r2", group="control")
    assert (treated.source, treated.group) == ("als", "treatment")
    assert (control.source, control.group, control.personal) == ("popular", "control", False)
    idx, _ = model.popular_rows(np.array([-1]), 5, None)
    assert [i.item_id for i in control.items] == model.ids(idx)[0]
    stranger = schemas.RecommendRequest(
        user_id="new", k=5, recent_item_ids=[str(model.item_ids[1])]
    )
    calls: list[str] = []
    folded = answers.recommend(online, stranger, calls.append, None, "r3", group="control")
    assert folded.source == "popular" and calls == []  # no fold-in, no feature lookup


def test_erasure_blanks_the_subjects_answer_lines_in_place(tmp_path: Path) -> None:
    """The answer files must not keep an erased subject's hash: each of their lines (a
    torn one too) becomes spaces of the same length, every other byte and offset stays,
    so the running writer and the loader's offsets are unaffected."""
    from jobs.linelog_load import complete_lines
    from jobs.privacy.erasure import erase_answer_files

    s = load_settings(data_root=tmp_path / "var")
    gone, kept = "a" * 32, "b" * 32
    log = AnswerLog.open(s)
    log.record("r1", kept, "1", "als", "treatment", ["i1"], ts=T)
    log.record("r2", gone, "1", "als", "treatment", ["i2", "i3"], ts=T)
    log.record("r3", kept, "1", "als", "control", ["i4"], ts=T)
    (path,) = answers_dir(s).glob("dt=*/*.jsonl")
    with path.open("ab") as f:  # a torn line of theirs at the end (a crash mid-write)
        f.write(b'{"ts":"2026-11-29T06:00:00Z","request_id":"r4","subject":"' + gone.encode())
    before = path.read_bytes()
    assert erase_answer_files(s, {gone}, rewrite=False) == 2
    assert path.read_bytes() == before  # a count only
    assert erase_answer_files(s, {gone}) == 2
    after = path.read_bytes()
    assert len(after) == len(before) and gone.encode() not in after
    old, new = before.split(b"\n"), after.split(b"\n")
    assert [o == n for o, n in zip(old, new, strict=True)] == [True, False, True, False]
    assert new[1].strip() == b"" and new[3].strip() == b""
    # The writer still appends to the same file, after the blanked bytes.
    log.record("r5", kept, "1", "als", "treatment", ["i5"], ts=T)
    log.close()
    lines, _ = complete_lines(path, 0)
    assert [parse_line(raw) is not None for _, _, raw in lines if raw.strip()] == [True] * 3
    assert erase_answer_files(s, {gone}, rewrite=False) == 0  # verification finds none


def test_a_failed_partial_write_does_not_glue_the_next_line(tmp_path: Path) -> None:
    """A real short write: the file size limit (RLIMIT_FSIZE) stops a line part-way, as a
    full disk does. The next record must start a line of its own, so it is loaded."""
    import resource
    import signal

    log = AnswerLog(tmp_path / "answers")
    log.record("r1", "a" * 32, "7", "als", "treatment", ["i1"], ts=T)
    (path,) = (tmp_path / "answers").glob("dt=*/*.jsonl")
    size = path.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))
        assert not log.record("r2", "b" * 32, "7", "als", "treatment", ["i2"], ts=T)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert path.stat().st_size == size + 40 and log.dropped == 1  # a torn fragment
    assert log.record("r3", "c" * 32, "7", "als", "control", ["i3"], ts=T)
    log.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [parse_line(line) for line in lines[:-1]]
    assert [p is not None for p in parsed] == [True, False, True]  # before: r3 glued, lost
    assert parsed[2][0]["request_id"] == "r3"


@pytest.mark.parametrize(
    "patch",
    [
        {"ts": "0001-01-01T00:30:00+01:00"},  # year 0 in UTC: astimezone overflows
        {"request_id": "\ud800"},  # a lone surrogate, valid JSON, not encodable
        {"items": [{"item_id": "i\udfff", "rank": 1}]},
    ],
)
def test_a_line_that_cannot_be_stored_is_a_bad_line_not_a_stuck_loader(patch: dict) -> None:
    line = json.dumps({**GOOD, **patch}).encode()
    assert usable_rows(parse_line, line) is None
    assert usable_rows(parse_line, json.dumps(GOOD).encode())  # the loader's guard lets it by


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, categories=None), max_size=6))
def test_any_string_field_yields_storable_rows_or_none(text: str) -> None:
    """Every text field, any code point (surrogates included): rows Arrow can store, or
    None; never an exception out of the loader's parse."""
    for field in ("request_id", "subject", "source", "model_version"):
        rows = usable_rows(parse_line, json.dumps({**GOOD, field: text}).encode())
        if rows is not None:
            pa.Table.from_pylist(rows, schema=row_fields())
    access = json.dumps(
        {"ts": "0001-01-01T00:00:00+01:00", "actor": text or "a", "action": "read",
         "subject": "s", "outcome": "ok"}
    ).encode()  # fmt: skip
    assert usable_rows(lambda b: [r] if (r := access_parse(b)) else None, access) is None
