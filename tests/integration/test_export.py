"""Batch metrics from a real lake, bucket and registry, pushed to a real Pushgateway.

The lake's tables are written here row by row (silver events, ingest_audit, and the
monitor tables of issue 15's other parts at the locations the issue gives them), so each
expected value is computed by hand from those rows, not by the code under test.
"""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import clustered_model, register_champion

from jobs import tables
from jobs.config import SecretUri, Settings, load_settings
from jobs.monitor import export, servers
from jobs.publish.steps import publish_all

pytestmark = [pytest.mark.integration, pytest.mark.spark]

NOW = datetime(2026, 11, 4, 12, 0, tzinfo=UTC).timestamp()
REC_PERFORMANCE_DDL = (
    "day DATE, model_version STRING, rec_source STRING, position_bucket STRING, "
    "impressions BIGINT, clicks BIGINT, add_to_carts BIGINT, purchases BIGINT, "
    "revenue DOUBLE, ctr DOUBLE, conversion DOUBLE, ab_group STRING"
)
DRIFT_DDL = (
    "run_id STRING, computed_at TIMESTAMP, metric STRING, statistic STRING, value DOUBLE, "
    "level STRING, model_version STRING"
)


def _naive(*args: int) -> datetime:
    """The lake stores naive UTC timestamps."""
    return datetime(*args)


def _epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def _append(spark: Any, location: str, rows: list[dict[str, Any]], ddl: str) -> None:
    spark.createDataFrame(rows, ddl).write.format("delta").mode("append").save(location)


def _audit(run: str, status: str, read: int, quarantined: int, finished: datetime) -> dict:
    return {
        "run_id": run,
        "batch_id": run,
        "status": status,
        "read_lines": read,
        "bronze_rows": read,
        "quarantined": quarantined,
        "finished_at": finished,
    }


