"""Non-finite factors: the ranker never crashes, never recommends a broken item, and
serves a broken user popularity; training and registration refuse such a model, loading
keeps serving it (masked)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from support import clustered_model

from jobs.model.artifact import NonFiniteModelError, RecModel
from jobs.model.ranking import NO_ITEM, top_k


def _broken() -> tuple[RecModel, set[int], set[int]]:
    """A clustered model with two NaN/inf user rows and three NaN/±inf item rows."""
    model = clustered_model(n_users=60, n_items=300)
    bad_users, bad_items = {3, 40}, {5, 77, 200}
    model.user_factors[3, 2] = np.nan
    model.user_factors[40, 0] = np.inf
    model.item_factors[5, 1] = np.nan
    model.item_factors[77, 4] = np.inf
    model.item_factors[200, 0] = -np.inf
    # Make the broken items the most popular, so the popularity fallback would pick them.
    model.popularity[list(bad_items)] = 1e6
    return (
        RecModel(**{f: getattr(model, f) for f in model.__dataclass_fields__}),
        bad_users,
        bad_items,
    )


def _oracle(model: RecModel, row: int, k: int, bad_items: set[int]) -> list[int]:
    """Brute force in float64 over finite items not seen by the user."""
    lo, hi = model.seen.indptr[row], model.seen.indptr[row + 1]
    seen = set(model.seen.indices[lo:hi].tolist())
    scores = model.item_factors.astype(np.float64) @ model.user_factors[row].astype(np.float64)
    eligible = [j for j in range(len(model.item_ids)) if j not in seen and j not in bad_items]
    return sorted(eligible, key=lambda j: (-scores[j], j))[:k]


def test_a_nan_block_does_not_crash_and_broken_rows_are_handled() -> None:
    model, bad_users, bad_items = _broken()
    rows = np.arange(len(model.user_ids))
    idx, scores = model.recommend_rows(rows, 10)  # the old ranker raised on this block
    for row in rows:
        got = [int(j) for j in idx[row] if j != NO_ITEM]
        assert not set(got) & bad_items, row
        assert np.isfinite(scores[row][idx[row] != NO_ITEM]).all()
        if row in bad_users:
            # Falls back to popularity for that user (their seen items still excluded).
            pidx, _ = model.popular_rows(np.array([row]), 10)
            assert got == [int(j) for j in pidx[0]] and len(got) == 10
        else:
            assert got == _oracle(model, int(row), 10, bad_items)


def test_an_inf_user_alone_gets_a_full_list_not_an_empty_one() -> None:
    model, _, bad_items = _broken()
    idx, _ = model.recommend_rows(np.array([40]), 5)
    assert (idx[0] != NO_ITEM).all()  # the old ranker returned five empty slots
    assert not set(idx[0].tolist()) & bad_items


def test_top_k_alone_masks_non_finite_items_and_users() -> None:
    items = np.eye(4, 3, dtype=np.float32)
    items[1, 0] = np.inf  # would win every list
    users = np.array([[1, 1, 1], [np.nan, 0, 0]], dtype=np.float32)
    idx, scores = top_k(users, items, 4)
    assert 1 not in idx[0].tolist() and set(idx[0][:3].tolist()) == {0, 2, 3}
    assert (idx[1] == NO_ITEM).all() and np.isneginf(scores[1]).all()


def test_training_and_registration_refuse_non_finite_factors(tmp_path: Path) -> None:
    from jobs.config import load_settings
    from jobs.model.registry import log_model, setup

    model, _, _ = _broken()
    with pytest.raises(NonFiniteModelError, match="2 user rows, 3 item rows"):
        model.check_finite()
    settings = load_settings(data_root=tmp_path / "var")
    client = setup(settings)
    import mlflow

    with mlflow.start_run(), pytest.raises(NonFiniteModelError):
        log_model(model, tmp_path / "work", settings.model_name)
    assert client.search_model_versions(f"name='{settings.model_name}'") == []


def test_load_keeps_a_broken_model_serving_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, bad_users, bad_items = _broken()
    path = model.save(tmp_path / "model.npz")
    with caplog.at_level(logging.WARNING, logger="jobs.model.artifact"):
        loaded = RecModel.load(path)
    assert "non-finite" in caplog.text and "'item_rows': 3" in caplog.text
    assert set(np.flatnonzero(~loaded.user_ok)) == bad_users
    idx, _ = loaded.recommend_rows(np.array(sorted(bad_users)), 10)
    assert (idx != NO_ITEM).all() and not set(idx.ravel().tolist()) & bad_items
    popular, _ = loaded.popular_rows(np.array([-1]), 10)
    assert not set(popular[0].tolist()) & bad_items


def test_many_nan_items_do_not_crash_the_prefiltered_selection() -> None:
    """Enough NaN rows to fill the sampled threshold (the old ranker raised ValueError)."""
    rng = np.random.default_rng(0)
    users = rng.normal(size=(4, 8)).astype(np.float32)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    items[::3, 0] = np.nan
    idx, scores = top_k(users, items, 10)
    assert (idx != NO_ITEM).all() and (idx % 3 != 0).all() and np.isfinite(scores).all()
    finite = np.flatnonzero(np.arange(300) % 3 != 0)
    for u in range(4):
        best = finite[np.argsort(-(items[finite] @ users[u]), kind="stable")[:10]]
        assert set(idx[u].tolist()) == set(best.tolist())


def test_huge_finite_factors_are_refused_and_never_empty_the_first_slot() -> None:
    """1e20 factors are finite, but 1e20 · 1e20 overflows float32 to inf: that score won
    the first slot, which then held NO_ITEM."""
    model = clustered_model(n_users=40, n_items=300)
    model.user_factors[0] = 1e20
    model.item_factors[7] = 1e20
    with pytest.raises(NonFiniteModelError, match=r"beyond ±1e\+15 \(1 user rows, 1 item rows\)"):
        model.check_finite()
    model = RecModel(**{f: getattr(model, f) for f in model.__dataclass_fields__})
    for rows in (np.array([0]), np.arange(40)):  # alone (gemv-like) and in a block
        idx, scores = model.recommend_rows(rows, 10)
        assert (idx[0] != NO_ITEM).all() and 7 not in idx[0].tolist()
        assert np.isfinite(scores[0]).all()
    # Users whose score with item 7 is finite (huge) still get it: nothing else changes.
    idx, _ = model.recommend_rows(np.arange(1, 40), 1)
    assert (idx[:, 0] != NO_ITEM).all()
