"""Prometheus and the Pushgateway as the project starts them: on 127.0.0.1, by PID.

Prometheus must load recflow's rules and scrape both targets it was rendered with; stopping
it ends the process; `recflow up`'s helper reports a missing binary instead of failing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support import free_port

from jobs.cli import _start_monitoring, _stop_all, _stop_process
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
    settings = load_settings(
        data_root=tmp_path / "var", pushgateway_binary="no-such-gateway", pushgateway_port=0
    )
    assert _start_monitoring(settings) == []
    assert "prometheus:     not started" in capsys.readouterr().err


def test_up_starts_prometheus_scraping_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(
        data_root=tmp_path / "var", prometheus_port=0, pushgateway_port=0, serve_port=3999
    )
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


def _children(marker: str) -> list[str]:
    """Child processes of this test whose command line holds ``marker``, or unreaped ones.

    A zombie's command line is gone (``[sleep] <defunct>``), so one that was killed but
    never waited for is matched by its state instead.
    """
    ps = subprocess.run(
        ["ps", "-o", "stat=,args=", "--ppid", str(os.getpid())],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in ps.splitlines() if marker in line or line.startswith("Z")]


def test_up_leaves_no_server_when_prometheus_cannot_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reviewer's case: no prometheus.yml where the settings point. The Pushgateway that
    had already started is stopped, and the error names the setting instead of escaping."""
    settings = load_settings(
        data_root=tmp_path / "var",
        monitoring_config_dir=tmp_path / "nowhere",
        prometheus_port=0,
        pushgateway_port=0,
    )
    assert _start_monitoring(settings) == []
    assert "RECFLOW_MONITORING_CONFIG_DIR" in capsys.readouterr().err
    assert _children(str(tmp_path)) == []


def test_a_gateway_started_by_up_keeps_its_groups_across_a_restart(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var")
    port = free_port()
    store = tmp_path / "gw" / "metrics.db"
    first = servers.start_pushgateway(settings, tmp_path / "gw", port=port, persistence=store)
    try:
        pushed = httpx.put(f"{first.url}/metrics/job/recflow_batch", content=b"recflow_x 7\n")
        assert pushed.status_code == 200
    finally:
        first.stop()  # SIGTERM: the Pushgateway writes its file before exiting
    second = servers.start_pushgateway(settings, tmp_path / "gw", port=port, persistence=store)
    try:
        assert second.url == first.url  # the printed RECFLOW_PUSHGATEWAY_URL still holds
        assert (
            'recflow_x{instance="",job="recflow_batch"} 7'
            in httpx.get(f"{second.url}/metrics").text
        )
    finally:
        second.stop()


def test_a_server_that_never_gets_ready_is_killed_and_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "READY_TIMEOUT", 0.5)
    marker = "61.25"  # a sleep that never answers /-/ready
    # Holding the traceback keeps the Popen alive, as `up` would: once collected, Python
    # reaps a forgotten child by itself at the next Popen, which would hide the zombie.
    with pytest.raises(TimeoutError) as caught:
        servers._start("never", ["sleep", marker], f"http://127.0.0.1:{free_port()}", tmp_path)
    assert _children(marker) == []  # neither running nor a zombie
    assert caught.value


def test_ctrl_c_while_waiting_for_readiness_ends_the_half_started_server(
    tmp_path: Path,
) -> None:
    marker = "62.25"

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            servers._start("never", ["sleep", marker], f"http://127.0.0.1:{free_port()}", tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert _children(marker) == []


def test_stopping_goes_on_past_a_step_that_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    """`up`'s cleanup: a service that ignores SIGTERM is killed and reaped, and a step that
    raises (here TimeoutExpired) does not keep the later ones from running."""
    stubborn = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 63.25"])
    time.sleep(0.2)  # let bash install its trap before the SIGTERM
    ran: list[str] = []

    def times_out() -> None:
        raise subprocess.TimeoutExpired("bentoml", 30)

    _stop_all(
        [
            ("service", times_out),
            ("stubborn", lambda: _stop_process(stubborn, timeout=0.5)),
            ("cdn", lambda: ran.append("cdn")),
        ]
    )
    assert ran == ["cdn"]
    assert stubborn.returncode == -signal.SIGKILL
    assert "stopping service failed" in capsys.readouterr().err