@pytest.fixture(scope="module")
def lake(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    base = tmp_path_factory.mktemp("export")
    settings = load_settings(data_root=base / "var", quarantine_window_runs=2)
    events = tables.ensure_table(spark, settings, "events")
    _append(
        spark,
        events,
        [
            {
                "event_id": f"e{i}",
                "ts": ts,
                "event_date": ts.date(),
                "user_id": "u1",
                "item_id": "i1",
                "event_type": "view",
            }
            for i, ts in enumerate(
                [_naive(2026, 11, 2, 23, 59), _naive(2026, 11, 3, 10, 0), _naive(2026, 11, 3, 9)]
            )
        ],
        tables.TABLES["events"].ddl,
    )
    audit = tables.ensure_table(spark, settings, "ingest_audit")
    _append(
        spark,
        audit,
        [
            _audit("r1", "ok", 1000, 1, _naive(2026, 11, 3, 8, 5)),  # outside the window of 2
            _audit("r2", "ok", 200, 2, _naive(2026, 11, 3, 9, 5)),
            _audit("r3", "ok", 300, 3, _naive(2026, 11, 3, 10, 5)),
            _audit("r4", "ok", 100, 10, _naive(2026, 11, 3, 11, 5)),  # the last run
            _audit("r5", "unchanged", 0, 0, _naive(2026, 11, 3, 12, 5)),  # the last success
            _audit("r6", "unbalanced", 50, 40, _naive(2026, 11, 3, 13, 5)),  # failed
        ],
        tables.TABLES["ingest_audit"].ddl,
    )
    perf = [
        # (day, version, source, bucket, impressions, clicks, purchases, revenue, group)
        (date(2026, 11, 2), "1", "cdn", "1-3", 999, 999, 999, 1.0, "treatment"),  # older day
        # A row from before the group column (NULL) counts as it did.
        (date(2026, 11, 3), "1", "cdn", "1-3", 100, 10, 2, 20.0, None),
        (date(2026, 11, 3), "2", "cdn", "4-10", 300, 20, 2, 30.0, "treatment"),
        (date(2026, 11, 3), "2", "service", "1-3", 50, 5, 0, 0.0, "treatment"),
        (date(2026, 11, 3), None, "organic", "1-3", 1000, 20, 3, 45.0, "treatment"),
        # The control group is served popularity under the same source: never exported.
        (date(2026, 11, 3), "2", "cdn", "1-3", 5000, 1, 0, 0.0, "control"),
        # Today at NOW, still being attributed: not a complete day, never exported.
        (date(2026, 11, 4), "2", "cdn", "1-3", 10, 0, 0, 0.0, "treatment"),
    ]
    _append(
        spark,
        export.table_location(settings, export.REC_PERFORMANCE),
        [
            {
                "day": d,
                "model_version": v,
                "rec_source": s,
                "position_bucket": b,
                "impressions": n,
                "clicks": c,
                "add_to_carts": c,
                "purchases": p,
                "revenue": r,
                "ctr": c / n,
                "conversion": p / n,
                "ab_group": g,
            }
            for d, v, s, b, n, c, p, r, g in perf
        ],
        REC_PERFORMANCE_DDL,
    )
    drift = [
        ("old", _naive(2026, 11, 2, 6), "user_activity", "psi", 0.5, "alert"),
        ("new", _naive(2026, 11, 3, 6), "user_activity", "psi", 0.05, "ok"),
        ("new", _naive(2026, 11, 3, 6), "category_mix", "ks", 0.3, "alert"),
    ]
    _append(
        spark,
        export.table_location(settings, export.DRIFT),
        [
            {
                "run_id": r,
                "computed_at": t,
                "metric": m,
                "statistic": s,
                "value": v,
                "level": lv,
                "model_version": "2",
            }
            for r, t, m, s, v, lv in drift
        ],
        DRIFT_DDL,
    )
    register_champion(settings, clustered_model(), base / "work")
    publish_all(settings, generated_at=datetime(2026, 11, 3, 6, tzinfo=UTC), in_stock=None)
    return settings


def test_collect_computes_each_figure_from_its_source(spark: Any, lake: Settings) -> None:
    collected = export.collect(lake, spark, now=NOW)
    ingest = export.collect_ingest(lake, spark, now=NOW)
    got = collected.values() | ingest.values()
    assert collected.skipped == {} and ingest.skipped == {}
    assert {s.name for s in collected.samples + ingest.samples} == export.BATCH_METRIC_NAMES
    # Each group holds its own figures only.
    assert not any(s.name.startswith("recflow_ingest") for s in collected.samples)

    newest = _epoch(2026, 11, 3, 10, 0)
    assert got["recflow_silver_newest_event_timestamp_seconds"] == newest
    assert got['recflow_ingest_lag_seconds{reference="newest_event"}'] == NOW - newest
    # The unchanged run is a success; the unbalanced one after it is not.
    success = _epoch(2026, 11, 3, 12, 5)
    assert got["recflow_ingest_last_success_timestamp_seconds"] == success
    assert got['recflow_ingest_lag_seconds{reference="last_ingest"}'] == NOW - success
    # No previous push known: the newest run that read lines stands for "since".
    assert got['recflow_ingest_quarantine_ratio{window="since_last_push"}'] == pytest.approx(0.1)
    assert got['recflow_ingest_quarantine_ratio{window="baseline"}'] == pytest.approx(5 / 500)

    # The local bucket stores objects as served: gzip-encoded JSON.
    pointer = json.loads(gzip.decompress((lake.publish_dir / "recs" / "latest.json").read_bytes()))
    assert pointer["generated_at"].startswith("2026-11-03T06:00:00")
    assert got["recflow_publish_timestamp_seconds"] == _epoch(2026, 11, 3, 6)

    from mlflow import MlflowClient

    champion = MlflowClient(lake.tracking_uri, lake.tracking_uri).get_model_version_by_alias(
        lake.model_name, "champion"
    )
    created = champion.creation_timestamp / 1000
    assert got["recflow_model_promoted_timestamp_seconds"] == pytest.approx(created)
    info = f'recflow_champion_info{{model_version="{champion.version}",run_id="{champion.run_id}"}}'
    assert got[info] == 1

    # The newest day only, all model versions and position buckets summed per source.
    assert got["recflow_rec_day_timestamp_seconds"] == _epoch(2026, 11, 3)
    assert got['recflow_rec_impressions{rec_source="cdn"}'] == 400
    assert got['recflow_rec_ctr{rec_source="cdn"}'] == pytest.approx(30 / 400)
    assert got['recflow_rec_conversion{rec_source="cdn"}'] == pytest.approx(4 / 400)
    assert got['recflow_rec_revenue{rec_source="cdn"}'] == pytest.approx(50.0)
    assert got['recflow_rec_ctr{rec_source="organic"}'] == pytest.approx(0.02)
    assert got['recflow_rec_ctr{rec_source="service"}'] == pytest.approx(0.1)

    # The newest drift run only: the old run's alert-level PSI is not reported.
    drift = {k: v for k, v in got.items() if k.startswith("recflow_drift_")}
    assert drift == {
        "recflow_drift_timestamp_seconds": _epoch(2026, 11, 3, 6),
        'recflow_drift_value{metric="user_activity",statistic="psi"}': 0.05,
        'recflow_drift_alert{metric="user_activity",statistic="psi"}': 0.0,
        'recflow_drift_value{metric="category_mix",statistic="ks"}': 0.3,
        'recflow_drift_alert{metric="category_mix",statistic="ks"}': 1.0,
    }


def test_missing_sources_are_skipped_with_a_reason(spark: Any, tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var")
    collected = export.collect(settings, spark, now=NOW)
    assert set(export.collect_ingest(settings, spark, now=NOW).skipped) == {
        "silver_events",
        "ingest_audit",
    }
    assert set(collected.skipped) == {
        "publish",
        "training",
        export.REC_PERFORMANCE,
        export.DRIFT,
    }
    assert "not there yet" in collected.skipped[export.DRIFT]
    assert [s.name for s in collected.samples] == ["recflow_export_timestamp_seconds"]
    # Nothing was created by looking.
    from delta.tables import DeltaTable

    assert not DeltaTable.isDeltaTable(spark, export.table_location(settings, export.DRIFT))
    # Nor an MLflow store or experiment: the export only reads the registry.
    assert "no MLflow store" in collected.skipped["training"]
    assert not list(settings.data_root.rglob("*.db"))


def test_export_step_without_a_gateway_says_it_did_not_push(spark: Any, tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var")
    result = export.export_step(settings, now=NOW)
    assert result["pushed_to"] == "not pushed: RECFLOW_PUSHGATEWAY_URL is unset"
    assert result["metrics"] == 1


@pytest.mark.skipif(
    servers.shutil.which("prometheus-pushgateway") is None,
    reason="Pushgateway not installed (`make monitoring-deps`)",
)
def test_push_replaces_the_group(spark: Any, lake: Settings, tmp_path: Path) -> None:
    """A rerun leaves exactly its own figures: a gauge whose source went away is gone."""
    gateway = servers.start_pushgateway(lake, tmp_path / "pushgateway")
    try:
        settings = lake.model_copy(update={"pushgateway_url": gateway.url})
        first = export.export_step(settings, now=NOW)
        assert first["pushed_to"] == gateway.url
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        assert 'recflow_rec_ctr{instance="",job="recflow_batch",rec_source="cdn"} 0.075' in text
        assert "recflow_drift_value{" in text

        fewer = export.Collected()
        fewer.add("recflow_export_timestamp_seconds", "export", time.time())
        export.push(settings, fewer.samples)
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        assert "recflow_export_timestamp_seconds{" in text
        assert "recflow_rec_ctr{" not in text and "recflow_drift_value{" not in text
    finally:
        gateway.stop()


needs_gateway = pytest.mark.skipif(
    servers.shutil.which("prometheus-pushgateway") is None,
    reason="Pushgateway not installed (`make monitoring-deps`)",
)


def _small_audit(spark: Any, settings: Settings, runs: list[tuple[int, int, int]]) -> None:
    """Audit rows ``(hour, read, quarantined)`` of 2026-11-03, as ingest writes them."""
    location = tables.ensure_table(spark, settings, "ingest_audit")
    rows = [_audit(f"h{h}", "ok", n, q, _naive(2026, 11, 3, h)) for h, n, q in runs]
    _append(spark, location, rows, tables.TABLES["ingest_audit"].ddl)


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and 'group="ingest"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the ingest group")


@needs_gateway
def test_ingest_push_reports_a_spike_in_any_run_since_the_previous_push(
    spark: Any, tmp_path: Path
) -> None:
    """Hourly pushes, one of which failed: the spike of the run whose push was lost is in
    the next push even though a clean run came after it."""
    gateway = servers.start_pushgateway(load_settings(), tmp_path / "gw")
    try:
        settings = load_settings(
            data_root=tmp_path / "var", quarantine_window_runs=5, pushgateway_url=gateway.url
        )
        _small_audit(spark, settings, [(7, 100, 1), (8, 100, 1)])
        first = export.ingest_push_step(settings, now=NOW)
        assert first["pushed_to"] == gateway.url
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        assert _gauge(text, "recflow_ingest_quarantine_ratio") == pytest.approx(0.01)
        assert _gauge(text, export.COVERED_UNTIL) == _epoch(2026, 11, 3, 8)

        # 9:00 spikes (its push lost), 10:00 is clean; the 10:00 push covers both.
        _small_audit(spark, settings, [(9, 100, 20), (10, 200, 2)])
        second = export.ingest_push_step(settings, now=NOW)
        assert second["pushed_to"] == gateway.url
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        since = 'recflow_ingest_quarantine_ratio{group="ingest",instance="",job="recflow_batch",'
        assert f'{since}window="since_last_push"}} 0.2' in text
        assert f'{since}window="baseline"}} 0.01' in text  # 7:00 and 8:00: 2 of 200
        assert _gauge(text, export.COVERED_UNTIL) == _epoch(2026, 11, 3, 10)

        # The monitor's export replaces its own group only: the ingest group stays.
        export.push(settings, export.Collected().samples)
        assert 'group="ingest"' in httpx.get(f"{gateway.url}/metrics", timeout=10).text
    finally:
        gateway.stop()


def test_ingest_push_with_the_gateway_down_does_not_fail_the_run(
    spark: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"http://127.0.0.1:{servers.free_port()}"
    settings = load_settings(data_root=tmp_path / "var", pushgateway_url=down)
    _small_audit(spark, settings, [(7, 100, 1)])
    result = export.ingest_push_step(settings, now=NOW)
    assert result["pushed_to"].startswith(f"not pushed: Pushgateway at {down} unreachable")
    assert "the ingest run itself succeeded" in caplog.text


@needs_gateway
def test_a_registry_outage_fails_the_export_after_pushing_the_rest(
    spark: Any, lake: Settings, tmp_path: Path
) -> None:
    """Not "no champion": the lake's figures are pushed, then the task fails naming it."""
    broken = tmp_path / "mlflow.db"
    broken.write_bytes(b"this is not an SQLite database" * 100)
    gateway = servers.start_pushgateway(lake, tmp_path / "gw")
    try:
        settings = lake.model_copy(
            update={
                "pushgateway_url": gateway.url,
                "mlflow_tracking_uri": SecretUri(f"sqlite:///{broken}"),
            }
        )
        with pytest.raises(export.ExportIncompleteError, match="training: registry unreadable"):
            export.export_step(settings, now=NOW)
        text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
        assert "recflow_rec_ctr{" in text and "recflow_export_timestamp_seconds{" in text
        assert "recflow_model_promoted_timestamp_seconds{" not in text
    finally:
        gateway.stop()
