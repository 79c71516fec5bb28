"""The storefront page's backend (`recflow shop`): the page's configuration and user key,
the errors the page reports, the static files, and CORS on the collector it posts to."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from jobs.config import ConfigError, load_settings
from jobs.publish import layout
from jobs.shop import server
from jobs.stream import collector

SETTINGS = load_settings(publish_prefix="shop1/", gen_users=3, shop_demo_users=6)
WHERE = {"cdn": "http://cdn.test/", "service": "http://svc.test", "collector": "http://col.test"}


@pytest.fixture
def client() -> TestClient:
    return TestClient(server.make_app(SETTINGS, WHERE))


def test_a_signed_in_user_gets_the_key_of_their_cdn_object(client: TestClient) -> None:
    got = client.get("/config.json", params={"user": "u000001"})
    assert got.status_code == 200 and got.headers["cache-control"] == "no-store"
    config = got.json()
    assert config["user"] == {
        "id": "u000001",
        "key": layout.user_key(SETTINGS.hmac_secret(), "u000001"),
    }
    assert config["cdn"] == "http://cdn.test"  # no trailing slash: the page appends "/key"
    assert config["latest"] == "shop1/recs/latest.json"
    assert config["demo_users"] == ["u000000", "u000001", "u000002"]  # no more than the shop has
    assert config["timeout_ms"] == SETTINGS.shop_timeout_ms


def test_an_anonymous_visitor_gets_no_key(client: TestClient) -> None:
    for query in ("", "?user="):
        assert client.get(f"/config.json{query}").json()["user"] is None


def test_default_urls_come_from_the_servers_settings() -> None:
    settings = load_settings(cdn_port=9001, serve_port=9002, collector_port=9003)
    assert server.urls(settings) == {
        "cdn": "http://127.0.0.1:9001",
        "service": "http://127.0.0.1:9002",
        "collector": "http://127.0.0.1:9003",
    }
    assert server.urls(load_settings(shop_service_url="https://recs.example"))["service"] == (
        "https://recs.example"
    )


@pytest.mark.parametrize("user", ["u" * 129, "a\nb", " u1", "u1 ", "\x00", "\u200b\u2028"])
def test_a_user_id_no_shop_would_have_is_refused(client: TestClient, user: str) -> None:
    got = client.get("/config.json", params={"user": user})
    assert got.status_code == 400 and "not a user id" in got.json()["error"]


@given(st.text(min_size=1, max_size=128))
def test_any_user_id_gets_a_key_or_a_clear_refusal(user: str) -> None:
    try:
        accepted = server.signed_in(user)
    except ValueError as exc:
        assert "not a user id" in str(exc)
        return
    config = server.page_config(SETTINGS, accepted, WHERE)
    assert re.fullmatch(r"[0-9a-f]{32}", config["user"]["key"])


def test_the_demo_sign_in_is_refused_in_production_next_to_a_bucket_or_on_a_network() -> None:
    prod = load_settings(env="prod", publish_secret="s" * 32, subject_secret="t" * 32)
    with pytest.raises(ConfigError, match="refused in prod"):
        server.make_app(prod, WHERE)
    bucket = load_settings(publish_target="s3", publish_secret="s" * 32)
    with pytest.raises(ConfigError, match="real bucket"):
        server.make_app(bucket, WHERE)
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1 only"):
        server.make_app(load_settings(shop_host="0.0.0.0"), WHERE)
    with pytest.raises(ConfigError):  # refused before a port is taken
        server.Running(load_settings(shop_host="0.0.0.0"), 0, WHERE)


def test_the_page_is_told_the_collectors_limits(client: TestClient) -> None:
    config = client.get("/config.json").json()
    assert config["collector_max_events"] == SETTINGS.collector_max_events
    # Never shorter than the collector may take: a retry would duplicate events.
    assert config["collector_timeout_ms"] > SETTINGS.collector_timeout_seconds * 1000
    assert config["catalog_timeout_ms"] >= config["timeout_ms"]


def test_reported_errors_are_counted_under_a_fixed_set_of_kinds(client: TestClient) -> None:
    for kind in ("service", "service", "collector", "made-up-kind"):
        assert client.post("/client-errors", json={"kind": kind}).status_code == 202
    assert client.post("/client-errors", content=b"not json").status_code == 400
    assert client.post("/client-errors", json=["kind"]).status_code == 400
    assert client.post("/client-errors", content=b"[" * 4000).status_code == 400  # too deep
    big = b'{"kind": "service", "x": "' + b"x" * server.MAX_ERROR_BODY + b'"}'
    assert client.post("/client-errors", content=big).status_code == 413
    metrics = client.get("/metrics").text
    assert 'recflow_shop_client_errors_total{kind="service"} 2.0' in metrics
    assert 'recflow_shop_client_errors_total{kind="collector"} 1.0' in metrics
    assert 'recflow_shop_client_errors_total{kind="other"} 1.0' in metrics
    assert 'recflow_shop_client_errors_total{kind="cdn"} 0.0' in metrics
    assert "made-up-kind" not in metrics


def test_the_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/shop.js" in page.text
    script = client.get("/static/shop.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/static/shop.css").status_code == 200
    assert client.get("/static/../server.py").status_code == 404


def test_the_page_never_builds_html_from_data() -> None:
    """Titles, categories and ids come from the bucket and the service: text only."""
    script = (server.STATIC / "shop.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


def _preflight(settings_origin: str) -> object:
    app = collector.make_app(load_settings(serve_cors_origin=settings_origin))
    with_origin = {"Origin": "http://shop.test", "Access-Control-Request-Method": "POST"}
    # Without `with`, the lifespan (the Kafka producer) does not start: a preflight needs none.
    return TestClient(app).options("/events", headers=with_origin)


def test_the_collector_answers_a_browsers_preflight() -> None:
    got = _preflight("*")
    assert got.status_code == 200
    assert got.headers["access-control-allow-origin"] == "*"
    assert "POST" in got.headers["access-control-allow-methods"]


def test_an_empty_origin_turns_cors_off() -> None:
    got = _preflight("")
    assert "access-control-allow-origin" not in got.headers


def test_origins_are_a_comma_separated_list() -> None:
    assert (
        _preflight("https://a.test, http://shop.test").headers["access-control-allow-origin"]
        == "http://shop.test"
    )
    assert _preflight("https://a.test,https://b.test").status_code == 400  # not listed
    assert load_settings(serve_cors_origin=" , ").serve_cors_origins == []
