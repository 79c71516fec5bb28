"""New items without clicks, served: a model whose cold items got factors from their
text (the real embedding model and content map) is registered, published and served by
the Bento over HTTP. Cold items appear in published lists within the cap, the service
returns the published lists, ``/similar`` answers for a cold item, and for an item listed
after the model was trained, placed by its content vector from the Feast online store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from support import clustered_model, register_champion, serve_bento, stop_process

from jobs import subjects
from jobs.config import load_settings
from jobs.content.encoder import Encoder
from jobs.model.artifact import RecModel
from jobs.publish.steps import publish_all, recs_for
from jobs.train.cold import add_cold_items

pytestmark = pytest.mark.integration

# clustered_model's items: item-i is in cluster i % 3; each cluster gets its own words.
WORDS = ["crimson velvet evening gown", "carbon trail running shoe", "organic green tea leaves"]
CAP = 2


def _texts(n: int) -> list[str]:
    return [f"{WORDS[i % 3]} number {i}" for i in range(n)]


def _model() -> RecModel:
    base = clustered_model()
    base.params["cold_items_per_list"] = CAP
    encoder = Encoder()
    warm_ids = base.item_ids
    new_ids = np.array([f"new-{c}-{n}" for c in range(3) for n in range(4)])
    vectors = encoder.embed(
        _texts(len(warm_ids)) + [f"{WORDS[c]} new" for c in range(3) for _ in range(4)]
    )
    model, params = add_cold_items(
        base, np.concatenate([warm_ids, new_ids]), vectors, encoder.model_id, seed=0
    )
    assert params["cold_items"] == 12 and params["content_map_r2"] > 0.5
    return model


def _online_content(settings: Any) -> None:
    """Content vectors of items listed after the model was trained, as the features DAG
    would have materialized them (written to the real online store through Feast)."""
    import pandas as pd

    from jobs.features import definitions

    definitions.apply(settings)
    encoder = Encoder()
    vecs = encoder.embed([f"{WORDS[1]} brand new", f"{WORDS[2]} brand new", ""])
    frame = pd.DataFrame(
        {
            "item_id": ["listed-today", "other-model", "no-text"],
            "content_embedding": [v.tolist() for v in vecs],
            "content_model": [encoder.model_id, "someone-else/model@1", encoder.model_id],
            "event_timestamp": pd.Timestamp.now(tz="UTC"),
        }
    )
    definitions.store(settings).write_to_online_store(definitions.ITEM_CONTENT, frame)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("cold")
    root = base / "var"
    settings = load_settings(data_root=root, publish_k=10)
    model = _model()
    register_champion(settings, model, base / "work")
    publish_all(settings, in_stock=None)
    _online_content(settings)
    proc, url, _, _ = serve_bento(base, root)
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            yield {"settings": settings, "model": model, "client": client}
    finally:
        stop_process(proc, timeout=30)


def test_cold_items_reach_published_lists_within_the_cap(world: dict[str, Any]) -> None:
    settings, model = world["settings"], world["model"]
    cold = {str(i) for i in model.item_ids[model.cold]}
    per_list = []
    for user in model.user_ids:
        _, body = recs_for(settings, str(user))
        if body["source"] != "als":
            continue
        got = [i["item_id"] for i in body["items"]]
        per_list.append(len(set(got) & cold))
        # The service's answer is the published list, cold items included.
        key = subjects.user_key(settings.hmac_secret(), str(user))
        served = world["client"].post(
            "/recommend", json={"user_id": str(user), "user_key": key, "k": 10}
        )
        assert served.status_code == 200 and served.json()["source"] == "als", served.text
        assert [i["item_id"] for i in served.json()["items"]] == got
    assert per_list and max(per_list) <= CAP and sum(per_list) > 0


def test_similar_knows_a_cold_item_and_finds_its_cluster(world: dict[str, Any]) -> None:
    response = world["client"].post("/similar", json={"item_id": "new-1-0", "k": 8})
    assert response.status_code == 200, response.text
    items = [i["item_id"] for i in response.json()["items"]]
    warm = [i for i in items if i.startswith("item-")]
    assert len(items) == 8 and len(items) - len(warm) <= CAP
    assert sum(int(i.split("-")[1]) % 3 == 1 for i in warm) >= len(warm) - 1


def test_similar_places_an_item_newer_than_the_model_by_its_text_from_feast(
    world: dict[str, Any],
) -> None:
    response = world["client"].post("/similar", json={"item_id": "listed-today", "k": 8})
    assert response.status_code == 200, response.text
    items = [i["item_id"] for i in response.json()["items"]]
    assert "listed-today" not in items and len(items) == 8
    warm = [i for i in items if i.startswith("item-")]
    assert sum(int(i.split("-")[1]) % 3 == 1 for i in warm) >= len(warm) - 1
    # A vector of another embedding model, an item without text, an item nobody listed:
    # nothing to place them by.
    for unknown in ("other-model", "no-text", "never-listed"):
        missing = world["client"].post("/similar", json={"item_id": unknown, "k": 8})
        assert missing.status_code == 404, (unknown, missing.text)


def test_an_online_store_outage_is_503_not_unknown(world: dict[str, Any]) -> None:
    """The store's item_content table gone mid-flight (a real SQLite failure inside
    Feast): the item listed today cannot be placed, and the answer says so (503, retry)
    instead of claiming the item is unknown."""
    import sqlite3

    db = world["settings"].feast_dir / "online_store.db"
    with sqlite3.connect(db) as conn:
        (table,) = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0].endswith("item_content")
        ]
        conn.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_aside"')
    try:
        response = world["client"].post("/similar", json={"item_id": "listed-today", "k": 8})
        assert response.status_code == 503, response.text
        assert response.headers.get("retry-after") == "1"
        # Items the model knows need no lookup and are answered as ever.
        assert world["client"].post("/similar", json={"item_id": "new-1-0"}).status_code == 200
    finally:
        with sqlite3.connect(db) as conn:
            conn.execute(f'ALTER TABLE "{table}_aside" RENAME TO "{table}"')
    back = world["client"].post("/similar", json={"item_id": "listed-today", "k": 8})
    assert back.status_code == 200, back.text
