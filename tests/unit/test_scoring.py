"""The threaded batch scorer gives each user the list the single-user call gives."""

from __future__ import annotations

import numpy as np
from support import clustered_model

from jobs.scoring import score_all, stock_mask


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
