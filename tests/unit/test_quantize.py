"""Quantized item factors (jobs.model.quantize, RECFLOW_FACTOR_DTYPE): the round trip,
extreme values, the ranker's guarantees with a quantized operand, and the quality bar on
real factors (an ``implicit`` ALS fit on MovieLens 100K)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import clustered_model

from jobs.config import ConfigError, load_settings
from jobs.model.artifact import RecModel
from jobs.model.quantize import QuantizedItems, quantize
from jobs.model.ranking import NO_ITEM, Seen, top_k
from jobs.publish.scoring import score_all
from jobs.serve.answers import OnlineModel, recommend
from jobs.serve.schemas import RecommendRequest

QUANTIZED = ("float16", "int8")


def _as(model: RecModel, dtype: str) -> RecModel:
    return model.with_factor_dtype(dtype)


# -- quantize / dequantize --------------------------------------------------------------


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_round_trip_error_is_bounded_by_each_rows_scale(dtype: str) -> None:
    rng = np.random.default_rng(3)
    # Rows of very different lengths: a per-item scale keeps each one's relative error.
    x = (rng.normal(size=(500, 32)) * rng.lognormal(0, 3, size=(500, 1))).astype(np.float32)
    q = quantize(x, dtype)
    assert q.values.dtype == np.dtype(dtype) and q.values.shape == (32, 500)
    assert q.values.flags.c_contiguous and q.scale.dtype == np.float32
    back = q.dequantize()
    peak = np.abs(x).max(axis=1, keepdims=True)
    # int8: half a step of peak/127; float16 values in [-1, 1]: half an ulp of 1 (2^-11).
    bound = peak / 254 if dtype == "int8" else peak * 2.0**-11
    assert np.all(np.abs(back - x) <= bound * 1.0001)
    assert np.allclose(np.abs(back).max(axis=1), peak.ravel(), rtol=1e-3)


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_memory_is_a_half_or_a_quarter_plus_one_scale_per_item(dtype: str) -> None:
    x = np.ones((1000, 64), np.float32)
    q = quantize(x, dtype)
    width = 2 if dtype == "float16" else 1
    assert q.nbytes == 1000 * 64 * width + 1000 * 4


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_zero_vectors_stay_zero_and_score_zero(dtype: str) -> None:
    x = np.zeros((4, 8), np.float32)
    x[1] = 0.5
    q = quantize(x, dtype)
    back = q.dequantize()
    assert not np.any(back[[0, 2, 3]]) and np.all(q.scale[[0, 2, 3]] == 0)
    np.testing.assert_array_equal(back[1], x[1])
    idx, scores = top_k(np.ones((1, 8), np.float32), None, 4, items_t=q)
    assert idx[0, 0] == 1 and list(scores[0, 1:]) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_huge_and_tiny_norms_stay_finite_and_relative(dtype: str) -> None:
    # float16 alone would turn 1e15 into inf and 1e-30 into 0: the scale keeps both.
    x = np.array([[1e15, -3e14, 2e13], [1e-30, -5e-31, 2.5e-31], [3e38, 1.0, -3e38]], np.float32)
    back = quantize(x, dtype).dequantize()
    assert np.isfinite(back).all()
    assert np.allclose(back, x, rtol=1e-2, atol=0) or np.all(
        np.abs(back - x) <= np.abs(x).max(axis=1, keepdims=True) / 200
    )
    assert back[1, 0] != 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", QUANTIZED)
def test_non_finite_factors_are_refused(dtype: str, bad: float) -> None:
    x = np.ones((5, 3), np.float32)
    x[3, 1] = bad
    with pytest.raises(ValueError, match=r"1 item rows hold NaN or infinity.*row 3"):
        quantize(x, dtype)


def test_unknown_dtypes_are_refused_by_quantize_the_model_and_the_settings() -> None:
    with pytest.raises(ValueError, match="float16 or int8"):
        quantize(np.ones((2, 2), np.float32), "float32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor_dtype 'bfloat16'"):
        _as(clustered_model(), "bfloat16")
    with pytest.raises(ConfigError, match="RECFLOW_FACTOR_DTYPE"):
        load_settings(factor_dtype="bfloat16")
    assert load_settings().factor_dtype == "float32"


# -- the ranker with a quantized operand -----------------------------------------------


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_quantized_ranking_is_the_exact_ranking_of_the_dequantized_factors(dtype: str) -> None:
    # Oracle: brute force in float64 on the factors the quantized values stand for. Small
    # chunks so a row's scores come from several widened buffers.
    rng = np.random.default_rng(5)
    users = rng.normal(size=(40, 8)).astype(np.float32)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    seen_lists = [set(rng.choice(300, 6, replace=False).tolist()) for _ in users]
    allowed = rng.random(300) > 0.1
    q = quantize(items, dtype, chunk=64)
    exact = users.astype(np.float64) @ q.dequantize().astype(np.float64).T
    idx, _ = top_k(
        users,
        None,
        15,
        seen=Seen.from_lists([sorted(s) for s in seen_lists]),
        allowed=allowed,
        items_t=q,
        block=7,
    )
    for u, row in enumerate(idx):
        eligible = [j for j in range(300) if allowed[j] and j not in seen_lists[u]]
        ranked = sorted(eligible, key=lambda j: (-exact[u, j], j))[:15]
        # float32 sums may swap neighbours whose float64 scores differ by < 1e-5.
        assert set(row) == set(ranked) or np.allclose(
            np.sort(exact[u, row]), np.sort(exact[u, ranked]), atol=1e-5
        )


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_a_user_alone_gets_the_bits_of_a_block_across_chunks(dtype: str) -> None:
    rng = np.random.default_rng(9)
    users = rng.normal(size=(50, 64)).astype(np.float32)
    q = quantize(rng.normal(size=(3000, 64)).astype(np.float32), dtype, chunk=700)
    idx, scores = top_k(users, None, 50, items_t=q, block=256)
    for u in range(0, 50, 3):
        alone, alone_scores = top_k(users[u : u + 1], None, 50, items_t=q)
        assert list(alone[0]) == list(idx[u])
        np.testing.assert_array_equal(alone_scores[0], scores[u])


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_batch_scorer_equals_the_services_answer_under_the_quantized_setting(
    dtype: str,
) -> None:
    model = _as(clustered_model(n_users=60, n_items=200), dtype)
    assert isinstance(model.item_factors_t, QuantizedItems)
    online = OnlineModel.of(model)
    idx, scores = score_all(model, 20, block=16, workers=2)
    for row in range(0, 60, 5):
        user = str(model.user_ids[row])
        answer = recommend(online, RecommendRequest(user_id=user, k=20))
        assert answer.source == "als"
        assert [i.item_id for i in answer.items] == model.ids(idx[row : row + 1])[0]
        # The service rounds as publishing does (round_scores): equal after rounding.
        assert [i.score for i in answer.items] == np.round(scores[row].astype(float), 6).tolist()


@pytest.mark.parametrize("dtype", QUANTIZED)
def test_a_non_finite_item_row_is_never_recommended_when_quantized(
    dtype: str, tmp_path: Path
) -> None:
    base = clustered_model(n_users=30, n_items=60)
    base.item_factors[7, 2] = np.nan
    base.item_factors[8] = 0.0
    path = base.save(tmp_path / "model.npz")
    model = RecModel.load(path, factor_dtype=dtype)  # type: ignore[arg-type]
    assert model.factor_dtype == dtype
    idx, _ = model.recommend_rows(np.arange(30), 60)
    assert 7 not in idx and np.all((idx != NO_ITEM).sum(axis=1) >= 40)
    # Nor through the operand alone, as the session-aware (fold-in) path ranks: a user
    # vector whose scores are all negative would otherwise pick the zeroed row first.
    negative = -np.abs(base.item_factors[~np.isnan(base.item_factors).any(axis=1)]).mean(axis=0)
    idx, _ = top_k(negative[None, :].astype(np.float32), None, 60, items_t=model.item_factors_t)
    assert 7 not in idx[0]
    # Saving a quantized-loaded model writes the float32 artifact unchanged.
    again = RecModel.load(model.save(tmp_path / "again.npz"))
    np.testing.assert_array_equal(again.item_factors, base.item_factors)


# -- the quality bar on real factors ------------------------------------------------------


def _movielens_split(path: Path, last: int = 5):  # type: ignore[no-untyped-def]
    """Training matrix and each user's ``last`` latest ratings held out (by time)."""
    from scipy.sparse import csr_matrix

    raw = np.loadtxt(path / "u.data", dtype=np.int64)  # user item rating seconds
    users, u = np.unique(raw[:, 0], return_inverse=True)
    items, i = np.unique(raw[:, 1], return_inverse=True)
    order = np.lexsort((i, raw[:, 3], u))
    u, i, r = u[order], i[order], raw[order, 2].astype(np.float32)
    position_from_end = np.zeros(len(u), np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(u)) + 1]
    stops = np.r_[starts[1:], len(u)]
    for a, b in zip(starts, stops, strict=True):
        position_from_end[a:b] = np.arange(b - a)[::-1]
    held = position_from_end < last
    train = csr_matrix((r[~held], (u[~held], i[~held])), shape=(len(users), len(items)))
    holdout = [set(i[held & (u == x)].tolist()) for x in range(len(users))]
    return train, holdout


