"""The storefront page in headless Chromium (Selenium) against the real servers.

A champion registered in MLflow and published (with its catalog) to the local bucket, the
CDN stand-in over it, the champion's Bento and the event collector on a real Kafka broker,
all on 127.0.0.1. The page must show the user's published list, fall back to popular.json
on a 404, follow a click through the service, keep its list when the service is down or
slow (an error counted, nothing shown), and put impressions with attribution on the topic.
Screenshots go to the test's temporary folder (their paths are printed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port, register_champion, serve_bento, stop_process, wait_for_port

from jobs.config import Settings, load_settings
from jobs.model import control
from jobs.publish import layout
from jobs.publish.cdn import serve_in_background
from jobs.publish.steps import current, publish_all, recs_for
from jobs.publish.storage import open_store
from jobs.shop.browser import binaries, browser_log, chromium
from jobs.shop.server import Running
from jobs.sources.shop import ShopSpec, build_world, user_id
from jobs.sources.storefront import reference_model
from jobs.stream.client import client_config, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS, ITEMS, KNOWN = 120, 80, 100  # users from KNOWN on have no published list


@dataclass
class Stack:
    settings: Settings
    world: Any
    cdn: str
    service: str
    collector: str
    topic_settings: Settings
    shots: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka: str) -> Iterator[Stack]:
    binaries()  # no browser (make browser-deps): fail before building anything
    base = tmp_path_factory.mktemp("shop")
    root = base / "var"
    settings = load_settings(data_root=root, gen_users=USERS, gen_items=ITEMS, publish_k=10)
    world = build_world(ShopSpec.from_settings(settings))
    register_champion(settings, reference_model(world, "oracle", known=KNOWN), base / "work")
    items = world.items.to_dict("records")
    stock = {r["item_id"]: bool(r["in_stock"]) for r in items}
    publish_all(settings, generated_at=datetime.now(UTC), in_stock=stock, catalog_rows=items)
    topic = load_settings(kafka_bootstrap=kafka, kafka_events_topic=f"shop-{uuid.uuid4().hex}")
    ensure_topics(topic)
    cdn_server, cdn = serve_in_background(settings)
    service_proc, service, _, _ = serve_bento(base, root)
    port = free_port()
    collector_proc = start_collector(root, topic, port)
    try:
        yield Stack(
            settings,
            world,
            cdn,
            service,
            f"http://127.0.0.1:{port}",
            topic,
            base / "screenshots",
        )
    finally:
        stop_process(collector_proc, timeout=30)
        stop_process(service_proc, timeout=30)
        cdn_server.shutdown()
        cdn_server.server_close()


def start_collector(root: Path, topic: Settings, port: int) -> subprocess.Popen:
    """`recflow collector` on ``port``, producing to the test's topic."""
    env = {
        **os.environ,
        "RECFLOW_DATA_ROOT": str(root),
        "RECFLOW_KAFKA_BOOTSTRAP": topic.kafka_bootstrap,
        "RECFLOW_KAFKA_EVENTS_TOPIC": topic.kafka_events_topic,
    }
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "recflow"), "collector", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(stack: Stack, browser: Any) -> Iterator[Any]:
    """Opens the page of a fresh shop server (its own origin: fresh storage) and returns a
    function ``open(user=None, **where)``; ``where`` replaces the CDN/service/collector."""
    running: list[Running] = []
    browser_log(browser)  # drop what earlier tests logged

    def open_page(user: str | None = None, timeout_ms: int = 1500, **where: str) -> Any:
        urls = {"cdn": stack.cdn, "service": stack.service, "collector": stack.collector}
        settings = stack.settings.model_copy(update={"shop_timeout_ms": timeout_ms})
        shop = Running(settings, 0, {**urls, **where})
        running.append(shop)
        browser.get(f"{shop.url}/" + (f"?user={user}" if user else ""))
        settle(browser)
        return shop

    yield open_page
    for shop in running:
        shop.stop()


