"""The online service as it ships: a registered champion, ``jobs.serve.bento_build`` (model import
and ``bentoml build``), ``bentoml serve`` of the Bento on 127.0.0.1, called over HTTP.

One module-scoped world: a clustered model registered in a temporary MLflow store and
published to the local bucket (the lists the service must agree with), the Bento built
and served in subprocesses with ``BENTOML_HOME`` inside the temporary data root. There is
no Feast store there, so the service also shows its fallback (everything in stock, no
recent items) in ``/readyz``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from support import clustered_model, register_champion, serve_bento, stop_process

from jobs import subjects
from jobs.access_log import access_log_dir
from jobs.config import load_settings
from jobs.model.artifact import RecModel
from jobs.publish.steps import publish_all, recs_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("bento")
    root = base / "var"
    settings = load_settings(data_root=root)
    model = clustered_model()
    version = register_champion(settings, model, base / "work")
    publish_all(settings, in_stock=None)  # the published lists the service must agree with
    proc, url, build, log_path = serve_bento(base, root)
    try:
        client = httpx.Client(base_url=url, timeout=10)
        yield {
            "settings": settings,
            "model": model,
            "version": version,
            "build": build,
            "client": client,
            "log": log_path,
        }
        client.close()
    finally:
        stop_process(proc, timeout=30)


def _recommend(world: dict[str, Any], body: Any) -> httpx.Response:
    return world["client"].post("/recommend", json=body)


def _key(world: dict[str, Any], user_id: str) -> str:
    """What the site's backend hands the browser for a signed-in user."""
    return subjects.user_key(world["settings"].hmac_secret(), user_id)


def _ids(payload: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in payload["items"]]


def _cluster(item_id: str) -> int:
    return int(item_id.split("-")[1]) % 3


# -- build -------------------------------------------------------------------------------------


def test_bento_is_tagged_with_the_model_version(world: dict[str, Any]) -> None:
    build, version = world["build"], world["version"]
    assert build["bento_tag"] == f"recflow:v{version}"
    assert build["model_tag"] == f"recflow-als:v{version}"
    manifest = yaml.safe_load(
        (
            Path(build["bentoml_home"]) / "bentos" / "recflow" / f"v{version}" / "bento.yaml"
        ).read_text()
    )
    assert manifest["labels"]["mlflow_version"] == version
    assert manifest["labels"]["mlflow_run_id"] == build["run_id"]
    assert manifest["args"] == {"model_tag": build["model_tag"]}
    assert [m["tag"] for m in manifest["services"][0]["models"]] == [build["model_tag"]]


# -- health ------------------------------------------------------------------------------------


def test_health_and_readiness_with_feast_absent(world: dict[str, Any]) -> None:
    client: httpx.Client = world["client"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    details = ready.json()
    assert details["ready"] is True
    assert details["model"]["version"] == world["version"]
    assert details["model"]["run_id"] == world["build"]["run_id"]
    assert details["model"]["items"] == len(world["model"].item_ids)
    assert details["degraded"] is True
    assert details["feast"]["status"].startswith("unavailable")
    assert details["feast"]["stock"]["fallback"] is True
    # Down since start-up, so no lookup ever failed: the gauge and the open count say it.
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("recflow_feature")
    }
    assert samples["recflow_feature_store_available"] == 0
    assert samples['recflow_feature_lookup_failures_total{lookup="open"}'] >= 1


