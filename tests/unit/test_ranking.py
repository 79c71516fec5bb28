"""The shared top-K ranker against a brute-force reference."""

from __future__ import annotations

import numpy as np

from jobs.model.ranking import NO_ITEM, Seen, popular_k, top_k


def _reference(users, items, k, seen_lists, allowed):
    out = []
    for u, vec in enumerate(users):
        scores = items @ vec
        eligible = [
            j
            for j in range(len(items))
            if j not in seen_lists[u] and (allowed is None or allowed[j])
        ]
        eligible.sort(key=lambda j: (-scores[j], j))
        out.append(eligible[:k])
    return out


def test_matches_brute_force_with_exclusions_blocks_and_stock() -> None:
    rng = np.random.default_rng(7)
    users = rng.normal(size=(37, 8)).astype(np.float32)
    items = rng.normal(size=(50, 8)).astype(np.float32)
    seen_lists = [list(rng.choice(50, size=rng.integers(0, 12), replace=False)) for _ in users]
    allowed = rng.random(50) > 0.2
    seen = Seen.from_lists(seen_lists)
    expected = _reference(users, items, 10, [set(s) for s in seen_lists], allowed)
    for block in (1, 5, 64):
        idx, scores = top_k(users, items, 10, seen=seen, allowed=allowed, block=block)
        assert [list(row) for row in idx] == expected
        assert np.all(np.diff(scores, axis=1) <= 0)


def test_rows_map_vectors_to_seen_rows() -> None:
    items = np.eye(4, dtype=np.float32)
    seen = Seen.from_lists([[0], [1], [2]])
    vec = np.array([[4, 3, 2, 1]], dtype=np.float32)
    idx, _ = top_k(vec, items, 2, seen=seen, rows=np.array([1]))
    assert list(idx[0]) == [0, 2]  # row 1 saw item 1
    idx, _ = top_k(vec, items, 2, seen=seen, rows=np.array([-1]))  # unknown: nothing seen
    assert list(idx[0]) == [0, 1]


def test_fewer_eligible_items_than_k_leave_empty_slots() -> None:
    items = np.eye(3, dtype=np.float32)
    idx, scores = top_k(np.ones((1, 3), np.float32), items, 3, seen=Seen.from_lists([[0, 1]]))
    assert list(idx[0]) == [2, NO_ITEM, NO_ITEM]
    assert np.isneginf(scores[0, 1:]).all()


def test_popularity_uses_the_same_ranker() -> None:
    pop = np.array([5.0, 9.0, 1.0, 9.0], dtype=np.float32)
    idx, _ = popular_k(pop, 3, n_users=2, seen=Seen.from_lists([[1], []]))
    assert [list(r) for r in idx] == [[3, 0, 2], [1, 3, 0]]  # ties by item index


def test_prefiltered_selection_matches_a_full_sort_whatever_the_block() -> None:
    rng = np.random.default_rng(3)
    users = rng.normal(size=(40, 6)).astype(np.float32)
    items = rng.normal(size=(400, 6)).astype(np.float32)  # 400 >= 16 * k: sampled prefilter
    seen_lists = [list(rng.choice(400, size=30, replace=False)) for _ in users]
    allowed = rng.random(400) > 0.3
    expected = _reference(users, items, 10, [set(s) for s in seen_lists], allowed)
    for block in (1, 7, 40):
        idx, _ = top_k(
            users, items, 10, seen=Seen.from_lists(seen_lists), allowed=allowed, block=block
        )
        assert [list(row) for row in idx] == expected


def test_ties_at_the_boundary_go_to_the_lower_item_index() -> None:
    # Many equal scores: the K kept must be the lowest indices among the tied ones, both
    # on the full-partition path and on the prefiltered path, alone or in a block.
    for m in (30, 400):
        items = np.ones((m, 1), dtype=np.float32)
        items[m // 2] = 2.0
        users = np.ones((5, 1), dtype=np.float32)
        for block in (1, 5):
            idx, _ = top_k(users, items, 10, block=block)
            assert [list(r) for r in idx] == [[m // 2, *range(9)]] * 5


def test_many_items_tied_at_the_cut_give_one_list_alone_and_in_any_block() -> None:
    # 300 items with the very same factors, all better than the rest: float32 kernels
    # round them apart by accident (OpenBLAS's Haswell kernel does, within one product);
    # the exact rescoring of every near-tied item gives each user one list everywhere.
    rng = np.random.default_rng(3)
    items = rng.standard_normal((20_003, 64)).astype(np.float32) * 0.3
    base = items[0].copy()
    users = (base + rng.standard_normal((256, 64)).astype(np.float32) * 0.3).astype(np.float32)
    twins = np.sort(rng.choice(len(items), 300, replace=False))
    items[twins] = base * 3
    items_t = np.ascontiguousarray(items.T)
    block_idx, block_scores = top_k(users, items, 10, items_t=items_t)
    for r in range(len(users)):
        alone_idx, alone_scores = top_k(users[r : r + 1], items, 10, items_t=items_t)
        assert alone_idx[0].tolist() == block_idx[r].tolist()
        assert alone_scores[0].tobytes() == block_scores[r].tobytes()
    # ... and it is the exact ranking: the tied items in index order.
    assert (block_idx == twins[:10]).all()