def settle(browser: Any, timeout: float = 20.0) -> None:
    """Until the page started and nothing it began (fetches, clicks) is in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = browser.execute_script(
            "return window.recflowShop && [window.recflowShop.ready, window.recflowShop.busy]"
        )
        if state and state[0] and state[1] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the page did not settle within {timeout} s")


def row(browser: Any, name: str) -> dict[str, Any]:
    return browser.execute_script(
        """const r = document.getElementById(arguments[0]);
        return {hidden: r.hidden, source: r.dataset.source || null,
                version: r.dataset.modelVersion || null,
                items: [...r.querySelectorAll('.card')].map(c => c.dataset.itemId),
                titles: [...r.querySelectorAll('.card .title')].map(c => c.textContent),
                heading: r.querySelector('h2').textContent.trim(),
                text: document.body.innerText};""",
        name,
    )


def state(browser: Any) -> dict[str, Any]:
    return browser.execute_script("return JSON.parse(JSON.stringify(window.recflowShop))")


def click_first(browser: Any, name: str = "personal") -> str:
    card = browser.find_element("css selector", f"#{name} .card")
    item = card.get_attribute("data-item-id")
    card.click()
    settle(browser)
    return item


def shot(browser: Any, stack: Stack, name: str) -> Path:
    stack.shots.mkdir(parents=True, exist_ok=True)
    path = stack.shots / f"{name}.png"
    assert browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def severe(browser: Any, allowed: tuple[str, ...] = ()) -> list[str]:
    """Console errors and failed loads, except those whose message names an allowed URL."""
    return [
        e["message"]
        for e in browser_log(browser)
        if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)
    ]


def published(stack: Stack, user: str) -> list[str]:
    key, body = recs_for(stack.settings, user)
    assert "/u/" in key  # the user's own object, not popular.json
    return [i["item_id"] for i in body["items"]]


def known_user(stack: Stack, nth: int = 0) -> str:
    users = [user_id(i) for i in range(KNOWN) if not control.in_control(user_id(i), stack.settings)]
    return users[nth]


def topic_events(stack: Stack, user: str, expect: int, wait: float = 20.0) -> list[dict]:
    """The user's events on the topic, once ``expect`` of them are there (or ``wait`` ends)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        client_config(
            stack.topic_settings, **{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([stack.topic_settings.kafka_events_topic])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline and len(out) < expect:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is None and message.key() == user.encode():
                    out.append(json.loads(message.value()))
    finally:
        consumer.close()
    return out


def test_the_personal_row_is_the_users_published_list(stack: Stack, page: Any, browser: Any):
    user = known_user(stack)
    page(user)
    shown = row(browser, "personal")
    assert shown["source"] == "cdn"
    assert shown["heading"] == "Recommended for you"
    assert shown["items"] == published(stack, user)[: len(shown["items"])]
    assert len(shown["items"]) == 8
    pointer = current(stack.settings)
    assert shown["version"] == pointer["model"]["version"]
    titles = dict(zip(stack.world.items["item_id"], stack.world.items["title"], strict=True))
    assert shown["titles"] == [titles[i] for i in shown["items"]]  # cards from catalog.json
    assert shot(browser, stack, "personal-row").stat().st_size > 5_000
    assert severe(browser) == []
    assert state(browser)["errors"] == {"cdn": 0, "service": 0, "similar": 0, "collector": 0}


def test_a_click_changes_the_next_answer_and_the_events_carry_attribution(
    stack: Stack, page: Any, browser: Any
):
    user = known_user(stack, 1)
    page(user)
    before = row(browser, "personal")
    clicked = click_first(browser)
    after = row(browser, "personal")
    assert after["source"] == "service:als_session"
    assert after["items"] != before["items"] and clicked not in after["items"]
    assert "session-aware" in after["text"]
    similar = row(browser, "similar")
    assert not similar["hidden"] and similar["source"] == "service:similar"
    assert clicked not in similar["items"] and len(similar["items"]) > 0
    shot(browser, stack, "after-click")
    assert severe(browser) == []
    sent = state(browser)["eventsSent"]
    assert state(browser)["eventsQueued"] == 0
    mine = topic_events(stack, user, sent)
    assert len(mine) == sent and {e["user_id"] for e in mine} == {user}
    assert len({e["event_id"] for e in mine}) == sent
    pointer = current(stack.settings)
    cdn_impressions = [
        e for e in mine if e["event_type"] == "impression" and e.get("rec_source") == "cdn"
    ]
    assert [e["item_id"] for e in cdn_impressions] == before["items"]
    assert [e["position"] for e in cdn_impressions] == list(range(1, 9))
    assert {e["publish_id"] for e in cdn_impressions} == {pointer["publish_id"]}
    (click,) = [e for e in mine if e["event_type"] == "click"]
    assert (click["item_id"], click["rec_source"], click["position"]) == (clicked, "cdn", 1)
    assert click["publish_id"] == pointer["publish_id"]
    assert [e["item_id"] for e in mine if e["event_type"] == "view"] == [clicked]
    served = [e for e in mine if e.get("rec_source") == "service"]
    assert {e["item_id"] for e in served} == set(after["items"]) | set(similar["items"])
    assert all(e.get("request_id") and e.get("model_version") for e in served)
    assert len({e["session_id"] for e in mine}) == 1


def test_a_reload_in_a_session_with_clicks_asks_the_service_first(
    stack: Stack, page: Any, browser: Any
):
    user = known_user(stack, 6)
    page(user)
    clicked = click_first(browser)
    browser.refresh()
    settle(browser)
    shown = row(browser, "personal")
    assert shown["source"] == "service:als_session" and clicked not in shown["items"]
    # No CDN row was drawn (and counted as impressions) only to be replaced.
    assert state(browser)["timings"]["firstRowSource"] == "service:als_session"
    assert severe(browser) == []


def test_a_user_without_a_published_list_sees_popular(stack: Stack, page: Any, browser: Any):
    user = user_id(KNOWN + 3)
    page(user)
    shown = row(browser, "personal")
    assert shown["source"] == "cdn:popular" and shown["heading"] == "Popular"
    popular = layout.decode(open_store(stack.settings).get(current(stack.settings)["popular"]))
    assert shown["items"] == [i["item_id"] for i in popular["items"]][:8]
    assert "no personal list yet" in shown["text"]
    shot(browser, stack, "no-list-popular")
    key = layout.user_key(stack.settings.hmac_secret(), user)
    # The 404 of the user's object is the contract, not an error of the page.
    assert severe(browser, allowed=(f"/{key}.json",)) == []


def test_an_anonymous_visitor_sees_popular_then_a_fold_in(stack: Stack, page: Any, browser: Any):
    page(None)
    shown = row(browser, "personal")
    assert (shown["source"], shown["heading"]) == ("cdn:popular", "Popular")
    click_first(browser)
    after = row(browser, "personal")
    assert after["source"] == "service:fold_in" and after["heading"] == "Recommended for you"
    assert severe(browser) == []


def test_the_service_down_keeps_the_cdn_list_and_counts_an_error(
    stack: Stack, page: Any, browser: Any
):
    user = known_user(stack, 2)
    shop = page(user, service=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    before = row(browser, "personal")
    click_first(browser)
    after = row(browser, "personal")
    assert after["items"] == before["items"] and after["source"] == "cdn"
    assert row(browser, "similar")["hidden"]
    assert "error" not in after["text"].lower() and "failed" not in after["text"].lower()
    errors = state(browser)["errors"]
    assert (errors["service"], errors["similar"]) == (1, 1)
    metrics = httpx.get(f"{shop.url}/metrics").text
    assert 'recflow_shop_client_errors_total{kind="service"} 1.0' in metrics
    shot(browser, stack, "service-down")
    # The refused connections are the outage itself; nothing else may be logged.
    assert severe(browser, allowed=("/recommend", "/similar")) == []


def test_a_service_that_never_answers_times_out(stack: Stack, page: Any, browser: Any):
    with socket.socket() as sock:  # accepts connections, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(sock.accept()[0])
                except OSError:
                    continue  # the timeout: look at stop again

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            user = known_user(stack, 3)
            page(user, timeout_ms=800, service=f"http://127.0.0.1:{sock.getsockname()[1]}")
            before = row(browser, "personal")
            started = time.monotonic()
            click_first(browser)
            took = time.monotonic() - started
            after = row(browser, "personal")
        finally:
            stop.set()
            thread.join(5)
            for conn in held:
                conn.close()
    assert after["items"] == before["items"] and after["source"] == "cdn"
    assert state(browser)["errors"]["service"] == 1
    assert took < 10  # bounded by the page's timeout, not by the server


def test_the_collector_down_keeps_the_events_and_the_page_working(
    stack: Stack, page: Any, browser: Any
):
    user = known_user(stack, 5)
    page(user, collector=f"http://127.0.0.1:{free_port()}")
    click_first(browser)
    assert row(browser, "personal")["source"] == "service:als_session"
    shown = state(browser)
    # 8 impressions, the click and the view, 8 + the similar row's impressions: all kept.
    assert shown["eventsSent"] == 0 and shown["eventsQueued"] >= 18
    assert shown["errors"]["collector"] >= 1
    saved = browser.execute_script("return JSON.parse(sessionStorage.getItem('recflow.queue'))")
    assert len(saved) == shown["eventsQueued"]
    assert severe(browser, allowed=("/events",)) == []


def test_events_kept_through_an_outage_reach_the_collector_when_it_is_back(
    stack: Stack, page: Any, browser: Any
):
    """More events than one keepalive request may carry (64 KiB) pile up while the
    collector is down; once it is back, every one arrives, once."""
    user = known_user(stack, 7)
    port = free_port()
    page(user, collector=f"http://127.0.0.1:{port}")
    cards = browser.find_elements("css selector", "#personal .card")
    for i in range(16):
        browser.find_elements("css selector", "#personal .card")[i % 4].click()
        settle(browser)
    queued = state(browser)["eventsQueued"]
    assert queued > 250 and state(browser)["eventsSent"] == 0 and cards
    proc = start_collector(stack.settings.data_root, stack.topic_settings, port)
    try:
        click_first(browser)  # the next event sends everything kept, in order
        deadline = time.monotonic() + 30
        while state(browser)["eventsQueued"] and time.monotonic() < deadline:
            time.sleep(0.2)
        shown = state(browser)
        assert shown["eventsQueued"] == 0 and shown.get("eventsDropped", 0) == 0
        mine = topic_events(stack, user, shown["eventsSent"])
    finally:
        stop_process(proc, timeout=30)
    assert shown["eventsSent"] >= queued + 2
    assert len(mine) == shown["eventsSent"] == len({e["event_id"] for e in mine})
    clicks = [e for e in mine if e["event_type"] == "click"]
    assert len(clicks) == 17  # every click of the outage, then the one after it


def test_no_cdn_at_all_is_answered_by_the_service(stack: Stack, page: Any, browser: Any):
    user = known_user(stack, 4)
    page(user, cdn=f"http://127.0.0.1:{free_port()}")
    shown = row(browser, "personal")
    assert shown["source"] == "service:als"
    key = layout.user_key(stack.settings.hmac_secret(), user)
    direct = httpx.post(
        f"{stack.service}/recommend", json={"user_id": user, "user_key": key, "k": 8}
    ).json()
    assert shown["items"] == [i["item_id"] for i in direct["items"]]
    assert state(browser)["errors"]["cdn"] == 1
