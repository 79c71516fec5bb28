"""The batch ranking run per Spark partition gives exactly the single-machine lists."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from support import clustered_model, hybrid_model

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


def test_spark_partitions_score_the_quantized_operand(spark: Any) -> None:
    # RECFLOW_FACTOR_DTYPE=int8: the broadcast is the int8 operand, and each partition's
    # lists and scores are the blocked scorer's, bit for bit.
    model = replace(clustered_model(n_users=90, n_items=300), factor_dtype="int8")
    idx, scores = score_all(model, 12, block=32, workers=2)
    rows = score_spark(spark, model, 12, partitions=3).collect()
    assert len(rows) == len(model.user_ids)
    for row in rows:
        u = model.user_index[row.user_id]
        assert list(row.item_ids) == model.ids(idx[u : u + 1])[0]
        np.testing.assert_array_equal(np.asarray(row.scores, np.float32), scores[u])


def test_spark_partitions_score_the_hybrid_operand(spark: Any) -> None:
    # A hybrid model (factors plus content similarity to the user's latest items): each
    # partition ranks the augmented operands, exactly as the blocked scorer and the service.
    model = hybrid_model(weight=0.7)
    idx, scores = score_all(model, 10, block=16, workers=2)
    plain, _ = score_all(replace(model, params={**model.params, "hybrid_weight": 0.0}), 10)
    assert not np.array_equal(idx, plain), "the content term must change some list"
    rows = score_spark(spark, model, 10, partitions=3).collect()
    assert len(rows) == len(model.user_ids)
    for row in rows:
        u = model.user_index[row.user_id]
        assert list(row.item_ids) == model.ids(idx[u : u + 1])[0]
        np.testing.assert_array_equal(np.asarray(row.scores, np.float32), scores[u])
