"""The threaded batch scorer gives each user the list the single-user call gives."""

from __future__ import annotations

import numpy as np
from support import clustered_model

from jobs.model.stock import stock_mask
from jobs.publish.scoring import score_all


def test_batch_lists_equal_single_user_lists_with_stock() -> None:
    model = clustered_model(n_users=70, n_items=300)
    allowed = stock_mask(model, {"item-1": False, "item-4": False, "unknown": False})
    assert allowed is not None and allowed.sum() == 298  # unknown ids change nothing
    for block, workers in ((1, 1), (16, 3), (100, 2)):
        idx, scores = score_all(model, 20, allowed, block=block, workers=workers)
        for row in range(len(model.user_ids)):
            alone, alone_scores = model.recommend_rows(np.array([row]), 20, allowed)
            assert list(idx[row]) == list(alone[0])
            np.testing.assert_array_equal(scores[row], alone_scores[0])
    assert stock_mask(model, None) is None


def test_scores_are_bit_identical_alone_and_in_a_block_at_production_shapes() -> None:
    # Rank 64 and a wide catalog: BLAS must give a user the same bits in a block of 256
    # as alone, or near-ties could order the online list differently from the CDN's.
    from jobs.model.artifact import RecModel
    from jobs.model.ranking import Seen

    rng = np.random.default_rng(11)
    model = RecModel(
        user_ids=np.array([f"u{i}" for i in range(300)]),
        item_ids=np.array([f"i{j}" for j in range(2000)]),
        user_factors=rng.normal(size=(300, 64)),
        item_factors=rng.normal(size=(2000, 64)),
        popularity=rng.random(2000),
        seen=Seen.from_lists([rng.choice(2000, 5, replace=False) for _ in range(300)]),
    )
    idx, scores = score_all(model, 50, block=256, workers=2)
    for row in range(0, 300, 7):
        alone, alone_scores = model.recommend_rows(np.array([row]), 50)
        assert list(idx[row]) == list(alone[0])
        np.testing.assert_array_equal(scores[row], alone_scores[0])
