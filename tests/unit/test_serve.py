"""Online scoring without BentoML: the three paths, fold-in maths, limits and Feast fallback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st
from pydantic import ValidationError
from support import clustered_model

from jobs.config import load_settings
from jobs.model import stock
from jobs.model.artifact import RecModel
from jobs.serve import answers, feature_source, schemas

LIMITS = schemas.Limits(max_k=100, max_recent_items=200)
Recommend, Similar = schemas.request_types(LIMITS)


@pytest.fixture(scope="module")
def model() -> RecModel:
    return clustered_model()


@pytest.fixture(scope="module")
def online(model: RecModel) -> answers.OnlineModel:
    return answers.OnlineModel.of(model, name="recflow-als", version="7", run_id="abc")


def cluster(item_id: str) -> int:
    """clustered_model puts item i in cluster i % 3."""
    return int(item_id.split("-")[1]) % 3


def ids(response: schemas.RecommendResponse | schemas.SimilarResponse) -> list[str]:
    return [item.item_id for item in response.items]


# -- known users: the published list ----------------------------------------------------------


def test_known_user_gets_the_published_list(model: RecModel, online: answers.OnlineModel) -> None:
    in_stock = {"item-0": False, "item-4": False, "item-9": True}
    mask = stock.stock_mask(model, in_stock)
    for user in ("user-0", "user-17", "user-101"):
        row = model.user_index[user]
        published, scores = model.recommend_rows(np.array([row]), 25, allowed=mask)
        got = answers.recommend(online, Recommend(user_id=user, k=25), stock_mask=mask)
        assert got.source == "als"
        assert ids(got) == model.ids(published)[0]
        assert [i.score for i in got.items] == pytest.approx(scores[0].tolist())
        assert [i.rank for i in got.items] == list(range(1, 26))
        assert not {"item-0", "item-4"} & set(ids(got))
    assert got.model_version == "7" and got.model_run_id == "abc" and len(got.request_id) == 32


def test_known_user_exclusions_and_no_feast_lookup(online: answers.OnlineModel) -> None:
    full = ids(answers.recommend(online, Recommend(user_id="user-3", k=10)))

    def lookup(user_id: str) -> list[str]:
        raise AssertionError("a known user needs no recent items")

    got = answers.recommend(
        online,
        Recommend(user_id="user-3", k=10, exclude_item_ids=[*full[:2], "no-such-item"]),
        recent_lookup=lookup,
    )
    assert ids(got)[:8] == full[2:]
    assert not set(full[:2]) & set(ids(got))


def test_stock_mask_counts_absent_items_as_in_stock(model: RecModel) -> None:
    assert stock.stock_mask(model, None) is None
    mask = stock.stock_mask(model, {"item-1": False, "item-2": True, "ghost": False})
    assert mask is not None and mask.dtype == bool and len(mask) == len(model.item_ids)
    assert not mask[model.item_index["item-1"]] and mask.sum() == len(mask) - 1


# -- fold-in ----------------------------------------------------------------------------------


@pytest.mark.parametrize("taste", [0, 1, 2])
def test_fold_in_moves_towards_the_recent_items_cluster(
    online: answers.OnlineModel, taste: int
) -> None:
    recent = [f"item-{i}" for i in range(taste, 30, 3)][:4]
    got = answers.recommend(online, Recommend(user_id="new-user", k=15, recent_item_ids=recent))
    assert got.source == "fold_in" and got.recent_source == "request"
    assert [cluster(i) for i in ids(got)] == [taste] * 15
    assert not set(recent) & set(ids(got)), "recent items are not recommended back"


def test_fold_in_direction_follows_the_weight_of_evidence(online: answers.OnlineModel) -> None:
    """Mostly cluster 2 with one cluster-0 item: cluster 2 leads, cluster 0 follows."""
    recent = ["item-2", "item-5", "item-8", "item-11", "item-0"]
    got = answers.recommend(online, Recommend(user_id="new", k=20, recent_item_ids=recent))
    clusters = [cluster(i) for i in ids(got)]
    assert clusters[:5] == [2] * 5
    assert clusters.count(2) > clusters.count(0) > clusters.count(1)


def test_fold_in_solves_the_implicit_als_objective(online: answers.OnlineModel) -> None:
    """The folded-in vector is the minimiser of Spark's implicit-ALS loss for one user.

    L(x) = Σ_all items c_i (p_i − x·y_i)² + reg · n · |x|², c_i = 1 + alpha·w_i on the
    interacted items (p_i = 1) and c = 1, p = 0 elsewhere; the gradient vanishes there.
    """
    y = online.model.item_factors.astype(np.float64)
    rows = np.array([3, 10, 44, 71])
    weights = np.array([1.0, 2.0, 1.0, 8.0])
    reg, alpha = 0.3, 1.5
    x = answers.fold_in(online.model.item_factors, y.T @ y, rows, weights, reg, alpha).astype(
        np.float64
    )
    c = np.ones(len(y))
    p = np.zeros(len(y))
    c[rows] += alpha * weights
    p[rows] = 1.0
    gradient = 2 * (y.T @ (c * (y @ x - p))) + 2 * reg * len(rows) * x
    assert np.abs(gradient).max() < 1e-4 * np.abs(y.T @ (c * p)).max()
    # Regularisation shrinks: a larger reg gives a shorter vector.
    x_strong = answers.fold_in(online.model.item_factors, y.T @ y, rows, weights, 30.0, alpha)
    assert np.linalg.norm(x_strong) < np.linalg.norm(x)


def test_fold_in_uses_the_models_reg_and_alpha(model: RecModel) -> None:
    online = answers.OnlineModel.of(model)
    assert (online.reg, online.alpha) == (model.params["reg"], model.params["alpha"])
    bare = dataclasses.replace(model, params={})
    defaults = answers.OnlineModel.of(bare)
    settings = load_settings()
    assert (defaults.reg, defaults.alpha) == (settings.als_reg, settings.als_alpha)


def test_repeated_recent_items_count_as_more_weight(online: answers.OnlineModel) -> None:
    once = answers.recommend(
        online, Recommend(user_id="n", k=5, recent_item_ids=["item-0", "item-1"])
    )
    thrice = answers.recommend(
        online, Recommend(user_id="n", k=5, recent_item_ids=["item-0"] * 3 + ["item-1"])
    )
    assert cluster(ids(thrice)[0]) == 0
    assert ids(once) != ids(thrice)


def test_unknown_recent_ids_are_ignored_and_reported(online: answers.OnlineModel) -> None:
    got = answers.recommend(
        online,
        Recommend(user_id="new", k=5, recent_item_ids=["ghost-1", "item-1", "ghost-2"]),
    )
    assert got.source == "fold_in" and got.unknown_recent_item_ids == ["ghost-1", "ghost-2"]
    only_unknown = answers.recommend(
        online, Recommend(user_id="new", k=5, recent_item_ids=["ghost-1"])
    )
    assert only_unknown.source == "popular"
    assert only_unknown.unknown_recent_item_ids == ["ghost-1"]


def test_recent_items_from_the_feature_store(online: answers.OnlineModel) -> None:
    asked: list[str] = []

    def lookup(user_id: str) -> list[str]:
        asked.append(user_id)
        return ["item-2", "item-5"]

    got = answers.recommend(online, Recommend(user_id="session-9", k=5), recent_lookup=lookup)
    assert asked == ["session-9"]
    assert got.source == "fold_in" and got.recent_source == "feast"
    assert {cluster(i) for i in ids(got)} == {2}
    # Items in the request win: the store is not asked.
    answers.recommend(
        online, Recommend(user_id="session-9", k=5, recent_item_ids=["item-1"]), lookup
    )
    assert asked == ["session-9"]
    assert answers.needs_recent_lookup(online, Recommend(user_id="session-9"))
    assert not answers.needs_recent_lookup(online, Recommend(user_id="user-1"))


# -- known users: the session since training ---------------------------------------------


def als_consistent(model: RecModel) -> answers.OnlineModel:
    """The model with each user's vector solved from their seen items, as training would:
    the session update starts from a vector that agrees with the history it keeps."""
    online = answers.OnlineModel.of(model)
    seen = model.seen
    users = np.stack(
        [
            answers.fold_in(
                model.item_factors,
                online.gram,
                seen.indices[seen.indptr[r] : seen.indptr[r + 1]].astype(np.int64),
                np.ones(seen.indptr[r + 1] - seen.indptr[r]),
                online.reg,
                online.alpha,
            )
            for r in range(len(model.user_ids))
        ]
    )
    return answers.OnlineModel.of(dataclasses.replace(model, user_factors=users))


def _other_cluster_items(online: answers.OnlineModel, user: str, n: int) -> list[str]:
    """``n`` items the user has not seen, from a cluster their own vector does not favour."""
    model = online.model
    row = model.user_index[user]
    seen = set(model.seen.indices[model.seen.indptr[row] : model.seen.indptr[row + 1]].tolist())
    mine = int(np.argmax(model.user_factors[row][:3]))
    return [
        str(i) for j, i in enumerate(model.item_ids) if j % 3 == (mine + 1) % 3 and j not in seen
    ][:n]


def test_known_user_with_new_items_gets_a_list_that_follows_the_session(
    model: RecModel,
) -> None:
    online = als_consistent(model)
    user = "user-17"
    clicked = _other_cluster_items(online, user, 3)
    static = answers.recommend(online, Recommend(user_id=user, k=10), session=True)
    asked: list[str] = []

    def lookup(user_id: str) -> list[str]:
        asked.append(user_id)
        return clicked

    got = answers.recommend(
        online, Recommend(user_id=user, k=10), recent_lookup=lookup, session=True
    )
    assert asked == [user]
    assert static.source == "als" and got.source == "als_session"
    assert got.recent_source == "feast" and got.personal
    assert not set(clicked) & set(ids(got)), "what they just saw is not offered again"
    row = online.model.user_index[user]
    seen = online.model.seen.indices[
        online.model.seen.indptr[row] : online.model.seen.indptr[row + 1]
    ]
    assert not {str(online.model.item_ids[j]) for j in seen} & set(ids(got))
    new_cluster = cluster(clicked[0])
    share = sum(cluster(i) == new_cluster for i in ids(got))
    assert share >= 5 > sum(cluster(i) == new_cluster for i in ids(static))


def test_known_user_whose_recent_items_were_all_trained_on_gets_the_published_list(
    model: RecModel, online: answers.OnlineModel
) -> None:
    user = "user-5"
    row = model.user_index[user]
    trained = [
        str(model.item_ids[j])
        for j in model.seen.indices[model.seen.indptr[row] : model.seen.indptr[row + 1]]
    ]
    published = answers.recommend(online, Recommend(user_id=user, k=10))
    got = answers.recommend(
        online, Recommend(user_id=user, k=10), recent_lookup=lambda _u: trained, session=True
    )
    assert got.source == "als" and got.recent_source is None
    assert ids(got) == ids(published)


def test_session_answers_only_when_asked_and_never_for_control_or_strangers(
    model: RecModel, online: answers.OnlineModel
) -> None:
    user = "user-17"
    clicked = _other_cluster_items(online, user, 2)
    with_items = Recommend(user_id=user, k=10, recent_item_ids=clicked)
    assert answers.recommend(online, with_items).source == "als"  # session off
    on = answers.recommend(online, with_items, session=True)
    assert on.source == "als_session" and on.recent_source == "request"
    control = answers.recommend(online, with_items, session=True, group="control")
    assert control.source == "popular"
    stranger = answers.recommend(online, with_items, session=True, personal=False)
    assert stranger.source == "fold_in" and not stranger.personal
    assert answers.needs_recent_lookup(online, Recommend(user_id=user), session=True)
    assert not answers.needs_recent_lookup(
        online, Recommend(user_id=user), personal=False, session=True
    )
    assert not answers.needs_recent_lookup(online, with_items, session=True)


# -- popular ----------------------------------------------------------------------------------


def test_popular_for_everyone_else_in_stock_only(
    model: RecModel, online: answers.OnlineModel
) -> None:
    # The public (differentially private) ranking, not the exact one: strangers are public.
    order = [str(model.item_ids[j]) for j in np.argsort(-model.public_popularity, kind="stable")]
    got = answers.recommend(online, Recommend(user_id="stranger", k=10), lambda _: [])
    assert got.source == "popular" and got.recent_source is None
    assert ids(got) == order[:10]
    assert [i.score for i in got.items] == sorted((i.score for i in got.items), reverse=True)

    mask = stock.stock_mask(model, {order[0]: False, order[3]: False})
    filtered = answers.recommend(
        online,
        Recommend(user_id="stranger", k=10, exclude_item_ids=[order[1]]),
        stock_mask=mask,
    )
    assert ids(filtered) == [order[2], *order[4:13]]


def test_k_larger_than_the_catalog_returns_what_exists(online: answers.OnlineModel) -> None:
    mask = np.zeros(len(online.model.item_ids), dtype=bool)
    mask[:3] = True
    got = answers.recommend(online, Recommend(user_id="stranger", k=100), stock_mask=mask)
    assert sorted(ids(got)) == ["item-0", "item-1", "item-2"]


# -- similar ----------------------------------------------------------------------------------


def test_similar_items_share_the_cluster(model: RecModel, online: answers.OnlineModel) -> None:
    got = answers.similar(online, "item-4", 10)
    assert "item-4" not in ids(got)
    assert [cluster(i) for i in ids(got)] == [1] * 10
    scores = [i.score for i in got.items]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 + 1e-6 for s in scores)
    mask = stock.stock_mask(model, {ids(got)[0]: False})
    assert ids(answers.similar(online, "item-4", 9, mask)) == ids(got)[1:]
    with pytest.raises(answers.UnknownItemError):
        answers.similar(online, "ghost", 5)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"k": 5}, "user_id"),
        ({"user_id": 7}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "u" * 129}, "user_id"),
        ({"user_id": "u", "k": 0}, "k"),
        ({"user_id": "u", "k": 101}, "k"),
        ({"user_id": "u", "k": "10"}, "k"),
        ({"user_id": "u", "k": 2.5}, "k"),
        ({"user_id": "u", "recent_item_ids": "item-1"}, "recent_item_ids"),
        ({"user_id": "u", "recent_item_ids": ["i"] * 201}, "recent_item_ids"),
        ({"user_id": "u", "recent_item_ids": ["ok", 3]}, "recent_item_ids[1]"),
        ({"user_id": "u", "recent_item_ids": ["x" * 129]}, "recent_item_ids[0]"),
        ({"user_id": "u", "exclude_item_ids": ["i"] * 1001}, "exclude_item_ids"),
        ({"user_id": "u", "recent_items": ["i"]}, "recent_items"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, object], field: str) -> None:
    import json

    with pytest.raises(ValidationError) as info:
        Recommend.model_validate_json(json.dumps(body))
    payload = schemas.validation_error_body(info.value.errors())
    assert payload["detail"][0]["field"] == field
    assert field in payload["error"]


def test_limits_come_from_settings() -> None:
    settings = load_settings(serve_max_k=20, serve_max_recent_items=3)
    recommend, similar = schemas.request_types(schemas.Limits.from_settings(settings))
    recommend(user_id="u", k=20, recent_item_ids=["a", "b", "c"])
    with pytest.raises(ValidationError):
        recommend(user_id="u", k=21)
    with pytest.raises(ValidationError):
        recommend(user_id="u", recent_item_ids=["a", "b", "c", "d"])
    with pytest.raises(ValidationError):
        similar(item_id="i", k=21)
    assert recommend.model_json_schema()["properties"]["k"]["maximum"] == 20


def test_unparseable_body_is_reported_as_body() -> None:
    with pytest.raises(ValidationError) as info:
        Recommend.model_validate_json(b"{not json")
    assert schemas.validation_error_body(info.value.errors())["detail"][0]["field"] == "body"


# -- the feature store seam ------------------------------------------------------------------


def test_without_a_feature_store_everything_is_in_stock_and_nobody_has_recent_items(
    tmp_path: Path, model: RecModel
) -> None:
    """The seam's fallback (opening a real, empty store is in tests/integration/test_bento)."""
    source = feature_source.FeatureSource(load_settings(data_root=tmp_path / "var"))
    assert not source.available and source.status == "not opened"
    assert source.recent("user-1") == [] and source.stock(["item-1"]) is None
    state = source.load_stock(model)
    assert state.mask is None and state.fallback and state.out_of_stock == 0
    assert "all items count as in stock" in state.source


def test_serve_env_hands_the_service_an_absolute_data_root(tmp_path, monkeypatch) -> None:
    # `bentoml serve` runs inside the Bento's folder: a relative data root there would
    # open an empty Feast store (found in `make up`).
    from jobs.config import load_settings
    from jobs.serve.bento_build import serve_env

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))  # restored afterwards
    env = serve_env(load_settings(data_root="var"))
    assert env["RECFLOW_DATA_ROOT"] == str(tmp_path / "var")
    assert env["BENTOML_HOME"] == str(tmp_path / "bentoml")


@hypothesis.given(st.text(max_size=40), st.sampled_from(["recommend", "similar", "nope"]))
def test_metric_field_labels_come_from_a_fixed_set(field_name: str, endpoint: str) -> None:
    from jobs.serve.schemas import METRIC_FIELDS, OTHER_FIELD, metric_field

    label = metric_field(endpoint, field_name)
    assert label in METRIC_FIELDS.get(endpoint, frozenset()) | {OTHER_FIELD}
    assert metric_field("recommend", "recent_item_ids[3]") == "recent_item_ids"
