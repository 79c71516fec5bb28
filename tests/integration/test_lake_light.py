"""delta-rs on the lake's own tables: what it writes Spark reads, and the other way round.

The light path (``jobs.lake_light``) writes the audit row and reads the trigger's facts
without a JVM; these tests hold it to the tables Spark creates and evolves, the retries
the audit relies on, and its refusals (an object-store lake, a missing table, a table
older than its declared columns), after which Spark takes over.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from jobs import lake_light, tables
from jobs.config import Settings
from jobs.ingest.steps import _write_audit, audit_row

pytestmark = pytest.mark.spark


def _row(run: str, status_lines: int = 5) -> dict[str, Any]:
    bronze = {"fingerprint": "f" * 64, "read_lines": status_lines, "bronze_rows": status_lines}
    silver = {
        "balanced": True,
        "bronze_rows": status_lines,
        "inserted": status_lines - 1,
        "quarantined": 1,
        "quarantined_by_reason": {"bad_json": 1, "événement_inconnu 🙃": 0},
        "silver_version": 3,
    }
    gold = {"versions": {"interactions": 7}, "quality": {"gold_ok": True}}
    interval = tables.Interval.parse("2026-11-01T00:00:00+00:00", "2026-11-01T01:00:00+00:00")
    return audit_row(interval, bronze, silver, gold, run)


def _audit(spark: Any, settings: Settings) -> list[Any]:
    frame = spark.read.format("delta").load(tables.path(settings, "ingest_audit"))
    return sorted(frame.collect(), key=lambda r: r["run_id"])


def test_a_delta_rs_audit_row_reads_back_in_spark_and_a_retry_replaces_it(
    spark: Any, tmp_path: Path
) -> None:
    settings = Settings(data_root=tmp_path / "var")
    assert lake_light.available(settings)
    row = _row("run-1")
    # No table yet: the light path declines and Spark creates it with its schema.
    assert lake_light.merge_rows(settings, "ingest_audit", [row], ("run_id", "batch_id")) is None
    _write_audit(settings, row)
    created = lake_light.version(settings, "ingest_audit")
    assert created >= 0

    # Now delta-rs writes: a second run, then a retry of it with other counts.
    assert lake_light.merge_rows(settings, "ingest_audit", [_row("run-2")], ("run_id", "batch_id"))
    _write_audit(settings, _row("run-2", status_lines=9))
    assert lake_light.version(settings, "ingest_audit") == created + 2

    rows = _audit(spark, settings)
    assert [r["run_id"] for r in rows] == ["run-1", "run-2"]
    retried = rows[1].asDict()
    assert retried["read_lines"] == 9 and retried["silver_inserted"] == 8
    assert retried["quarantined_by_reason"] == {"bad_json": 1, "événement_inconnu 🙃": 0}
    assert retried["gold_versions"] == {"interactions": 7}
    assert retried["quality"] == {"landing_complete": True, "gold_ok": True}
    # Naive UTC in, the same wall time out of Spark (whose session is UTC).
    assert retried["interval_start"] == datetime(2026, 11, 1, 0, 0)
    assert retried["started_at"] is None
    # The whole row as Spark wrote it for run-1 and as delta-rs wrote it for run-2 have the
    # same columns with the same kinds of values.
    first = rows[0].asDict()
    assert {k: type(v) for k, v in first.items()} == {k: type(v) for k, v in retried.items()}


def test_the_light_path_declines_what_only_spark_can_do(spark: Any, tmp_path: Path) -> None:
    on_s3 = Settings(data_root=tmp_path / "var", lake_dir="s3a://bucket/lake")
    assert not lake_light.available(on_s3)
    assert lake_light.merge_rows(on_s3, "ingest_audit", [_row("r")], ("run_id",)) is None
    switched_off = Settings(data_root=tmp_path / "var", light_delta=False)
    assert not lake_light.available(switched_off)

    # A table written by an older recflow, without a column declared since: Spark adds it.
    settings = Settings(data_root=tmp_path / "var")
    location = tables.path(settings, "ingest_audit")
    old_ddl = ", ".join(
        f"{n} {k}"
        for n, k in tables.ddl_fields(tables.TABLES["ingest_audit"].ddl)
        if n != "consent_withdrawn"
    )
    spark.createDataFrame([], old_ddl).write.format("delta").save(location)
    assert lake_light.merge_rows(settings, "ingest_audit", [_row("r")], ("run_id",)) is None
    _write_audit(settings, _row("r"))
    assert [r["consent_withdrawn"] for r in _audit(spark, settings)] == [0]


def test_a_process_that_read_through_delta_rs_exits_cleanly(spark: Any, tmp_path: Path) -> None:
    """A task process must exit 0: delta-rs's pyarrow-dataset reader aborts the
    interpreter at exit with this pyarrow (status 134), the DataFusion path must not."""
    settings = Settings(data_root=tmp_path / "var")
    _write_audit(settings, _row("run-1"))
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        "from jobs import lake_light\n"
        "from jobs.config import Settings\n"
        f"s = Settings(data_root={str(tmp_path / 'var')!r})\n"
        "t = lake_light.open_table(s, 'ingest_audit')\n"
        "print(lake_light.rows('SELECT count(*) AS n FROM a', a=t)[0]['n'])\n"
    )
    done = subprocess.run(
        [sys.executable, str(driver)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_the_late_data_and_catalog_checks_read_the_same_through_both_paths(
    spark: Any, tmp_path: Path
) -> None:
    """``reload_late`` and ``upsert_catalog`` decide from delta-rs reads when nothing is to
    be done (no JVM); what they read must be what Spark reads, and anything new must
    send them to Spark."""
    from jobs.ingest.steps import _catalog_unchanged, _finished, catalog_step, recent_batches
    from jobs.sources.shop import generate

    settings = Settings(
        data_root=tmp_path / "var",
        gen_users=120,
        gen_items=30,
        gen_days=1,
        late_data_hours=24,
        quality_enabled=False,  # the gates are not what this test is about
    )
    generate(settings, days=1)
    from jobs.ingest.steps import run_interval

    run_interval("2026-11-01T00:00:00+00:00", "2026-11-01T06:00:00+00:00", settings=settings)

    later = tables.Interval.parse("2026-11-01T06:00:00+00:00", "2026-11-01T07:00:00+00:00")
    light, heavy = recent_batches(None, settings, later), recent_batches(spark, settings, later)
    assert len(light) == 1 and light[0].files
    # Outside the late window (and before the first interval) neither finds anything.
    long_after = tables.Interval.parse("2026-11-03T00:00:00+00:00", "2026-11-03T01:00:00+00:00")
    assert recent_batches(None, settings, long_after) == recent_batches(spark, settings, long_after)
    assert not recent_batches(None, settings, long_after)
    assert [(b.interval, b.fingerprints, b.files) for b in light] == [
        (b.interval, b.fingerprints, b.files) for b in heavy
    ]
    ids = [b.interval.batch_id for b in light] + ["no-such-batch", "it's quoted"]
    assert _finished(None, settings, ids) == _finished(spark, settings, ids)
    assert len(_finished(None, settings, ids)) == 1

    # The catalog: unchanged says so without Spark, with what Spark's step would say.
    unchanged = _catalog_unchanged(settings)
    assert unchanged is not None and unchanged == catalog_step(settings=settings)
    # A catalog file whose content changed is news: the light check hands over to Spark.
    catalog = sorted(settings.catalog_dir.glob("dt=*/*.jsonl"))[0]
    catalog.write_bytes(catalog.read_bytes() + catalog.read_bytes().splitlines(True)[0])
    assert _catalog_unchanged(settings) is None
    applied = catalog_step(settings=settings)
    assert applied["files"] == 1
    assert _catalog_unchanged(settings) == {**applied, "files": 0, "applied": 0, "quarantined": 0}
