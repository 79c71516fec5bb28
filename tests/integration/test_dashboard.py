"""The dashboard against real servers: a served Bento, a Pushgateway and Prometheus.

Prometheus (scraping every second, with recflow's rules) scrapes the Bento of
``test_bento``'s ``world`` fixture and a Pushgateway to which the batch metrics are pushed
through ``jobs.monitor.export.push``: the publish and training figures as ``export``
computes them from the world's real bucket and registry, the lake's figures (which need
Spark tables the other integration tests cover) as fixed values under the names
``export`` pushes. After a few requests, every query of every panel of
``infra/monitoring/grafana/dashboards/recflow.json`` is run through Prometheus's HTTP API
and must return at least one series.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_bento import world  # noqa: F401  (the served Bento, reused as a fixture)

from jobs import subjects
from jobs.monitor import export, servers
from jobs.monitor.export import Collected

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(servers.shutil.which(b) is None for b in ("prometheus", "prometheus-pushgateway")),
        reason="Prometheus/Pushgateway not installed (`make monitoring-deps`)",
    ),
]

MONITORING = Path(__file__).resolve().parents[2] / "infra" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "recflow.json"
RULES = MONITORING / "rules" / "recflow.rules.yml"
SERIES_TIMEOUT = 60.0


def _ingest_figures(now: float) -> Collected:
    """What the ingest DAG pushes to its own group, as fixed values (same names, labels)."""
    out = Collected()
    out.add("recflow_silver_newest_event_timestamp_seconds", "newest event", now - 600)
    out.add("recflow_ingest_last_success_timestamp_seconds", "last ingest", now - 300)
    out.add("recflow_ingest_lag_seconds", "lag", 600, reference="newest_event")
    out.add("recflow_ingest_lag_seconds", "lag", 300, reference="last_ingest")
    out.add("recflow_ingest_quarantine_ratio", "quarantine", 0.01, window="since_last_push")
    out.add("recflow_ingest_quarantine_ratio", "quarantine", 0.012, window="baseline")
    out.add(export.COVERED_UNTIL, "covered", now - 300)
    return out


def _lake_figures(now: float, out: Collected) -> None:
    """What ``export`` pushes from the lake's tables, as fixed values (same names, labels)."""
    out.add("recflow_rec_day_timestamp_seconds", "day", now - now % 86400 - 86400)
    for source, shown, clicks, bought in (
        ("cdn", 1000, 60, 6),
        ("service", 400, 20, 1),
        ("organic", 3000, 90, 5),
    ):
        for name, value in (
            ("impressions", shown),
            ("clicks", clicks),
            ("purchases", bought),
            ("revenue", bought * 19.5),
            ("ctr", clicks / shown),
            ("conversion", bought / shown),
        ):
            out.add(f"recflow_rec_{name}", name, value, rec_source=source)
    out.add("recflow_drift_timestamp_seconds", "drift run", now - 3600)
    for metric, psi, ks in (("user_activity", 0.05, 0.04), ("category_mix", 0.3, 0.2)):
        out.add("recflow_drift_value", "drift", psi, metric=metric, statistic="psi")
        out.add("recflow_drift_value", "drift", ks, metric=metric, statistic="ks")
        out.add("recflow_drift_alert", "alert", float(psi > 0.2), metric=metric, statistic="psi")
    out.add("recflow_export_timestamp_seconds", "export", now)


