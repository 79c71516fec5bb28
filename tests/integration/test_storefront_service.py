"""The reacting shop asking the real online service for users without a published list:
the champion registered and published, its Bento built and served on 127.0.0.1, and the
answers' request ids and model version carried by the events of those slots."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support import free_port, register_champion, serve_bento, stop_process

from jobs.config import load_settings
from jobs.publish.steps import publish_all, recs_for
from jobs.sources.shop import ShopSpec, build_world, generate
from jobs.sources.storefront import StorefrontError, reference_model

pytestmark = pytest.mark.integration

KNOWN = 150  # of 250 users: the other 100 have no published list


def test_users_without_a_list_are_shown_the_services_answer(tmp_path: Path) -> None:
    root = tmp_path / "var"
    settings = load_settings(data_root=root, gen_users=250, gen_items=100, publish_k=10)
    world = build_world(ShopSpec.from_settings(settings))
    version = register_champion(
        settings, reference_model(world, "oracle", known=KNOWN), tmp_path / "work"
    )
    stock = {str(i): True for i in world.items["item_id"]}
    pid = publish_all(settings, generated_at=datetime(2026, 11, 1, tzinfo=UTC), in_stock=stock)[
        "publish_id"
    ]
    proc, url, _, _ = serve_bento(tmp_path, root)
    try:
        reacting = load_settings(data_root=root, gen_users=250, gen_items=100, gen_service_url=url)
        report = generate(reacting, days=1, react=True)
    finally:
        stop_process(proc, timeout=30)
    served = report.shown["2026-11-01"]["users"]
    assert served["service"] > 0 and served["cdn"] > 0 and served["popular"] == 0  # type: ignore[index]

    records = [
        json.loads(line)
        for p in sorted(reacting.events_dir.rglob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    requests: dict[str, set[str]] = {}
    for r in records:
        if r.get("rec_source") is None:  # organic: the plain mode's page request, if shown
            page = None if r["position"] is None else "r" + r["session_id"]
            assert r["request_id"] == page, r
            continue
        known = int(r["user_id"][1:]) < KNOWN
        assert r["rec_source"] == ("cdn" if known else "service"), r
        assert r["model_version"] == version
        if known:
            assert (r["publish_id"], r["request_id"]) == (pid, None)
        else:
            assert r["publish_id"] is None and r["request_id"]
            requests.setdefault(r["user_id"], set()).add(r["request_id"])
    # One answer per user and day, and its id differs between users.
    assert requests and all(len(ids) == 1 for ids in requests.values())
    assert len({next(iter(ids)) for ids in requests.values()}) == len(requests)
    # The service answers a stranger with the popular list: the items popular.json holds.
    _, popular = recs_for(settings, "u000249")
    top = [x["item_id"] for x in sorted(popular["items"], key=lambda x: x["rank"])][:4]
    for r in records:
        if r.get("rec_source") == "service" and r["event_type"] == "impression":
            assert r["item_id"] == top[r["position"] - 1]


def test_an_unreachable_service_is_a_clear_error(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var", gen_users=120, gen_items=60)
    world = build_world(ShopSpec.from_settings(settings))
    register_champion(settings, reference_model(world, "oracle", known=60), tmp_path / "w")
    publish_all(settings, generated_at=datetime(2026, 11, 1, tzinfo=UTC), in_stock={})
    dead = load_settings(
        data_root=tmp_path / "var",
        gen_users=120,
        gen_items=60,
        gen_service_url=f"http://127.0.0.1:{free_port()}",
    )
    with pytest.raises(StorefrontError, match="RECFLOW_GEN_SERVICE_URL"):
        generate(dead, days=1, react=True)
