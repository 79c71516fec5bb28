"""Confidence weighting, EASE and the per-user time split on tiny hand-checked data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.train.baselines import ease, evaluate_ease, interaction_matrix
from jobs.train.splits import Holdout, user_time_split
from jobs.train.weighting import BM25_B, BM25_K1, apply


def _frame(rows: list[tuple[int, int, float, str]]) -> pd.DataFrame:
    u, i, w, ts = zip(*rows, strict=True)
    return pd.DataFrame(
        {"u": u, "i": i, "weight": np.array(w, np.float32), "last_ts": pd.to_datetime(ts, utc=True)}
    )


FRAME = _frame(
    [
        (0, 0, 1.0, "2020-01-11"),
        (0, 1, 8.0, "2020-01-01"),
        (1, 0, 2.0, "2020-01-10"),
        (2, 0, 4.0, "2020-01-06"),
        (2, 2, 1.0, "2020-01-11"),
    ]
)


def test_none_and_log_and_recency() -> None:
    assert apply(FRAME, "none")["weight"].tolist() == [1, 8, 2, 4, 1]
    assert apply(FRAME, "log")["weight"].to_numpy() == pytest.approx(np.log1p([1, 8, 2, 4, 1]))
    # Half-life 5 days from the newest pair (Jan 11): ages 0, 10, 1, 5, 0 days.
    decayed = apply(FRAME, "none", half_life_days=5)["weight"].to_numpy()
    assert decayed == pytest.approx([1, 8 / 4, 2 * 0.5**0.2, 4 / 2, 1], rel=1e-6)
    assert FRAME["weight"].tolist() == [1, 8, 2, 4, 1]  # the input is not modified
    with pytest.raises(ValueError, match="unknown weighting"):
        apply(FRAME, "bm26")


def test_tfidf_and_bm25_down_weight_items_everyone_has() -> None:
    # Item 0: all 3 users → idf log(3/4) < 0 → floored; items 1, 2: one user → log(3/2).
    idf_rare = np.log(3 / 2)
    tfidf = apply(FRAME, "tfidf", n_users=3)["weight"].to_numpy()
    assert tfidf[1] == pytest.approx(np.sqrt(8) * idf_rare, rel=1e-6)
    assert tfidf[4] == pytest.approx(idf_rare, rel=1e-6)
    assert tfidf[0] == pytest.approx(1e-3) and (tfidf > 0).all()
    bm25 = apply(FRAME, "bm25", n_users=3)["weight"].to_numpy()
    lengths = np.array([9.0, 2.0, 5.0])
    norm = (1 - BM25_B) + BM25_B * lengths / lengths.mean()
    expected_01 = 8 * (BM25_K1 + 1) / (BM25_K1 * norm[0] + 8) * idf_rare
    assert bm25[1] == pytest.approx(expected_01, rel=1e-5)
    assert bm25[0] < bm25[1] and (bm25 > 0).all()


def test_ease_matches_the_per_column_ridge_regression_it_is_defined_by() -> None:
    """EASE's column j is the ridge regression of item j on all other items (penalty
    λ): an independent oracle, solved column by column."""
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(40, 6)) < 0.4).astype(float)
    lam = 3.0
    frame = pd.DataFrame({"u": np.nonzero(x)[0], "i": np.nonzero(x)[1]})
    b = ease(interaction_matrix(frame, 40, 6), lam)
    for j in range(6):
        others = [c for c in range(6) if c != j]
        xo = x[:, others]
        coef = np.linalg.solve(xo.T @ xo + lam * np.eye(5), xo.T @ x[:, j])
        assert b[others, j] == pytest.approx(coef, abs=1e-5)
        assert b[j, j] == 0


def test_ease_recommends_the_co_occurring_item() -> None:
    # Users 0–3 have items 0 and 1 together; user 4 has item 0 only: item 1 must come
    # first for user 4, ahead of item 2 that nobody with item 0 has.
    pairs = [(u, 0) for u in range(5)] + [(u, 1) for u in range(4)] + [(5, 2), (6, 2)]
    frame = pd.DataFrame(pairs, columns=["u", "i"])
    test = pd.DataFrame({"u": [4], "i": [1]})
    holdout = Holdout.of(frame, test, 7)
    metrics, per_user = evaluate_ease(frame, holdout, 7, 3, lam=1.0, k=1)
    assert metrics["ndcg_at_1"] == 1.0 and per_user.tolist() == [1.0]


def test_user_time_split_holds_out_each_users_latest() -> None:
    rows = [(0, i, 1.0, f"2020-01-{10 + i:02d}") for i in range(10)]  # 10 pairs
    rows += [(1, i, 1.0, f"2020-02-{20 - i:02d}") for i in range(3)]  # 3, newest is item 0
    rows += [(2, 5, 1.0, "2020-03-01")]  # a single pair stays in training
    train, test = user_time_split(_frame(rows), 0.2)
    held = test.groupby("u")["i"].agg(sorted).to_dict()
    assert held == {0: [8, 9], 1: [0]}
    assert set(train["u"]) == {0, 1, 2} and len(train) + len(test) == len(rows)
    # Every held-out pair is newer than all of that user's training pairs.
    for user, items in test.groupby("u"):
        assert items["last_ts"].min() >= train[train["u"] == user]["last_ts"].max()
    with pytest.raises(ValueError):
        user_time_split(_frame(rows), 0)
