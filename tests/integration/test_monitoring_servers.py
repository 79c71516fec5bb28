"""Prometheus and the Pushgateway as the project starts them: on 127.0.0.1, by PID.

Prometheus must load recflow's rules and scrape both targets it was rendered with; stopping
it ends the process; `recflow up`'s helper reports a missing binary instead of failing.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from support import free_port

from jobs.cli import _start_monitoring
from jobs.config import load_settings
from jobs.monitor import servers

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(servers.shutil.which(b) is None for b in ("prometheus", "prometheus-pushgateway")),
        reason="Prometheus/Pushgateway not installed (`make monitoring-deps`)",
    ),
]


def test_prometheus_loads_the_rules_and_scrapes_both_targets(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var")
    gateway = servers.start_pushgateway(settings, tmp_path / "pushgateway")
    # Nothing listens there: the target must show as down, not vanish.
    service = f"127.0.0.1:{free_port()}"
    prometheus = servers.start_prometheus(
        settings,
        tmp_path / "prometheus",
        service_target=service,
        pushgateway_target=gateway.url.removeprefix("http://"),
        scrape_interval="1s",
    )
    try:
        client = httpx.Client(base_url=prometheus.url, timeout=10)
        rules = client.get("/api/v1/rules").json()["data"]["groups"]
        alerts = {r["name"] for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert {"RecflowServiceLatencyP99High", "RecflowDriftHigh"} <= alerts
        deadline = time.monotonic() + 30
        while True:
            targets = client.get("/api/v1/targets").json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            # Discovered, then scraped once: until then a target is missing or "unknown".
            scraped = len(health) == 2 and "unknown" not in health.values()
            if scraped or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert health == {"recflow_service": "down", "recflow_pushgateway": "up"}
        assert {t["scrapeUrl"] for t in targets} == {
            f"http://{service}/metrics",
            f"{gateway.url}/metrics",
        }
    finally:
        prometheus.stop()
        gateway.stop()
    assert prometheus.proc.poll() is not None and gateway.proc.poll() is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{prometheus.url}/-/ready", timeout=2)


def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var", prometheus_binary="no-such-prometheus")
    with pytest.raises(servers.MissingBinaryError, match="no-such-prometheus"):
        servers.start_prometheus(settings, tmp_path / "p", "127.0.0.1:1", "127.0.0.1:2")


def test_up_reports_missing_monitoring_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(data_root=tmp_path / "var", pushgateway_binary="no-such-gateway")
    assert _start_monitoring(settings) == []
    assert "prometheus:     not started" in capsys.readouterr().err


def test_up_starts_prometheus_scraping_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(data_root=tmp_path / "var", prometheus_port=0, serve_port=3999)
    started = _start_monitoring(settings)
    try:
        assert [s.name for s in started] == ["pushgateway", "prometheus"]
        out = capsys.readouterr().out
        assert f"prometheus:     {started[1].url}" in out
        config = (settings.data_root / "prometheus" / "prometheus.yml").read_text()
        assert '"127.0.0.1:3999"' in config
    finally:
        for server in reversed(started):
            server.stop()
    assert all(s.proc.poll() is not None for s in started)
