"""The hybrid score: content projection, profiles, the artifact, online answers, the pick."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from support import DIMS, clustered_model, hybrid_model, style, styled_content

from jobs.config import load_settings
from jobs.model import content_map, forget, hybrid
from jobs.model.artifact import RecModel
from jobs.model.ranking import Seen
from jobs.serve import answers, schemas
from jobs.train import blend
from jobs.train.splits import Holdout

Recommend, _ = schemas.request_types(schemas.Limits(max_k=100, max_recent_items=200))


def brute_force(model: RecModel, weight: float, k: int) -> list[list[int]]:
    """Every user's top k by x·y + w p·c in float64, seen items out, ties by index."""
    assert model.item_content is not None and model.user_profiles is not None
    scores = model.user_factors.astype(np.float64) @ model.item_factors.T.astype(np.float64)
    scores += weight * hybrid.unit(model.user_profiles).astype(np.float64) @ model.item_content.T
    out = []
    for u in range(len(model.user_ids)):
        seen = set(model.seen.indices[model.seen.indptr[u] : model.seen.indptr[u + 1]].tolist())
        order = sorted(
            (j for j in range(len(model.item_ids)) if j not in seen),
            key=lambda j: (-scores[u, j], j),
        )
        out.append(order[:k])
    return out


# -- projection and profiles ---------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(0, 30), st.just(12)),
        elements=st.one_of(st.floats(-1e6, 1e6, width=32), st.sampled_from([0.0, np.nan, np.inf])),
    )
)
def test_projections_are_unit_or_zero_whatever_the_vectors(vectors: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    space = hybrid.ContentSpace.fit(rng.normal(size=(40, 12)), dims=5)
    assert space is not None
    out = space.project(vectors)
    assert out.shape == (len(vectors), 5) and np.isfinite(out).all()
    norms = np.linalg.norm(out, axis=1)
    bad = ~np.isfinite(vectors).all(axis=1) | (np.abs(vectors).sum(axis=1) == 0)
    assert np.all(norms[bad] == 0)
    assert np.all((np.abs(norms[~bad] - 1) < 1e-4) | (norms[~bad] == 0))


def test_a_space_needs_enough_items_with_text_and_keeps_at_most_their_dimensions() -> None:
    rng = np.random.default_rng(2)
    few = np.vstack([rng.normal(size=(hybrid.MIN_ITEMS - 1, 8)), np.zeros((50, 8))])
    assert hybrid.ContentSpace.fit(few, dims=4) is None  # the zero rows (no text) don't count
    space = hybrid.ContentSpace.fit(rng.normal(size=(12, 8)), dims=32)
    assert space is not None and space.basis.shape == (8, 8)
    np.testing.assert_allclose(space.basis.T @ space.basis, np.eye(8), atol=1e-5)


def test_a_profile_is_the_users_latest_items_whatever_the_row_order() -> None:
    content = np.eye(3, dtype=np.float32)  # item 0, 1, 2 point along their own axis
    t = pd.Timestamp("2026-11-01")
    frame = pd.DataFrame(
        {
            "u": [0, 0, 0, 0, 0, 1],
            "i": [0, 0, 0, 1, 1, 2],
            "last_ts": [
                t,
                t + pd.Timedelta("1h"),
                t + pd.Timedelta("2h"),
                t + pd.Timedelta("3d"),
                t + pd.Timedelta("4d"),
                t,
            ],
        }
    )
    latest_two = hybrid.profiles(content, frame, n_users=3, recent=2)
    np.testing.assert_allclose(latest_two[0], [0, 1, 0], atol=1e-6)  # the two newest: item 1
    everything = hybrid.profiles(content, frame, n_users=3, recent=10)
    np.testing.assert_allclose(everything[0], [0.6, 0.4, 0], atol=1e-6)  # 3 of item 0, 2 of 1
    np.testing.assert_allclose(everything[1], [0, 0, 1], atol=1e-6)
    assert not everything[2].any()  # a user without rows: no profile, no content term
    shuffled = frame.sample(frac=1, random_state=3)
    np.testing.assert_array_equal(hybrid.profiles(content, shuffled, 3, 2), latest_two)


def test_a_session_profile_is_what_a_retraining_would_store() -> None:
    content = styled_content(30)
    history, fresh = np.array([0, 1, 2, 6]), np.array([3, 4, 5])
    stored = hybrid.profile_of(content, history)
    same = hybrid.session_profile(stored, len(history), 20, content, np.zeros(0, np.int64))
    np.testing.assert_array_equal(same, stored)
    # Room for all: exactly the mean over history and session, as training computes it.
    moved = hybrid.session_profile(stored, len(history), 20, content, fresh)
    np.testing.assert_allclose(
        moved, hybrid.profile_of(content, np.concatenate([fresh, history])), atol=1e-6
    )
    # A full window: the session's items push out as many old ones (taken at the mean).
    full = hybrid.profile_of(content, np.arange(6, 10))  # style 0 and 1 items
    pushed = hybrid.session_profile(full, 4, 4, content, fresh)
    np.testing.assert_allclose(
        pushed, (full + content[fresh].astype(np.float64).sum(axis=0)) / 4, atol=1e-6
    )
    assert hybrid.session_profile(full, 4, 4, content, np.arange(3, 12))[1] == pytest.approx(
        hybrid.profile_of(content, np.arange(3, 7))[1], abs=1e-6
    )  # more fresh items than the window: only the latest ``recent`` count


def test_a_fold_in_profile_takes_the_latest_distinct_items() -> None:
    rows = np.array([5, 5, 3, 9, 3, 7, 1])  # newest first, with repeats
    np.testing.assert_array_equal(hybrid.latest_distinct(rows, 3), [5, 3, 9])
    np.testing.assert_array_equal(hybrid.latest_distinct(rows, 10), [5, 3, 9, 7, 1])


# -- the artifact --------------------------------------------------------------------------


def test_the_model_ranks_by_factors_plus_weighted_content_similarity() -> None:
    model = hybrid_model(weight=0.7)
    idx, scores = model.recommend_rows(np.arange(len(model.user_ids)), 10)
    assert [list(r) for r in idx] == brute_force(model, 0.7, 10)
    u, j = 4, int(idx[4, 0])
    expected = model.user_factors[u] @ model.item_factors[j] + 0.7 * (
        hybrid.unit(model.user_profiles[u]) @ model.item_content[j]
    )
    assert scores[4, 0] == pytest.approx(expected, rel=1e-5)
    # The content term changes lists: with ALS alone they are not the same.
    plain = dataclasses.replace(model, params={**model.params, "hybrid_weight": 0.0})
    assert [list(r) for r in plain.recommend_rows(np.arange(120), 10)[0]] != [list(r) for r in idx]


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf"), "heavy", None])
def test_a_weight_that_is_not_positive_and_finite_is_als_alone(weight: object) -> None:
    model = hybrid_model()
    odd = dataclasses.replace(model, params={**model.params, "hybrid_weight": weight})
    bare = clustered_model()
    rows = np.arange(len(bare.user_ids))
    np.testing.assert_array_equal(odd.recommend_rows(rows, 10)[0], bare.recommend_rows(rows, 10)[0])


def test_the_hybrid_arrays_survive_save_and_load(tmp_path: Path) -> None:
    model = hybrid_model()
    loaded = RecModel.load(model.save(tmp_path / "model.npz"))
    np.testing.assert_array_equal(loaded.item_content, model.item_content)
    np.testing.assert_array_equal(loaded.user_profiles, model.user_profiles)
    rows = np.arange(len(model.user_ids))
    np.testing.assert_array_equal(
        loaded.recommend_rows(rows, 10)[0], model.recommend_rows(rows, 10)[0]
    )
    plain = RecModel.load(clustered_model().save(tmp_path / "plain.npz"))
    assert plain.item_content is None and plain.user_profiles is None and plain.hybrid_weight == 0


def test_inconsistent_hybrid_arrays_are_refused() -> None:
    model = hybrid_model()
    with pytest.raises(ValueError, match="go together"):
        dataclasses.replace(model, user_profiles=None)
    with pytest.raises(ValueError, match="expected"):
        dataclasses.replace(model, item_content=model.item_content[:-1])
    with pytest.raises(ValueError, match="expected"):
        dataclasses.replace(model, user_profiles=model.user_profiles[:, :2])
    bad = model.item_content.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        dataclasses.replace(model, item_content=bad)


def test_erasure_takes_a_users_profile_with_their_row() -> None:
    model = hybrid_model()
    gone, removed = forget.without_users(model, ["user-3", "user-50"])
    assert removed == 2 and gone.user_profiles.shape == (118, DIMS)
    keep = [u for u in range(120) if u not in (3, 50)]
    np.testing.assert_array_equal(gone.user_profiles, model.user_profiles[keep])
    np.testing.assert_array_equal(
        gone.recommend_rows(np.arange(118), 10)[0], model.recommend_rows(np.array(keep), 10)[0]
    )


def test_cold_items_join_with_no_content_term_until_attached() -> None:
    model = hybrid_model()
    rng = np.random.default_rng(4)
    vecs = rng.normal(size=(20, 6)).astype(np.float32)
    cmap = content_map.fit(vecs, rng.normal(size=(20, 8)), "test")
    assert cmap is not None
    grown = model.with_cold_items(np.array(["new-1", "new-2"]), vecs[:2], cmap)
    assert grown.item_content.shape == (92, DIMS) and not grown.item_content[90:].any()


# -- online answers ------------------------------------------------------------------------


def test_online_known_user_is_the_published_hybrid_list() -> None:
    model = hybrid_model()
    online = answers.OnlineModel.of(model)
    for user in ("user-0", "user-77"):
        got = answers.recommend(online, Recommend(user_id=user, k=10))
        published = model.recommend_rows(np.array([model.user_index[user]]), 10)[0]
        assert got.source == "als" and [i.item_id for i in got.items] == model.ids(published)[0]


def test_a_fold_in_user_gets_the_content_term_of_their_recent_items() -> None:
    heavy = answers.OnlineModel.of(hybrid_model(weight=5.0))
    plain = answers.OnlineModel.of(clustered_model())
    recent = ["item-3", "item-4", "item-5", "item-9"]  # style 1
    got = answers.recommend(heavy, Recommend(user_id="new", k=20, recent_item_ids=recent))
    base = answers.recommend(plain, Recommend(user_id="new", k=20, recent_item_ids=recent))
    assert got.source == base.source == "fold_in"

    def style_share(r: schemas.RecommendResponse) -> int:
        return sum(style(int(i.item_id.split("-")[1])) == 1 for i in r.items)

    assert style_share(got) >= 18 and style_share(got) > style_share(base)


def test_a_session_moves_the_content_term_too() -> None:
    model = hybrid_model(weight=5.0)
    online = answers.OnlineModel.of(model)
    user = "user-8"
    row = model.user_index[user]
    seen = set(model.seen.indices[model.seen.indptr[row] : model.seen.indptr[row + 1]].tolist())
    mine = 0 if model.user_profiles[row, 0] > model.user_profiles[row, 1] else 1
    other = [f"item-{j}" for j in range(90) if style(j) != mine and j not in seen][:8]
    static = answers.recommend(online, Recommend(user_id=user, k=10), session=True)
    got = answers.recommend(
        online, Recommend(user_id=user, k=10, recent_item_ids=other), session=True
    )
    assert got.source == "als_session"

    def share(r: schemas.RecommendResponse) -> int:
        return sum(style(int(i.item_id.split("-")[1])) != mine for i in r.items)

    assert share(got) > share(static)


# -- the search's pick ---------------------------------------------------------------------


def _pick_case(
    informative: bool,
) -> tuple[blend.TrainContent, Holdout, np.ndarray, np.ndarray, pd.DataFrame]:
    """300 users of one style each; ALS factors either random noise or the truth."""
    rng = np.random.default_rng(7)
    n_users, n_items = 300, 60
    likes = rng.integers(0, 2, n_users)
    pool = {s: [j for j in range(n_items) if style(j) == s] for s in (0, 1)}
    rows = []
    for u in range(n_users):
        picks = rng.choice(pool[likes[u]], 6, replace=False)
        rows += [(u, int(j), n) for n, j in enumerate(picks)]
    frame = pd.DataFrame(rows, columns=["u", "i", "n"])
    frame["weight"] = 1.0
    frame["last_ts"] = pd.Timestamp("2026-11-01") + pd.to_timedelta(frame["n"], "h")
    train, valid = frame[frame["n"] < 4], frame[frame["n"] >= 4]
    truth = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    if informative:  # content knows the style; the factors know nothing
        u = rng.normal(size=(n_users, 2)).astype(np.float32)
        v = rng.normal(size=(n_items, 2)).astype(np.float32)
        vectors = np.vstack([truth[style(j)] for j in range(n_items)]) * 0.9 + rng.normal(
            0, 0.1, (n_items, 2)
        )
    else:  # the factors know the style; the content is noise
        u = truth[likes] + rng.normal(0, 0.05, (n_users, 2)).astype(np.float32)
        v = np.vstack([truth[style(j)] for j in range(n_items)]).astype(np.float32)
        vectors = rng.normal(size=(n_items, 2))
    s = load_settings(hybrid_dims=2, hybrid_weights=[0.0, 0.5, 2.0])
    ids = np.array([f"i{j}" for j in range(n_items)])
    content = blend.TrainContent.of(s, ids, (ids, vectors.astype(np.float32), "test"))
    assert content is not None
    return content, Holdout.of(train, valid, n_users), u, v, train


def test_the_search_takes_content_when_it_helps() -> None:
    content, holdout, u, v, train = _pick_case(informative=True)
    profiles = content.profiles(train, len(u))
    weight, found = blend.pick_weight(holdout, u, v, content, profiles, 10, len(v))
    assert weight > 0
    assert found[weight]["ndcg_at_10"] > 1.5 * found[0.0]["ndcg_at_10"]


def test_the_search_keeps_als_alone_when_content_is_noise() -> None:
    content, holdout, u, v, train = _pick_case(informative=False)
    profiles = content.profiles(train, len(u))
    weight, found = blend.pick_weight(holdout, u, v, content, profiles, 10, len(v))
    assert weight == 0.0 and set(found) == {0.0, 0.5, 2.0}


def test_no_content_means_als_alone() -> None:
    s = load_settings()
    assert blend.TrainContent.of(s, np.array(["a"]), None) is None
    off = load_settings(hybrid_weights=[0.0])
    ids = np.array([f"i{j}" for j in range(20)])
    vecs = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    # Content is still read (an incumbent's recipe may weigh it), but only 0 is tried.
    content = blend.TrainContent.of(off, ids, (ids, vecs, "m"))
    assert content is not None and content.weights == (0.0,)


def test_the_final_model_gives_cold_items_their_content_term() -> None:
    rng = np.random.default_rng(9)
    base = clustered_model()
    vecs = rng.normal(size=(95, 8)).astype(np.float32)
    ids = np.array([f"item-{j}" for j in range(95)])  # 5 the model never trained on
    cmap = content_map.fit(vecs[:90], base.item_factors, "test")
    assert cmap is not None
    grown = base.with_cold_items(ids[90:], vecs[90:], cmap)
    s = load_settings(hybrid_dims=4)
    content = blend.TrainContent.of(s, base.item_ids, (ids, vecs, "test"))
    assert content is not None
    seen = base.seen
    frame = pd.DataFrame(
        {
            "u": np.repeat(np.arange(120), np.diff(seen.indptr)),
            "i": seen.indices,
            "last_ts": pd.Timestamp("2026-11-01"),
        }
    )
    model = blend.attach(
        dataclasses.replace(grown, params={**grown.params, "hybrid_weight": 0.3}),
        content,
        ids,
        vecs,
        frame,
    )
    assert model.item_content.shape == (95, 4) and model.user_profiles.shape == (120, 4)
    np.testing.assert_allclose(np.linalg.norm(model.item_content[90:], axis=1), 1, atol=1e-5)
    assert model.params["hybrid_dims"] == 4 and model.hybrid_weight == 0.3
    assert isinstance(model.seen, Seen)


def test_a_quantized_hybrid_keeps_no_float32_item_operand() -> None:
    model = hybrid_model().with_factor_dtype("int8")
    rows = np.arange(len(model.user_ids))
    idx, _ = model.recommend_rows(rows, 10)
    assert "_augmented_items" not in model.__dict__  # only the int8 operand is kept
    exact, _ = hybrid_model().recommend_rows(rows, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, exact, strict=True)])
    assert overlap > 0.9