@pytest.fixture(scope="module")
def monitoring(
    world: dict[str, Any],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    settings = world["settings"]
    workdir = tmp_path_factory.mktemp("monitoring")
    gateway = servers.start_pushgateway(settings, workdir / "pushgateway")
    try:
        now = time.time()
        collected = Collected()
        # From the world's real bucket and MLflow registry, as the monitor DAG computes them.
        export.publish_metrics(settings, now, collected)
        export.training_metrics(settings, now, collected)
        assert not collected.skipped, collected.skipped
        _lake_figures(now, collected)
        ingest = _ingest_figures(now)
        pushed_names = {s.name for s in collected.samples + ingest.samples}
        assert pushed_names == export.BATCH_METRIC_NAMES
        assert export.push(settings, collected.samples, gateway.url) == gateway.url
        pushed = export.push(settings, ingest.samples, gateway.url, export.INGEST_GROUP)
        assert pushed == gateway.url

        service = httpx.URL(str(world["client"].base_url))
        prometheus = servers.start_prometheus(
            settings,
            workdir / "prometheus",
            service_target=f"{service.host}:{service.port}",
            pushgateway_target=gateway.url.removeprefix("http://"),
            scrape_interval="1s",
        )
        try:
            yield {
                "world": world,
                "prometheus": httpx.Client(base_url=prometheus.url, timeout=10),
                "collected": collected,
            }
        finally:
            prometheus.stop()
    finally:
        gateway.stop()


def _drive_requests(served: dict[str, Any]) -> None:
    """Every answer source, an invalid request (422) and an unknown item (404)."""
    client: httpx.Client = served["client"]
    key = subjects.user_key(served["settings"].hmac_secret(), "user-1")
    for body in (
        {"user_id": "user-1", "user_key": key},
        {"user_id": "new", "recent_item_ids": ["item-1", "item-2"]},
        {"user_id": "new"},
    ):
        assert client.post("/recommend", json=body).status_code == 200
    assert client.post("/recommend", json={"user_id": "u", "k": 0}).status_code == 422
    assert client.post("/similar", json={"item_id": "item-1"}).status_code == 200
    assert client.post("/similar", json={"item_id": "no-such-item"}).status_code == 404


def _query(client: httpx.Client, expr: str) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/query", params={"query": expr})
    assert answer.status_code == 200, f"{expr}: {answer.text}"
    payload = answer.json()
    assert payload["status"] == "success", f"{expr}: {payload}"
    result = payload["data"]["result"]
    return result if payload["data"]["resultType"] == "vector" else [result]


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_every_panel_query_returns_series(monitoring: dict[str, Any]) -> None:
    _drive_requests(monitoring["world"])
    client: httpx.Client = monitoring["prometheus"]
    queries = _panel_queries()
    assert len(queries) >= 20
    deadline = time.monotonic() + SERIES_TIMEOUT
    empty = queries
    while empty and time.monotonic() < deadline:
        # Scrapes every second; rate() needs two scrapes after the requests and recording
        # rules one evaluation: keep asking until every query answers or time is up.
        empty = [(title, expr) for title, expr in empty if not _query(client, expr)]
        if empty:
            time.sleep(1)
    assert not empty, f"panel queries without series: {empty}"


def test_prometheus_evaluates_recflows_rules(monitoring: dict[str, Any]) -> None:
    """The "Alerts firing" panel reads ``ALERTS ... or vector(0)``, which answers even with no
    rules at all: the rules must be loaded, healthy, and firing where the data says so."""
    client: httpx.Client = monitoring["prometheus"]
    rules_file = yaml.safe_load(RULES.read_text())
    expected = {
        g["name"]: {r.get("alert") or r["record"] for r in g["rules"]} for g in rules_file["groups"]
    }
    deadline = time.monotonic() + SERIES_TIMEOUT
    while True:
        groups = client.get("/api/v1/rules").json()["data"]["groups"]
        loaded = {g["name"]: {r["name"] for r in g["rules"]} for g in groups}
        evaluated = all(r.get("health") == "ok" for g in groups for r in g["rules"])
        if (loaded == expected and evaluated) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert loaded == expected
    assert evaluated, [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]]
    assert {g["file"] for g in groups} == {str(RULES.resolve())}
    # The pushed category_mix PSI is at its alert level: an ALERTS series exists, so the
    # panel's figure comes from the rules rather than from `vector(0)`.
    while not _query(client, 'ALERTS{alertstate="firing",alertname=~"Recflow.+"}'):
        assert time.monotonic() < deadline, "no recflow alert ever fired"
        time.sleep(0.5)


def test_scraped_values_are_the_service_and_pushed_ones(monitoring: dict[str, Any]) -> None:
    """Series exist and hold what was served and pushed (not merely some value)."""
    _drive_requests(monitoring["world"])
    client: httpx.Client = monitoring["prometheus"]
    served = monitoring["world"]
    deadline = time.monotonic() + SERIES_TIMEOUT
    while True:
        info = _query(client, "recflow_model_info")
        errors = _query(client, 'recflow_request_errors_total{kind="not_found"} > 0')
        if (info and errors) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [s["metric"]["model_version"] for s in info] == [str(served["version"])]
    assert errors[0]["metric"]["endpoint"] == "similar"
    # Pushed with honor_labels: the Pushgateway's job label, not exported_job.
    ctr = {s["metric"]["rec_source"]: s for s in _query(client, "recflow_rec_ctr")}
    assert float(ctr["cdn"]["value"][1]) == pytest.approx(0.06)
    assert ctr["cdn"]["metric"]["job"] == served["settings"].metrics_job
    champion = _query(client, "recflow_champion_info")
    assert [s["metric"]["model_version"] for s in champion] == [str(served["version"])]
    # The PSI of 0.3 is above the alert level: the rule fires (no `for`).
    deadline = time.monotonic() + SERIES_TIMEOUT
    while not (alerts := _query(client, 'ALERTS{alertname="RecflowDriftHigh"}')):
        assert time.monotonic() < deadline, "RecflowDriftHigh never fired"
        time.sleep(1)
    assert {a["metric"]["metric"] for a in alerts} == {"category_mix"}
