"""The batch ranking run per Spark partition gives exactly the single-machine lists."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from support import clustered_model

from jobs.model.stock import stock_mask
from jobs.publish.scoring import score_all, score_spark

pytestmark = pytest.mark.spark


def test_spark_partitions_rank_like_the_blocked_scorer(spark: Any) -> None:
    model = clustered_model(n_users=150, n_items=400)  # 400 items: the prefiltered path
    allowed = stock_mask(model, {f"item-{i}": False for i in range(0, 400, 5)})
    idx, _ = score_all(model, 12, allowed, block=32, workers=2)
    expected = dict(zip(model.user_ids, model.ids(idx), strict=True))
    rows = score_spark(spark, model, 12, allowed, partitions=3).collect()
    assert len(rows) == len(model.user_ids)
    for row in rows:
        assert list(row.item_ids) == expected[row.user_id]
        assert not {f"item-{i}" for i in range(0, 400, 5)} & set(row.item_ids)
        assert np.all(np.diff(row.scores) <= 0)