def test_a_damaged_hybrid_artifact_serves_als_alone(tmp_path: Path) -> None:
    model = hybrid_model()
    path = model.save(tmp_path / "model.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    assert int(arrays["schema_version"]) == 2  # a pre-hybrid reader refuses it
    assert int(np.load(clustered_model().save(tmp_path / "plain.npz"))["schema_version"]) == 1
    rows = np.arange(len(model.user_ids))
    alone = clustered_model().recommend_rows(rows, 10)[0]
    bad = arrays["item_content"].copy()
    bad[0, 0] = np.nan
    for name, damaged in (
        ("nan", {**arrays, "item_content": bad}),
        ("one", {k: v for k, v in arrays.items() if k != "user_profiles"}),
        ("shape", {**arrays, "user_profiles": arrays["user_profiles"][:5]}),
    ):
        target = tmp_path / f"{name}.npz"
        np.savez(target, **damaged)
        loaded = RecModel.load(target)
        assert loaded.hybrid_weight == 0 and loaded.item_content is None, name
        np.testing.assert_array_equal(loaded.recommend_rows(rows, 10)[0], alone)


@pytest.mark.parametrize("value", ["nan", "inf", -0.5, "x", None])
def test_an_incumbent_recipe_with_an_odd_weight_is_als_alone(value: object) -> None:
    from jobs.train.als import ALSParams

    params = {"rank": 8, "reg": 0.1, "alpha": 1.0, "iterations": 5, "hybrid_weight": value}
    assert ALSParams.from_dict(params).hybrid_weight == 0.0
    assert ALSParams.from_dict({**params, "hybrid_weight": "0.25"}).hybrid_weight == 0.25


def _compare_case(hybrid_incumbent: float) -> tuple:
    from jobs.train import als
    from jobs.train.data import Encoded
    from jobs.train.splits import user_time_split

    rng = np.random.default_rng(11)
    rows = []
    for u in range(200):
        likes = u % 2
        pool = [j for j in range(60) if style(j) == likes]
        for n, j in enumerate(rng.choice(pool, 8, replace=False)):
            rows.append((f"u{u}", f"i{j}", 1.0, pd.Timestamp("2026-11-01") + pd.Timedelta(hours=n)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "last_ts"])
    enc = Encoded.from_frame(frame)
    s = load_settings(
        als_engine="implicit", ease_max_items=1, gate_bootstrap_samples=200, hybrid_dims=4
    )
    train_full, test = user_time_split(enc.frame, 0.2)
    train, valid = user_time_split(train_full, 0.2)
    ids = np.array([f"i{j}" for j in range(60)])
    vectors = np.vstack([np.eye(8)[style(j)] for j in range(60)]).astype(np.float32)
    vectors += np.random.default_rng(1).normal(0, 0.1, vectors.shape).astype(np.float32)
    content = blend.TrainContent.of(s, enc.item_ids, (ids, vectors, "m"))
    best = als.ALSParams(
        rank=4, reg=0.1, alpha=1.0, iterations=5, weighting="none", half_life_days=0.0
    )
    incumbent = dataclasses.replace(best, hybrid_weight=hybrid_incumbent)
    return s, enc, (train_full, test, train, valid), best, incumbent, content


def test_the_gate_scores_an_incumbent_with_its_own_content_weight() -> None:
    from jobs.train.training import compare

    s, enc, split, best, incumbent, content = _compare_case(2.0)
    with_content = compare(
        None, s, enc, split, best, [("champion", "3", incumbent)], "test_", content
    )
    without = compare(None, s, enc, split, best, [("champion", "3", incumbent)], "test_", None)
    alone = compare(None, s, enc, split, best, [("champion", "3", best)], "test_", content)
    # Refit alike (same seed): the hybrid incumbent differs from its ALS-alone refit only by
    # its content term, which this run reproduces; without content it is said to be unscored.
    assert (
        with_content.metrics["champion_test_ndcg_at_10"]
        != alone.metrics["champion_test_ndcg_at_10"]
    )
    assert "champion_test_hybrid_unscored" not in with_content.metrics
    assert without.metrics["champion_test_hybrid_unscored"] == 1.0
    assert without.metrics["champion_test_ndcg_at_10"] == alone.metrics["champion_test_ndcg_at_10"]
