"""Quantized item factors end to end: with ``RECFLOW_FACTOR_DTYPE=int8`` the publisher and
the Bento service (built and served as it ships, called over HTTP) both score the int8
operand, so a known user's answer is still the published list, scores included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from support import clustered_model, register_champion, serve_bento, stop_process

from jobs import subjects
from jobs.config import load_settings
from jobs.model.ranking import round_scores
from jobs.publish.steps import publish_all, recs_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("quantized")
    root = base / "var"
    settings = load_settings(data_root=root, factor_dtype="int8")
    model = clustered_model()
    register_champion(settings, model, base / "work")
    publish_all(settings, in_stock=None)
    proc, url, _, _ = serve_bento(base, root, extra_env={"RECFLOW_FACTOR_DTYPE": "int8"})
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            yield {"settings": settings, "model": model, "client": client}
    finally:
        stop_process(proc, timeout=30)


def test_the_int8_service_answers_the_int8_published_list(world: dict[str, Any]) -> None:
    settings, model = world["settings"], world["model"]
    differs_from_float32 = answered = 0
    for row in range(0, len(model.user_ids), 8):
        user = str(model.user_ids[row])
        key = subjects.user_key(settings.hmac_secret(), user)
        response = world["client"].post(
            "/recommend", json={"user_id": user, "user_key": key, "k": settings.publish_k}
        )
        assert response.status_code == 200, response.text
        served = response.json()
        _, published = recs_for(settings, user)
        assert served["source"] == published["source"]
        if published["source"] != "als":  # the control group: popularity, as published
            continue
        answered += 1
        pairs = [(i["item_id"], i["score"]) for i in served["items"]]
        assert pairs == [(i["item_id"], i["score"]) for i in published["items"]]
        # Both sides really scored int8: float32 factors give other (rounded) scores.
        _, exact = model.recommend_rows(np.array([row]), settings.publish_k)
        differs_from_float32 += [s for _, s in pairs] != round_scores(exact[0])
    assert answered >= 5 and differs_from_float32 > 0
