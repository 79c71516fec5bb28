"""Item content: cleaning, the offline embedding model, the incremental plan, the map."""

from __future__ import annotations

import socket
import unicodedata

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.content.embeddings import plan, vectors_for, vectors_of
from jobs.content.encoder import DIM, Encoder
from jobs.content.text import FIELDS, MAX_CHARS, clean, content_hash, item_text
from jobs.model import content_map

ENCODER = Encoder()


def test_the_model_loads_and_embeds_with_the_network_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HOME", "/nonexistent")  # no cache folder to fall back on either
    fresh = Encoder()
    vecs = fresh.embed(["Voltix Bold Compact Headphones", "dark chocolate"])
    assert vecs.shape == (2, DIM) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert fresh.model_id.startswith("wordllama/l2_supercat_256@")


def test_vectors_are_deterministic_and_independent_of_the_batch() -> None:
    texts = ["Loom Bold Classic Jacket", "A puzzle by Brickle", "", "honey " * 300]
    alone = np.vstack([Encoder().embed([t]) for t in texts])
    together = ENCODER.embed(texts)
    assert np.array_equal(alone, together)
    assert np.array_equal(ENCODER.embed(texts[::-1])[::-1], together)
    assert not together[2].any()  # no tokens: the zero vector, not NaN


def test_words_move_the_vector_the_way_content_should() -> None:
    a, b, c = ENCODER.embed(["green tea and honey", "honey and green tea", "gaming mouse"])
    assert float(a @ b) > 0.99  # a bag of words: order does not matter
    assert float(a @ c) < float(a @ b)


def test_the_same_text_spelled_two_ways_hashes_the_same() -> None:
    nfc = {"title": "Crème Brûlée Set", "brand": "Casa\u200b Nova"}
    nfd = {"title": unicodedata.normalize("NFD", "Crème  Brûlée\tSet"), "brand": "Casa Nova"}
    assert item_text(nfc) == item_text(nfd) == "Crème Brûlée Set . Casa Nova"
    assert content_hash(item_text(nfc), "m") == content_hash(item_text(nfd), "m")
    assert content_hash(item_text(nfc), "m") != content_hash(item_text(nfc), "other model")


any_field = st.one_of(
    st.none(),
    st.text(),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=50),
    st.integers(),
    st.floats(allow_nan=True),
    st.just("\ud800 lone surrogate"),
    st.just("\x00\x1f\x7f control"),
    st.just("🙂" * 10_000),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({name: any_field for name in FIELDS}))
def test_any_catalog_text_gives_bounded_utf8_text_and_a_unit_or_zero_vector(item: dict) -> None:
    text = item_text(item)
    assert len(text) <= MAX_CHARS
    text.encode("utf-8")  # no lone surrogate survives
    assert not any(unicodedata.category(ch)[0] == "C" for ch in text)
    vec = ENCODER.embed([text])[0]
    assert np.isfinite(vec).all()
    norm = float(np.linalg.norm(vec))
    assert norm == 0.0 or abs(norm - 1.0) < 1e-5
    if not text:
        assert norm == 0.0  # no text, no vector: never a made-up direction


def test_clean_truncates_huge_text_and_keeps_ordinary_text() -> None:
    assert len(clean("x" * 1_000_000)) == MAX_CHARS
    assert clean("  Olive & Oak  Honey ") == "Olive & Oak Honey"
    assert clean(None) == "" and clean(12.5) == "12.5"


def _items(**changes: dict) -> pd.DataFrame:
    rows = {
        "i1": {"title": "Lamp", "category": "home", "brand": "Linden", "description": "warm"},
        "i2": {"title": "Kite", "category": "toys", "brand": "Wonderly", "description": None},
        "i3": {"title": None, "category": None, "brand": None, "description": None},
    }
    for item, fields in changes.items():
        rows[item] = {**rows[item], **fields}
    return pd.DataFrame([{"item_id": k, **v} for k, v in rows.items()])


def test_only_new_and_changed_items_are_planned() -> None:
    empty = pd.DataFrame({"item_id": [], "content_hash": []})
    first = plan(_items(), empty, ENCODER.model_id)
    assert list(first["item_id"]) == ["i1", "i2", "i3"]
    stored = first[["item_id", "content_hash"]]
    assert plan(_items(), stored, ENCODER.model_id).empty
    changed = plan(_items(i2={"title": "Red Kite"}), stored, ENCODER.model_id)
    assert list(changed["item_id"]) == ["i2"]
    # A new model version re-embeds everything once.
    assert len(plan(_items(), stored, "another/model@2")) == 3
    rows = vectors_for(first, ENCODER, pd.Timestamp("2026-11-30", tz="UTC").to_pydatetime())
    assert list(rows["has_text"]) == [True, True, False]
    ids, vecs, model = vectors_of(rows.assign(model=ENCODER.model_id)[rows["has_text"]])
    assert list(ids) == ["i1", "i2"] and vecs.shape == (2, DIM) and model == ENCODER.model_id


def test_the_map_recovers_a_linear_relation_and_needs_enough_items() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.normal(size=(32, 8))
    y = (x @ w + 0.5 + rng.normal(0, 0.01, (400, 8))).astype(np.float32)
    cmap = content_map.fit(x, y, "m", seed=1)
    assert cmap is not None and cmap.holdout_r2 > 0.95 and cmap.reg in content_map.GRID
    new = rng.normal(size=(5, 32)).astype(np.float32)
    assert np.allclose(cmap.apply(new), new @ w + 0.5, atol=0.1)
    back = content_map.ContentMap.from_array(cmap.as_array(), "m", {"reg": cmap.reg})
    assert np.array_equal(back.apply(new), cmap.apply(new))
    # Zero (no text) and non-finite rows are left out; too few items: no map.
    x[:395] = 0
    assert content_map.fit(x, y, "m") is None
    noise = rng.normal(size=(400, 32)).astype(np.float32)
    unrelated = content_map.fit(noise, y, "m", seed=1)
    assert unrelated is not None and unrelated.holdout_r2 < 0.2
