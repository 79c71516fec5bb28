"""The session update of a known user, and the offline evaluation that says it helps."""

from __future__ import annotations

from pathlib import Path

import hypothesis
import numpy as np
from hypothesis import strategies as st

from jobs.config import load_settings
from jobs.model.session import ITEM_WEIGHT, session_vector
from jobs.serve.answers import fold_in
from jobs.sources.movielens import ratings_to_interactions, read_ratings
from jobs.train import als_implicit
from jobs.train.data import Encoded, seen_of
from jobs.train.session_eval import session_ndcg
from jobs.train.splits import user_time_split


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    seed=st.integers(0, 2**32 - 1),
    n_history=st.integers(0, 12),
    n_fresh=st.integers(1, 6),
    reg=st.floats(0.01, 5.0),
    alpha=st.floats(0.1, 40.0),
)
def test_the_update_is_the_fold_in_of_history_and_session_together(
    seed: int, n_history: int, n_fresh: int, reg: float, alpha: float
) -> None:
    # A vector that is the ALS solution for its history (weights of one item each): adding
    # the session must give exactly the solution for history and session together.
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(30, 6)).astype(np.float32)
    gram = items.astype(np.float64).T @ items.astype(np.float64)
    chosen = rng.choice(30, n_history + n_fresh, replace=False)
    history, fresh = chosen[:n_history], chosen[n_history:]
    ones = np.full(len(chosen), ITEM_WEIGHT)
    x = fold_in(items, gram, history, ones[:n_history], reg, alpha)
    moved = session_vector(items, gram, x, history, fresh, ones[n_history:], reg, alpha)
    together = fold_in(items, gram, chosen, ones, reg, alpha)
    np.testing.assert_allclose(moved, together, rtol=2e-3, atol=2e-4)


def test_nothing_new_leaves_the_vector_as_trained() -> None:
    rng = np.random.default_rng(3)
    items = rng.normal(size=(20, 4)).astype(np.float32)
    x = rng.normal(size=4).astype(np.float32)
    got = session_vector(
        items,
        items.T.astype(np.float64) @ items,
        x,
        np.arange(5),
        np.zeros(0, np.int64),
        np.zeros(0),
        0.1,
        1.0,
    )
    assert np.array_equal(got, x)


def test_following_the_session_beats_the_static_list_on_movielens(ml100k: Path) -> None:
    """Next-interaction NDCG@10 on each user's latest 10 %, replayed as a session."""
    settings = load_settings()
    frame = ratings_to_interactions(read_ratings(ml100k), settings.event_weights)
    enc = Encoded.from_frame(frame)
    train, test = user_time_split(enc.frame, settings.test_fraction)
    n_users, n_items = len(enc.user_ids), len(enc.item_ids)
    reg, alpha = settings.als_reg, settings.als_alpha
    u, v = als_implicit.fit(train, n_users, n_items, settings.als_rank, reg, alpha, 15, 7)
    test = test[test["i"].isin(train["i"].unique())]
    found = session_ndcg(test, seen_of(train, n_users), u, v, reg, alpha, k=10)
    assert found["session_steps"] > 1000
    static, unseen = found["session_static_ndcg_at_10"], found["session_static_unseen_ndcg_at_10"]
    aware = found["session_aware_ndcg_at_10"]
    # Dropping what was just seen helps; moving the vector helps beyond that.
    assert aware > unseen > static > 0
