"""Retention of the service's answer log: old day folders and old rec_answers days go,
recent ones stay (RECFLOW_RETENTION_ANSWERS_DAYS)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs import tables
from jobs.answer_log import AnswerLog, answers_dir
from jobs.config import load_settings
from jobs.monitor.answers import load_answers
from jobs.privacy.retention import enforce

pytestmark = pytest.mark.spark

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


def test_old_answer_days_leave_files_and_table(spark: Any, tmp_path: Path) -> None:
    s = load_settings(data_root=tmp_path / "var", retention_answers_days=90)
    log = AnswerLog.open(s)
    old, recent = NOW - timedelta(days=91), NOW - timedelta(days=89)
    log.record("r1", "a" * 32, "1", "als", "treatment", ["i1", "i2"], ts=old)
    log.record("r2", "b" * 32, "1", "als", "control", ["i3"], ts=recent)
    log.close()
    assert load_answers(spark, s)["inserted"] == 3

    dry = enforce(s, NOW, dry_run=True, spark=spark)["answers"]
    assert dry.removed == [f"dt={old:%Y-%m-%d}", f"answers/dt={old:%Y-%m-%d}"]
    assert (answers_dir(s) / f"dt={old:%Y-%m-%d}").exists()  # a dry run removes nothing

    swept = enforce(s, NOW, spark=spark)["answers"]
    assert swept.detail["rows"] == 2 and swept.setting == "RECFLOW_RETENTION_ANSWERS_DAYS"
    days = sorted(p.name for p in answers_dir(s).iterdir() if not p.name.startswith("_"))
    assert days == [f"dt={recent:%Y-%m-%d}"]  # (_loaded: the loader's offsets)
    left = tables.read_or_create(spark, s, "rec_answers")
    assert [r["request_id"] for r in left.collect()] == ["r2"]
