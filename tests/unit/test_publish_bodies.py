"""The users' objects of a publish: the same bytes whether built in this process or in
the forkserver pool, in key order, deterministic, and free of per-publish fields."""

from __future__ import annotations

import gzip
import json

import numpy as np

from jobs.publish import bodies, layout

META = {
    "publish_id": "20261129T060000Z-v3",
    "generated_at": "2026-11-29T06:00:00Z",
    "model": {"name": "recflow-als", "version": "3", "run_id": "r"},
}


def _stage(n: int) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(7)
    keys = [f"{rng.integers(0, 2**63):016x}{i:016x}" for i in range(n)]
    idx = rng.integers(0, 40, size=(n, 5))
    idx[3] = -1  # nothing left to personalise: the popular list
    scores = np.sort(rng.random((n, 5)).astype(np.float32), axis=1)[:, ::-1]
    control = np.zeros(n, dtype=bool)
    control[5] = True
    return keys, {"idx": idx, "scores": scores}, control


def _constants() -> bodies.Constants:
    popular = layout.user_body(META, "popular", ["i1", "i2"], [2.0, 1.0])
    return bodies.Constants(
        prefix="shop/",
        slot=1,
        meta=META,
        item_ids=np.array([f"i{j}" for j in range(40)]),
        popular=popular,
        level=3,
    )


def test_the_pool_builds_the_same_bytes_in_key_order(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bodies, "BLOCK", 7)  # several blocks from a few rows
    keys, staged, control = _stage(40)
    here = [
        o for b in bodies.encoded(_constants(), bodies.blocks(keys, staged, control), 0) for o in b
    ]
    pooled = [
        o for b in bodies.encoded(_constants(), bodies.blocks(keys, staged, control), 2) for o in b
    ]
    assert here == pooled
    names = [key for key, _, _ in here]
    assert names == sorted(names) and len(names) == 40
    assert all(k.startswith("shop/recs/s/1/u/") for k in names)
    for _key, data, md5 in here:
        assert md5 == layout.md5_hex(data)
        body = json.loads(gzip.decompress(data))
        assert not set(layout.PER_PUBLISH) & set(body)  # nothing that changes per publish
    by_key = {k.rsplit("/", 1)[-1][:-5]: json.loads(gzip.decompress(d)) for k, d, _ in here}
    assert by_key[keys[3]]["source"] == "popular" and by_key[keys[3]]["group"] == "treatment"
    assert by_key[keys[5]]["group"] == "control"
    row = by_key[keys[0]]["items"]
    assert [i["item_id"] for i in row] == [f"i{j}" for j in staged["idx"][0]]
    assert [i["rank"] for i in row] == [1, 2, 3, 4, 5]


def test_encoding_is_deterministic_whatever_the_level() -> None:
    body = layout.user_body(META, "als", ["a", "b"], [0.5, 0.25])
    assert layout.encode(body) == layout.encode(dict(body))
    assert layout.decode(layout.encode(body)) == body
    assert gzip.decompress(layout.encode(body, 9)) == gzip.decompress(layout.encode(body, 1))
    assert layout.encode(body)[:2] == b"\x1f\x8b"


def test_empty_slots_anywhere_in_a_row_are_left_out() -> None:
    keys, staged, control = _stage(10)
    staged["idx"][0] = [4, -1, 9, 2, -1]  # a hole mid-row, as an overflowed score leaves
    staged["idx"][1] = [6, 7, -1, -1, -1]  # padding at the end, the usual case
    built = bodies.encode_block(next(bodies.blocks(keys, staged, control)), _constants())
    by_key = {k.rsplit("/", 1)[-1][:-5]: json.loads(gzip.decompress(d)) for k, d, _ in built}
    first = by_key[keys[0]]["items"]
    assert [i["item_id"] for i in first] == ["i4", "i9", "i2"]
    assert [i["rank"] for i in first] == [1, 2, 3]
    scores = staged["scores"][0]
    assert [i["score"] for i in first] == [round(float(scores[j]), 6) for j in (0, 2, 3)]
    assert [i["item_id"] for i in by_key[keys[1]]["items"]] == ["i6", "i7"]
