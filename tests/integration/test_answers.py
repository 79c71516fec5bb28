"""The service's answer log loaded into monitor/rec_answers (jobs.monitor.answers):
complete lines once, one row per item, a partial line left for later, reruns idempotent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs import tables
from jobs.answer_log import AnswerLog, answers_dir
from jobs.config import Settings, load_settings
from jobs.linelog_load import marker_path
from jobs.monitor.answers import TABLE, answers_step, load_answers

pytestmark = pytest.mark.spark

DAY = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


@pytest.fixture
def local(tmp_path: Path) -> Settings:
    return load_settings(data_root=tmp_path / "var", spark_shuffle_partitions=2)


def _rows(spark: Any, settings: Settings) -> list[dict[str, Any]]:
    df = tables.read_or_create(spark, settings, TABLE)
    return [r.asDict() for r in df.orderBy("_source_file", "_offset", "rank").collect()]


def test_loads_each_item_once_and_waits_for_a_partial_line(spark: Any, local: Settings) -> None:
    folder = answers_dir(local)
    a = AnswerLog(folder)
    a.record("r1", "a" * 32, "7", "als", "treatment", ["i1", "i2", "i3"], DAY)
    a.record("r2", "b" * 32, "7", "popular", "control", ["i9", "i1"], DAY + timedelta(days=1))
    a.record("r3", "c" * 32, "7", "popular", "treatment", [], DAY)  # nothing in stock
    a.close()
    b = AnswerLog(folder)  # another process: its own file
    b.record("r4", "d" * 32, "8", "fold_in", "treatment", ["i4"], DAY)
    b.close()
    partial = folder / "dt=2026-11-29" / "zz-other.jsonl"
    partial.write_bytes(b'{"ts": "2026-11-29T06:00:00Z", "request_id": "half')
    (folder / "dt=2026-11-29" / "zz-bad.jsonl").write_bytes(b"not json\n")

    first = answers_step(local, spark=spark)
    assert (first["inserted"], first["bad_lines"], first["new_lines"]) == (6, 1, 4)
    rows = _rows(spark, local)
    got = sorted((r["request_id"], r["item_id"], r["rank"], r["ab_group"]) for r in rows)
    assert got == [
        ("r1", "i1", 1, "treatment"),
        ("r1", "i2", 2, "treatment"),
        ("r1", "i3", 3, "treatment"),
        ("r2", "i1", 2, "control"),
        ("r2", "i9", 1, "control"),
        ("r4", "i4", 1, "treatment"),
    ]
    assert {r["dt"].isoformat() for r in rows} == {"2026-11-29", "2026-11-30"}
    assert {r["subject"] for r in rows} == {"a" * 32, "b" * 32, "d" * 32}
    assert all(r["ts"].replace(tzinfo=UTC) >= DAY for r in rows)

    # A rerun adds nothing; the partial line, once finished, is loaded exactly once.
    assert load_answers(spark, local)["inserted"] == 0
    with partial.open("ab") as f:
        f.write(
            b'", "subject": "' + b"e" * 32 + b'", "model_version": null, "source": "popular", '
            b'"group": "treatment", "items": [{"item_id": "i5", "rank": 1}]}\n'
        )
    assert load_answers(spark, local)["inserted"] == 1
    assert load_answers(spark, local)["inserted"] == 0
    rows = _rows(spark, local)
    assert len(rows) == 7 and sum(r["request_id"] == "half" for r in rows) == 1


def test_a_reload_from_the_start_adds_nothing(spark: Any, local: Settings) -> None:
    """Two loads racing (or a lost offset) read the same lines: the MERGE key drops them."""
    import jobs.monitor.answers as answers

    log = AnswerLog(answers_dir(local))
    log.record("r1", "a" * 32, "7", "als", "treatment", ["i1", "i2"], DAY)
    log.close()
    assert load_answers(spark, local)["inserted"] == 2
    original = answers.loaded_offsets
    marker_path(answers_dir(local), TABLE).unlink()  # the loader's own marker lost too
    try:
        answers.loaded_offsets = lambda *_: {}  # type: ignore[assignment]
        replay = load_answers(spark, local)
    finally:
        answers.loaded_offsets = original
    assert replay["new_lines"] == 1 and replay["inserted"] == 0
    assert len(_rows(spark, local)) == 2


def test_rowless_lines_at_a_files_end_are_read_once(spark: Any, local: Settings) -> None:
    """A bad line and an answer without items give no row, so the table's offsets stop
    before them: the loader's marker keeps them from being re-read and re-counted."""
    log = AnswerLog(answers_dir(local))
    log.record("r1", "a" * 32, "7", "als", "treatment", ["i1"], DAY)
    log.record("r2", "b" * 32, "7", "popular", "treatment", [], DAY)  # no row
    log.close()
    (path,) = answers_dir(local).glob("dt=*/*.jsonl")
    with path.open("ab") as f:
        f.write(b"not json\n")
    first = load_answers(spark, local)
    assert (first["inserted"], first["new_lines"], first["bad_lines"]) == (1, 2, 1)
    again = load_answers(spark, local)  # before the marker: (0, 1, 1) on every load
    assert (again["inserted"], again["new_lines"], again["bad_lines"]) == (0, 0, 0)
    # The file grows after them: only the new line is read.
    log = AnswerLog(answers_dir(local))
    log._name = path.name  # the same process's file (its name is per process and start)
    log.record("r3", "c" * 32, "7", "als", "control", ["i2"], DAY)
    log.close()
    third = load_answers(spark, local)
    assert (third["inserted"], third["new_lines"], third["bad_lines"]) == (1, 1, 0)


def test_a_person_erased_during_a_load_is_not_left_behind(
    spark: Any, local: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure lands between the load's read of the deny list and its MERGE: it
    deleted nothing (nothing was loaded yet) and is done, so the load must drop them."""
    from jobs import subjects
    from jobs.monitor import answers

    log = AnswerLog(answers_dir(local))
    log.record("r1", "a" * 32, "7", "als", "treatment", ["i1", "i2"], DAY)
    log.record("r2", "b" * 32, "7", "als", "treatment", ["i3"], DAY)
    log.close()
    real = answers.loaded_offsets

    def erasure_lands_now(*args: Any) -> dict[str, int]:
        subjects.add_to_deny_list(subjects.deny_list_path(local), ["a" * 32])
        return real(*args)

    monkeypatch.setattr(answers, "loaded_offsets", erasure_lands_now)
    load_answers(spark, local)
    assert {r["subject"] for r in _rows(spark, local)} == {"b" * 32}
    # A load died right after its MERGE while an erasure of "b" ran: the erasure found
    # no rows, and the next load resumes past b's lines. It still drops b's rows.
    monkeypatch.setattr(answers, "loaded_offsets", real)
    subjects.add_to_deny_list(subjects.deny_list_path(local), ["b" * 32])
    assert load_answers(spark, local)["new_lines"] == 0
    assert _rows(spark, local) == []