def test_the_loaded_heap_is_frozen_and_collections_are_timed(world: dict[str, Any]) -> None:
    """RECFLOW_SERVE_GC_FREEZE (default on): the start-up heap is out of the collector's
    reach once serving, and every collection is measured (the tail's first suspect)."""
    client: httpx.Client = world["client"]
    details = client.get("/readyz").json()
    # The model, the modules, BentoML's app: a service process holds well over 10^5.
    assert details["gc"]["frozen"] > 100_000
    for _ in range(50):  # requests allocate: young collections follow
        assert _recommend(world, {"user_id": "new", "k": 5}).status_code == 200

    def samples() -> dict[str, float]:
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("recflow_gc_pause_seconds_count")
        }

    # Pauses are recorded off the collector by a thread flushing every second.
    deadline = time.monotonic() + 10
    while (
        samples().get('recflow_gc_pause_seconds_count{generation="0"}', 0) < 1
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    found = samples()
    assert set(found) == {
        f'recflow_gc_pause_seconds_count{{generation="{g}"}}' for g in ("0", "1", "2")
    }
    assert found['recflow_gc_pause_seconds_count{generation="0"}'] >= 1


# -- the three paths ---------------------------------------------------------------------------


def test_known_user_gets_the_published_list(world: dict[str, Any]) -> None:
    model: RecModel = world["model"]
    settings = world["settings"]
    for user in ("user-0", "user-42", "user-119"):
        response = _recommend(
            world, {"user_id": user, "user_key": _key(world, user), "k": settings.publish_k}
        )
        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["source"] == "als" and payload["personal"] is True
        assert payload["model_version"] == world["version"]
        assert payload["model_run_id"] == world["build"]["run_id"]
        assert len(payload["request_id"]) == 32
        _, published = recs_for(settings, user)
        assert published["source"] == "als"
        assert _ids(payload) == [item["item_id"] for item in published["items"]]
        assert [i["score"] for i in payload["items"]] == pytest.approx(
            [i["score"] for i in published["items"]], abs=1e-5
        )
        row = model.user_index[user]
        idx, _ = model.recommend_rows(np.array([row]), 10)
        short = _recommend(world, {"user_id": user, "user_key": _key(world, user)}).json()
        assert _ids(short) == model.ids(idx)[0]


def test_fold_in_moves_towards_the_recent_items(world: dict[str, Any]) -> None:
    for taste in (0, 1, 2):
        recent = [f"item-{i}" for i in range(taste, 30, 3)][:4]
        response = _recommend(
            world,
            {"user_id": f"new-{taste}", "k": 10, "recent_item_ids": [*recent, "ghost-item"]},
        )
        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["source"] == "fold_in" and payload["recent_source"] == "request"
        assert payload["unknown_recent_item_ids"] == ["ghost-item"]
        assert {_cluster(i) for i in _ids(payload)} == {taste}
        assert not set(recent) & set(_ids(payload))


def test_popular_for_everyone_else(world: dict[str, Any]) -> None:
    _, popular = recs_for(world["settings"], "someone-never-seen")
    response = _recommend(world, {"user_id": "someone-never-seen", "k": 20})
    assert response.status_code == 200
    payload = response.json()
    assert payload["source"] == "popular" and payload["recent_source"] is None
    assert _ids(payload) == [item["item_id"] for item in popular["items"]][:20]
    only_unknown = _recommend(
        world, {"user_id": "x", "k": 5, "recent_item_ids": ["ghost-1", "ghost-2"]}
    ).json()
    assert only_unknown["source"] == "popular"
    assert only_unknown["unknown_recent_item_ids"] == ["ghost-1", "ghost-2"]
    excluded = _recommend(
        world, {"user_id": "x", "k": 5, "exclude_item_ids": _ids(payload)[:2]}
    ).json()
    assert _ids(excluded) == _ids(payload)[2:7]


def test_similar_items(world: dict[str, Any]) -> None:
    client: httpx.Client = world["client"]
    response = client.post("/similar", json={"item_id": "item-4", "k": 8})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["item_id"] == "item-4" and payload["model_version"] == world["version"]
    assert [_cluster(i) for i in _ids(payload)] == [1] * 8
    unknown = client.post("/similar", json={"item_id": "ghost"})
    assert unknown.status_code == 404 and "item_id" in unknown.json()["error"]


# -- bad input ---------------------------------------------------------------------------------

LONG = "x" * 129
BAD_RECOMMEND: list[tuple[Any, str]] = [
    ({"k": 5}, "user_id"),
    ({"user_id": 12345}, "user_id"),
    ({"user_id": None}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": LONG}, "user_id"),
    ({"user_id": "u", "k": 0}, "k"),
    ({"user_id": "u", "k": 101}, "k"),
    ({"user_id": "u", "k": -3}, "k"),
    ({"user_id": "u", "k": "10"}, "k"),
    ({"user_id": "u", "k": 1.5}, "k"),
    ({"user_id": "u", "k": True}, "k"),
    ({"user_id": "u", "recent_item_ids": "item-1"}, "recent_item_ids"),
    ({"user_id": "u", "recent_item_ids": ["item-1", 2]}, "recent_item_ids[1]"),
    ({"user_id": "u", "recent_item_ids": [LONG]}, "recent_item_ids[0]"),
    ({"user_id": "u", "recent_item_ids": ["item-1"] * 201}, "recent_item_ids"),
    ({"user_id": "u", "exclude_item_ids": {"a": 1}}, "exclude_item_ids"),
    ({"user_id": "u", "exclude_item_ids": ["i"] * 1001}, "exclude_item_ids"),
    ({"user_id": "u", "recent_items": ["item-1"]}, "recent_items"),
    ({"user_id": "u", "user_key": ""}, "user_key"),
    ({"user_id": "u", "user_key": "0" * 31}, "user_key"),
    ({"user_id": "u", "user_key": "0" * 33}, "user_key"),
    ({"user_id": "u", "user_key": "ABCDEF" + "0" * 26}, "user_key"),
    ({"user_id": "u", "user_key": "\u0660" * 32}, "user_key"),
    ({"user_id": "u", "user_key": 12345}, "user_key"),
    ([{"user_id": "u"}], "body"),
    ("user-1", "body"),
]


@pytest.mark.parametrize(("body", "field"), BAD_RECOMMEND)
def test_bad_recommend_requests_get_422_naming_the_field(
    world: dict[str, Any], body: Any, field: str
) -> None:
    response = _recommend(world, body)
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["detail"][0]["field"] == field
    assert payload["error"].startswith("invalid request: ") and field in payload["error"]


@pytest.mark.parametrize(
    ("content", "field"),
    [(b"", "user_id"), (b"{not json", "body"), (b"null", "body"), (b'{"user_id": "u",', "body")],
)
def test_unparseable_bodies_get_422(world: dict[str, Any], content: bytes, field: str) -> None:
    response = world["client"].post(
        "/recommend", content=content, headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "item_id"), ({"item_id": 3}, "item_id"), ({"item_id": "i", "k": 1000}, "k")],
)
def test_bad_similar_requests_get_422(world: dict[str, Any], body: Any, field: str) -> None:
    response = world["client"].post("/similar", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field


def test_no_input_produces_a_server_error(world: dict[str, Any]) -> None:
    odd: list[Any] = [
        {"user_id": "ü-ñ-😀", "k": 100},
        {"user_id": "u", "k": 100, "recent_item_ids": [], "exclude_item_ids": []},
        {"user_id": "u", "recent_item_ids": ["item-1"] * 200, "exclude_item_ids": None},
        {"user_id": "u", "exclude_item_ids": [f"item-{i}" for i in range(90)]},
        {"user_id": "user-1", "k": 100, "exclude_item_ids": [f"item-{i}" for i in range(89)]},
        {"user_id": "u", "k": 10**30},
        {"user_id": {"nested": ["x"]}},
        {"user_id": "u", "recent_item_ids": [None]},
        {"user_id": "ü-ñ-😀", "user_key": "0" * 32},
        {"user_id": "user-1", "user_key": "0" * 32 + "\n"},
        {"user_id": "user-1", "user_key": "😀" * 32},
    ]
    for body in odd:
        response = _recommend(world, body)
        assert response.status_code in (200, 422), (body, response.status_code, response.text)
    for raw in (b'{"user_id": "u", "k": 1e309}', b'{"user_id": "u", "k": NaN}', b"\xff\xfe"):
        response = world["client"].post("/recommend", content=raw)
        assert response.status_code == 422, (raw, response.status_code, response.text)
    # A lone surrogate cannot be hashed (UTF-8): refused or anonymous, never a 500.
    lone = world["client"].post(
        "/recommend", content=b'{"user_id": "\\ud800", "user_key": "' + b"0" * 32 + b'"}'
    )
    assert lone.status_code in (200, 422), lone.text
    assert lone.status_code == 422 or lone.json()["personal"] is False
    everything_excluded = _recommend(
        world, {"user_id": "u", "exclude_item_ids": [f"item-{i}" for i in range(90)]}
    ).json()
    assert everything_excluded["items"] == []


# -- metrics -----------------------------------------------------------------------------------


def test_metrics_count_by_source_and_time_scoring(world: dict[str, Any]) -> None:
    client: httpx.Client = world["client"]
    for body in (
        {"user_id": "user-1", "user_key": _key(world, "user-1")},
        {"user_id": "new", "recent_item_ids": ["item-1", "ghost-item"]},
        {"user_id": "new"},
    ):
        assert _recommend(world, body).status_code == 200
    _recommend(world, {"user_id": "u", "k": 0})
    text = client.get("/metrics").text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("recflow_")
    }
    for source in ("als", "fold_in", "popular"):
        assert samples[f'recflow_recommendations_total{{source="{source}"}}'] >= 1
        assert (
            samples[f'recflow_scoring_seconds_count{{endpoint="recommend",source="{source}"}}'] >= 1
        )
    assert samples['recflow_rejected_requests_total{endpoint="recommend",field="k"}'] >= 1
    assert samples["recflow_unknown_recent_items_total"] >= 1
    assert "bentoml_service_request_duration_seconds_bucket" in text


