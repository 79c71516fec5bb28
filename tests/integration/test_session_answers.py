"""Session-aware answers end to end: a click produced to Kafka, the stream worker's push
into Feast, and the Bento's next ``/recommend`` for that known user, over HTTP.

The service answers from the user's stored vector moved by the click (``als_session``),
leaves the clicked item out, and goes on answering the published list for a known user
with nothing new and for a request without the user's key.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from support import clustered_model, register_champion, serve_bento, stop_process

from jobs import subjects
from jobs.config import load_settings
from jobs.features import definitions
from jobs.publish.steps import publish_all
from jobs.stream.client import client_config, ensure_topics
from jobs.stream.features import WorkerStats, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("session")
    root = base / "var"
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(
        data_root=root,
        kafka_bootstrap=kafka,
        kafka_events_topic=f"events-{tag}",
        kafka_catalog_topic=f"catalog-{tag}",
        kafka_features_group=f"features-{tag}",
        control_share=0.0,
    )
    model = clustered_model()
    register_champion(settings, model, base / "work")
    publish_all(settings, in_stock=None)
    definitions.apply(settings)  # the Feast store the worker writes and the service reads
    ensure_topics(settings)
    stop, assigned, stats = threading.Event(), threading.Event(), WorkerStats()
    worker = threading.Thread(
        target=run,
        args=(settings, stop.is_set),
        kwargs={"on_assigned": assigned.set, "stats": stats},
        daemon=True,
    )
    worker.start()
    proc, url, _build, _log = serve_bento(base, root, extra_env={"RECFLOW_CONTROL_SHARE": "0"})
    try:
        assert assigned.wait(60), "the stream worker got no partitions"
        with httpx.Client(base_url=url, timeout=10) as client:
            yield {"settings": settings, "model": model, "client": client, "stats": stats}
    finally:
        stop_process(proc, timeout=30)
        stop.set()
        worker.join(30)


def recommend(world: dict[str, Any], user: str, keyed: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user, "k": 10}
    if keyed:
        body["user_key"] = subjects.user_key(world["settings"].hmac_secret(), user)
    answer = world["client"].post("/recommend", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def click(world: dict[str, Any], user: str, item: str) -> None:
    from confluent_kafka import Producer

    settings = world["settings"]
    producer = Producer(client_config(settings))
    try:
        value = {
            "event_id": uuid.uuid4().hex,
            "ts": datetime.now(UTC).isoformat(),
            "user_id": user,
            "item_id": item,
            "event_type": "click",
        }
        producer.produce(settings.kafka_events_topic, json.dumps(value).encode(), user.encode())
        assert producer.flush(30) == 0
    finally:
        producer.close()


def unseen(world: dict[str, Any], user: str) -> list[str]:
    model = world["model"]
    row = model.user_index[user]
    seen = set(model.seen.indices[model.seen.indptr[row] : model.seen.indptr[row + 1]].tolist())
    return [str(i) for j, i in enumerate(model.item_ids) if j not in seen]


def test_a_click_moves_the_known_users_next_answer(world: dict[str, Any]) -> None:
    user = "user-17"
    before = recommend(world, user)
    assert before["source"] == "als"
    clicked = before["items"][0]["item_id"]  # the top of their list: it must now go
    click(world, user, clicked)
    started = time.monotonic()
    after = before
    while after["source"] != "als_session" and time.monotonic() - started < 15:
        time.sleep(0.05)
        after = recommend(world, user)
    assert after["source"] == "als_session", after
    assert after["recent_source"] == "feast" and after["personal"]
    ids = [i["item_id"] for i in after["items"]]
    assert clicked not in ids and len(ids) == 10
    assert ids != [i["item_id"] for i in before["items"]]
    # Without the user's key the same id gets nothing of theirs.
    stranger = recommend(world, user, keyed=False)
    assert stranger["source"] in {"popular", "fold_in"} and not stranger["personal"]


def test_a_known_user_with_nothing_new_keeps_the_published_list(world: dict[str, Any]) -> None:
    user = "user-40"
    assert recommend(world, user)["source"] == "als"
    # A click on an item they had at training is not new: the list stays the published one.
    model = world["model"]
    row = model.user_index[user]
    trained = str(model.item_ids[model.seen.indices[model.seen.indptr[row]]])
    click(world, user, trained)
    stats: WorkerStats = world["stats"]
    pushed = stats.users_pushed
    deadline = time.monotonic() + 15
    while stats.users_pushed == pushed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats.users_pushed > pushed, "the worker did not push the click"
    assert recommend(world, user)["source"] == "als"


def test_clicks_of_an_item_the_model_does_not_know_change_nothing(world: dict[str, Any]) -> None:
    user = "user-41"
    before = recommend(world, user)
    click(world, user, "brand-new-item")
    stats: WorkerStats = world["stats"]
    pushed = stats.users_pushed
    deadline = time.monotonic() + 15
    while stats.users_pushed == pushed and time.monotonic() < deadline:
        time.sleep(0.05)
    after = recommend(world, user)
    assert after["source"] == "als" and after["items"] == before["items"]
