"""The data access log into Delta: complete lines only, each once, queryable by subject.

The files are written by the real writer (``jobs.access_log``) and read back
independently (line counts, byte offsets) to check what the loader put in the table.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jobs import tables
from jobs.access_log import AccessLog, access_log_dir
from jobs.cli import app
from jobs.config import Settings, load_settings
from jobs.linelog_load import marker_path
from jobs.privacy.access import TABLE, load_access_log, read_access_log
from jobs.subjects import subject_hasher

pytestmark = pytest.mark.spark

DAY = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.fixture
def local(tmp_path: Path, spark: Any) -> Settings:
    """A data root of this test's own (the session's Spark, its own tables)."""
    return load_settings(data_root=tmp_path / "var", spark_shuffle_partitions=2)


def _rows(spark: Any, settings: Settings) -> list[dict[str, Any]]:
    df = tables.read_or_create(spark, settings, TABLE)
    return [r.asDict() for r in df.orderBy("_source_file", "_offset").collect()]


def test_loads_complete_lines_once_and_waits_for_a_partial_one(spark: Any, local: Settings) -> None:
    folder = access_log_dir(local)
    a = AccessLog(folder)
    for i in range(3):
        a.record("service:7", "recommend_personal", f"{i:032x}", "served", f"r{i}", DAY)
    a.record("service:7", "recent_items", f"{9:032x}", "empty", "r9", DAY + timedelta(days=1))
    a.close()
    b = AccessLog(folder)  # another process: its own file
    b.record("cli:ann", "cli_recs", f"{5:032x}", "served", None, DAY)
    b.close()
    day1 = sorted((folder / "dt=2026-11-29").glob("*.jsonl"))
    assert len(day1) == 2
    # A process is half-way through its fourth line.
    whole = (
        b'{"ts":"2026-11-29T11:00:00.000000Z","actor":"service:7","action":"recommend_personal",'
        b'"subject":"' + b"f" * 32 + b'","outcome":"served","request_id":"r4"}\n'
    )
    target = next(p for p in day1 if p.read_bytes().count(b"\n") == 3)
    with target.open("ab") as out:
        out.write(whole[:50])

    first = load_access_log(spark, local)
    assert first["files"] == 3 and first["inserted"] == 5 and first["bad_lines"] == 0
    rows = _rows(spark, local)
    assert len(rows) == 5 and "r4" not in {r["request_id"] for r in rows}
    # Offsets are the lines' real places in the files.
    for row in rows:
        data = (folder / row["_source_file"]).read_bytes()
        assert data[row["_end"] - 1 : row["_end"]] == b"\n"
        assert row["subject"].encode() in data[row["_offset"] : row["_end"]]
    assert {str(r["dt"]) for r in rows} == {"2026-11-29", "2026-11-30"}

    again = load_access_log(spark, local)
    assert again["inserted"] == 0 and again["new_lines"] == 0 and len(_rows(spark, local)) == 5

    # The line is finished, and a broken line follows (never guessed at, never loaded).
    with target.open("ab") as out:
        out.write(whole[50:])
        out.write(b"not json\n")
    third = load_access_log(spark, local)
    assert third["inserted"] == 1 and third["bad_lines"] == 1
    rows = _rows(spark, local)
    assert len(rows) == 6 and sum(r["request_id"] == "r4" for r in rows) == 1
    assert load_access_log(spark, local)["inserted"] == 0


def test_a_reload_from_the_start_adds_nothing(spark: Any, local: Settings) -> None:
    """Two loads racing (or a lost offset) read the same lines: the MERGE key drops them."""
    log = AccessLog(access_log_dir(local))
    log.record("service:7", "recommend_personal", "a" * 32, "served", "r1", DAY)
    log.close()
    assert load_access_log(spark, local)["inserted"] == 1
    import jobs.privacy.access as access

    marker_path(access_log_dir(local), TABLE).unlink()  # the loader's marker lost too
    original = access.loaded_offsets
    try:
        access.loaded_offsets = lambda *_: {}  # type: ignore[assignment]
        replay = load_access_log(spark, local)
    finally:
        access.loaded_offsets = original
    assert replay["new_lines"] == 1 and replay["inserted"] == 0
    assert len(_rows(spark, local)) == 1


def test_query_by_subject_and_time_and_the_cli(
    spark: Any, local: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = subject_hasher(local)
    log = AccessLog(access_log_dir(local))
    log.record("service:7", "recommend_personal", hasher("user-1"), "served", "r1", DAY)
    log.record("service:7", "recommend_personal", hasher("user-2"), "served", "r2", DAY)
    log.record("cli:ann", "cli_recs", hasher("user-1"), "served", None, DAY + timedelta(hours=2))
    log.close()
    load_access_log(spark, local)
    mine = read_access_log(spark, local, subject=hasher("user-1"))
    assert [r["actor"] for r in mine] == ["cli:ann", "service:7"]  # newest first
    later = read_access_log(spark, local, since=DAY + timedelta(hours=1))
    assert [r["request_id"] for r in later] == [None]

    monkeypatch.setenv("RECFLOW_DATA_ROOT", str(local.data_root))
    result = CliRunner().invoke(app, ["access-log", "--user-id", "user-1"])
    assert result.exit_code == 0, result.output
    assert hasher("user-1") in result.stdout and "user-1 " not in result.stdout
    assert result.stdout.count("\n") == 2 and "cli_recs" in result.stdout
    both = CliRunner().invoke(app, ["access-log", "--user-id", "u", "--subject", "x"])
    assert both.exit_code == 2
