"""Ranking metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from jobs.train.metrics import (
    coverage,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

RECS = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
TRUTH = [{1, 3}, {9}, set()]  # the third user has nothing held out: not evaluated


def test_precision_and_recall() -> None:
    assert precision_at_k(RECS, TRUTH, k=4) == pytest.approx((2 / 4 + 0) / 2)
    assert recall_at_k(RECS, TRUTH, k=4) == pytest.approx((2 / 2 + 0) / 2)
    assert precision_at_k(RECS, TRUTH, k=2) == pytest.approx((1 / 2) / 2)


def test_ndcg_discounts_by_rank_and_normalises_by_the_ideal() -> None:
    dcg = 1 / math.log2(2) + 1 / math.log2(4)  # hits at ranks 1 and 3
    ideal = 1 / math.log2(2) + 1 / math.log2(3)  # two relevant items at ranks 1 and 2
    assert ndcg_at_k(RECS, TRUTH, k=4) == pytest.approx((dcg / ideal) / 2)
    assert ndcg_at_k([[1, 3]], [{1, 3}], k=2) == pytest.approx(1.0)
    assert ndcg_at_k([[3, 1]], [{1, 3}], k=2) == pytest.approx(1.0)  # order within hits
    assert ndcg_at_k([[0, 1]], [{1}], k=2) == pytest.approx(1 / math.log2(3))


def test_map_averages_precision_at_each_hit() -> None:
    assert map_at_k(RECS, TRUTH, k=4) == pytest.approx(((1 / 1 + 2 / 3) / 2) / 2)
    assert map_at_k([[0, 1, 0, 2]], [{1, 2, 5}], k=4) == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_coverage_and_names() -> None:
    assert coverage(RECS, catalog_size=20, k=4) == pytest.approx(10 / 20)
    assert coverage(RECS, catalog_size=20, k=1) == pytest.approx(3 / 20)
    out = ranking_metrics(RECS, TRUTH, k=4, catalog_size=20)
    assert set(out) == {
        "precision_at_4",
        "recall_at_4",
        "ndcg_at_4",
        "map_at_4",
        "coverage_at_4",
    }


def test_edge_cases() -> None:
    assert ndcg_at_k([[1]], [set()], k=10) == 0.0  # nobody evaluable
    assert precision_at_k([[]], [{1}], k=10) == 0.0  # empty list
    with pytest.raises(ValueError, match="truth sets"):
        precision_at_k([[1]], [{1}, {2}], k=1)
    with pytest.raises(ValueError):
        coverage([[1]], catalog_size=0)


def test_ndcg_beyond_a_thousand_items() -> None:
    """Long lists (K > 1024) are scored like short ones: the discount is never cut off."""
    k = 3000
    recs = [list(range(k))]
    truth = [{0, 2999}]  # hits at ranks 1 and 3000
    dcg = 1 / math.log2(2) + 1 / math.log2(3001)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(recs, truth, k=k) == pytest.approx(dcg / ideal)
    assert ndcg_at_k([list(range(5000))], [set(range(2000))], k=5000) == pytest.approx(
        sum(1 / math.log2(r + 2) for r in range(2000))
        / sum(1 / math.log2(r + 2) for r in range(2000))
    )