def _ndcg10(idx: np.ndarray, holdout: list[set[int]]) -> float:
    gains = 1.0 / np.log2(np.arange(2, 12))
    total = 0.0
    for row, truth in zip(idx[:, :10], holdout, strict=True):
        dcg = sum(g for g, j in zip(gains, row, strict=True) if j in truth)
        total += dcg / gains[: min(10, len(truth))].sum()
    return total / len(holdout)


def test_quantized_lists_keep_the_quality_bar_on_movielens(ml100k: Path) -> None:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    train, holdout = _movielens_split(ml100k)
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=64,
            regularization=0.05,
            alpha=2.0,
            iterations=15,
            random_state=7,
            num_threads=1,
        )
        als.fit(train, show_progress=False)
    n_users, n_items = train.shape
    base = RecModel(
        user_ids=np.arange(n_users).astype(str),
        item_ids=np.arange(n_items).astype(str),
        user_factors=als.user_factors,
        item_factors=als.item_factors,
        popularity=np.asarray(train.sum(axis=0)).ravel(),
        seen=Seen(train.indptr.astype(np.int64), train.indices.astype(np.int32)),
        public_popularity=np.zeros(n_items, np.float32),
    )
    rows = np.arange(n_users)
    ref, _ = base.recommend_rows(rows, 50)
    ref_ndcg = _ndcg10(ref, holdout)
    assert ref_ndcg > 0.05  # a real model: far above random (~0.003)
    for dtype in QUANTIZED:
        idx, _ = _as(base, dtype).recommend_rows(rows, 50)
        overlap = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(ref, idx, strict=True)])
        assert overlap >= 0.99, (dtype, overlap)
        assert abs(_ndcg10(idx, holdout) - ref_ndcg) <= 0.002, dtype
