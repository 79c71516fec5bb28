"""The reacting shop in front of a real publish: models registered in MLflow, published by
the publish steps to the local bucket, read back through the store and the CDN stand-in."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import register_champion

from jobs.config import Settings, load_settings
from jobs.publish.cdn import serve_in_background
from jobs.publish.steps import publish_all, recs_for
from jobs.sources.shop import ShopSpec, build_world, generate
from jobs.sources.storefront import reference_model

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
SLOTS = 4
KNOWN = 200  # the model knows the first 200 of 300 users; the rest get popular.json


def _records(settings: Settings) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for p in sorted(settings.events_dir.rglob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]


def _lines(settings: Settings) -> dict[str, str]:
    return {
        str(p.relative_to(settings.events_dir)): p.read_text()
        for p in sorted(settings.events_dir.rglob("*.jsonl"))
    }


def test_a_reacting_day_shows_the_live_publish_and_a_broken_model_loses_ctr(
    tmp_path: Path,
) -> None:
    settings = load_settings(data_root=tmp_path / "var", gen_users=300, gen_items=120, publish_k=10)
    world = build_world(ShopSpec.from_settings(settings))
    stock = {str(i): True for i in world.items["item_id"]}
    version = register_champion(
        settings, reference_model(world, "oracle", known=KNOWN), tmp_path / "w1"
    )
    pid = publish_all(settings, generated_at=T0, in_stock=stock)["publish_id"]

    report = generate(settings, days=1, react=True)
    assert report.shown["2026-11-01"]["publish_id"] == pid
    assert report.shown["2026-11-01"]["users"]["popular"] > 0  # type: ignore[index]
    records = _records(settings)
    attributed = [r for r in records if r.get("rec_source") is not None]
    assert attributed and {
        (r["rec_source"], r["publish_id"], r["model_version"]) for r in attributed
    } == {("cdn", pid, version)}

    # Independently of the storefront: what a client fetches for the user (recs_for).
    shown: dict[str, dict[int, str]] = {}
    for r in records:
        if r["event_type"] == "impression" and r.get("rec_source"):
            shown.setdefault(r["user_id"], {})[r["position"]] = r["item_id"]
    assert any(int(u[1:]) >= KNOWN for u in shown) and any(int(u[1:]) < KNOWN for u in shown)
    for uid, slots in shown.items():
        key, body = recs_for(settings, uid)
        assert key.endswith("popular.json") == (int(uid[1:]) >= KNOWN)
        top = [x["item_id"] for x in sorted(body["items"], key=lambda x: x["rank"])][:SLOTS]
        assert slots == dict(enumerate(top, start=1))

    # The same day read over HTTP from the CDN stand-in: the same lines.
    server, base = serve_in_background(settings)
    try:
        via_cdn = load_settings(
            data_root=tmp_path / "cdn-reader",
            gen_users=300,
            gen_items=120,
            publish_dir=settings.publish_dir,
            gen_recs_url=base,
        )
        generate(via_cdn, days=1, react=True)
    finally:
        server.shutdown()
        server.server_close()
    assert _lines(via_cdn) == _lines(settings)

    # A broken model (shuffled factors) becomes champion and is published: the next day
    # shows it, and its recommended slots earn fewer clicks.
    broken = register_champion(
        settings, reference_model(world, "shuffled", known=KNOWN), tmp_path / "w2"
    )
    pid2 = publish_all(settings, generated_at=T0 + timedelta(days=1), in_stock=stock)["publish_id"]
    generate(settings, days=1, append=True, react=True)
    state = json.loads((settings.landing_dir / "_generator.json").read_text())
    assert [state["shown"][d]["publish_id"] for d in ("2026-11-01", "2026-11-02")] == [pid, pid2]

    counts: Counter[tuple[str, str]] = Counter()
    for r in _records(settings):
        if r.get("rec_source"):
            counts[(r["model_version"], r["event_type"])] += 1
    ctr = {v: counts[(v, "click")] / counts[(v, "impression")] for v in (version, broken)}
    assert ctr[version] > 2 * ctr[broken], ctr
    assert np.isfinite(list(ctr.values())).all()