def test_rejected_request_labels_come_from_a_fixed_set(world: dict[str, Any]) -> None:
    """A field name a client makes up (or a list index) never becomes a label value: each
    would be a new Prometheus time series, minted at will."""
    client: httpx.Client = world["client"]
    made_up = "zz_made_up_field_9f1"
    for body in (
        {"user_id": "u", made_up: 1},
        {"user_id": "u", "recent_item_ids": ["item-1", 7]},
    ):
        assert _recommend(world, body).status_code == 422
    assert client.post("/similar", json={"item_id": "i", made_up: 1}).status_code == 422
    text = client.get("/metrics").text
    assert made_up not in text
    labels = {
        line.split("{", 1)[1].rsplit("}", 1)[0]
        for line in text.splitlines()
        if line.startswith("recflow_rejected_requests_total{")
    }
    fields = {
        part.split('"')[1] for label in labels for part in label.split(",") if "field=" in part
    }
    assert {"other", "recent_item_ids"} <= fields
    assert fields <= {
        "user_id",
        "k",
        "recent_item_ids",
        "exclude_item_ids",
        "user_key",
        "item_id",
        "body",
        "other",
    }


# -- personal data: who may see a user's list --------------------------------------------------


def _access_lines(world: dict[str, Any], wait_for: set[str]) -> list[dict[str, Any]]:
    """Every access log line, once those of the ``wait_for`` requests are there (the service
    writes in the background, in order: a request's line is there once a later one's is)."""
    folder = access_log_dir(world["settings"])
    deadline = time.monotonic() + 10
    while True:
        lines = [
            json.loads(line)
            for path in sorted(folder.glob("dt=*/*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        if {line["request_id"] for line in lines} >= wait_for or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_a_guessed_id_gets_nothing_personal(world: dict[str, Any]) -> None:
    """Without the backend's key a user id is a guess: the answer is a stranger's."""
    model: RecModel = world["model"]
    stranger = _recommend(world, {"user_id": "someone-never-seen", "k": 10}).json()
    assert stranger["source"] == "popular" and stranger["personal"] is False
    for user in ("user-5", "user-64"):
        truth = model.ids(model.recommend_rows(np.array([model.user_index[user]]), 10)[0])[0]
        assert _ids(stranger) != truth
        guesses = [
            {"user_id": user},
            {"user_id": user, "user_key": None},
            {"user_id": user, "user_key": _key(world, "user-6")},  # someone else's key
            {"user_id": user, "user_key": "0" * 32},
            {"user_id": user, "user_key": _key(world, user)[::-1]},
        ]
        for body in guesses:
            response = _recommend(world, {**body, "k": 10})
            assert response.status_code == 200, response.text
            payload = response.json()
            assert payload["source"] == "popular" and payload["personal"] is False, body
            assert _ids(payload) == _ids(stranger), body
        # Recent items the caller sends are still used: theirs, not the user's.
        carried = _recommend(world, {"user_id": user, "recent_item_ids": ["item-1"]}).json()
        assert carried["source"] == "fold_in" and carried["recent_source"] == "request"
        assert carried["personal"] is False and _ids(carried) != truth


def test_a_valid_key_gets_the_personal_list(world: dict[str, Any]) -> None:
    settings = world["settings"]
    _, published = recs_for(settings, "user-33")
    response = _recommend(world, {"user_id": "user-33", "user_key": _key(world, "user-33")})
    payload = response.json()
    assert payload["source"] == "als" and payload["personal"] is True
    assert _ids(payload) == [item["item_id"] for item in published["items"]][:10]


def test_a_denied_user_gets_nothing_personal_even_with_a_valid_key(
    world: dict[str, Any],
) -> None:
    """The deny list is written while the service runs (as the privacy DAG does): the next
    request already gets the stranger's answer, without a restart."""
    settings = world["settings"]
    user, other = "user-77", "user-78"
    body = {"user_id": user, "user_key": _key(world, user), "k": 10}
    before = _recommend(world, body).json()
    assert before["source"] == "als" and before["personal"] is True
    stranger = _recommend(world, {"user_id": "someone-never-seen", "k": 10}).json()

    subject = subjects.subject_hash(settings.hmac_secret(), user)
    subjects.add_to_deny_list(subjects.deny_list_path(settings), [subject])
    after = _recommend(world, body).json()
    assert after["source"] == "popular" and after["personal"] is False
    assert _ids(after) == _ids(stranger)
    still = _recommend(world, {"user_id": other, "user_key": _key(world, other)}).json()
    assert still["source"] == "als" and still["personal"] is True

    ids = {before["request_id"], after["request_id"]}
    lines = [line for line in _access_lines(world, ids) if line["request_id"] in ids]
    assert {(line["request_id"], line["outcome"]) for line in lines} == {
        (before["request_id"], "served"),
        (after["request_id"], "denied"),
    }
    assert {line["subject"] for line in lines} == {subject}
    metrics = world["client"].get("/metrics").text
    assert 'recflow_personal_access_total{outcome="denied"}' in metrics


def test_each_personal_read_is_in_the_access_log(world: dict[str, Any]) -> None:
    settings = world["settings"]
    users = ("user-90", "user-91", "user-92")
    personal = [_recommend(world, {"user_id": u, "user_key": _key(world, u)}).json() for u in users]
    guessed = [_recommend(world, {"user_id": u}).json() for u in users]
    assert all(p["personal"] for p in personal) and not any(g["personal"] for g in guessed)
    # One more personal read after the guesses: once its line is there, theirs would be.
    barrier = _recommend(world, {"user_id": "user-93", "user_key": _key(world, "user-93")})
    wanted = {p["request_id"] for p in personal} | {barrier.json()["request_id"]}
    asked = wanted | {g["request_id"] for g in guessed}
    lines = [line for line in _access_lines(world, wanted) if line["request_id"] in asked]
    assert sorted(line["request_id"] for line in lines) == sorted(wanted)  # guesses: no line
    hasher = subjects.subject_hasher(settings)
    by_request = {line["request_id"]: line for line in lines}
    for user, answer in zip(users, personal, strict=True):
        line = by_request[answer["request_id"]]
        assert line["subject"] == hasher(user) and user not in json.dumps(line)
        assert line["actor"] == f"service:{world['version']}"
        assert line["action"] == "recommend_personal" and line["outcome"] == "served"
        assert line["ts"].endswith("Z")
    text = world["client"].get("/metrics").text
    assert 'recflow_personal_access_total{outcome="verified"}' in text
    assert 'recflow_personal_access_total{outcome="no_key"}' in text
    dropped = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("recflow_access_log_dropped_total")
    ]
    assert sum(dropped) == 0


# -- the answer log and the control group (issue 15) -------------------------------------------


def test_control_users_get_popularity_online_as_in_the_published_json(
    world: dict[str, Any],
) -> None:
    """One decision (jobs.model.control): the published object and the online answer of a
    control user are the popular list, both marked control; a treatment user's are theirs."""
    from jobs.model.control import in_control

    settings, model = world["settings"], world["model"]
    users = [str(u) for u in model.user_ids]
    control = [u for u in users if in_control(u, settings)]
    treated = [u for u in users if not in_control(u, settings)][:3]
    assert control and treated  # 5 % of 120 users
    _, popular = recs_for(settings, "someone-never-seen")
    for user in control[:3]:
        answer = _recommend(world, {"user_id": user, "user_key": _key(world, user)}).json()
        _, published = recs_for(settings, user)
        assert (answer["group"], answer["source"], answer["personal"]) == (
            "control",
            "popular",
            False,
        )
        assert (published["group"], published["source"]) == ("control", "popular")
        assert _ids(answer) == [i["item_id"] for i in published["items"]][:10]
        assert _ids(answer) == [i["item_id"] for i in popular["items"]][:10]
    for user in treated:
        answer = _recommend(world, {"user_id": user, "user_key": _key(world, user)}).json()
        assert (answer["group"], answer["source"]) == ("treatment", "als")
        assert recs_for(settings, user)[1]["group"] == "treatment"


def test_every_answer_is_in_the_answer_log_by_subject_hash(world: dict[str, Any]) -> None:
    from jobs.answer_log import answers_dir

    settings = world["settings"]
    asked = {
        "user-5": _recommend(world, {"user_id": "user-5", "user_key": _key(world, "user-5")}),
        "user-6": _recommend(world, {"user_id": "user-6"}),  # no key: still an answer
        "nobody": _recommend(world, {"user_id": "nobody", "k": 3}),
    }
    answers = {u: r.json() for u, r in asked.items()}
    wanted = {a["request_id"] for a in answers.values()}
    folder = answers_dir(settings)
    deadline = time.monotonic() + 10
    while True:  # the service writes in the background
        lines = [
            json.loads(line)
            for path in sorted(folder.glob("dt=*/*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        by_request = {line["request_id"]: line for line in lines if line["request_id"] in wanted}
        if len(by_request) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    hasher = subjects.subject_hasher(settings)
    for user, answer in answers.items():
        line = by_request[answer["request_id"]]
        assert user not in json.dumps(line) and line["subject"] == hasher(user)
        assert (line["source"], line["group"]) == (answer["source"], answer["group"])
        assert line["model_version"] == world["version"]
        assert [(i["item_id"], i["rank"]) for i in line["items"]] == [
            (i["item_id"], i["rank"]) for i in answer["items"]
        ]
    metrics = world["client"].get("/metrics").text
    dropped = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("recflow_answer_log_dropped_total")
    ]
    assert sum(dropped) == 0
