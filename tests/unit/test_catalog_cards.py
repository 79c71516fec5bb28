"""The published catalog's cards: the model's items in its order, the lists' stock, and
values a page can print whatever silver ``items`` holds."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from jobs.publish import catalog, layout

ROWS = [
    {"item_id": "i1", "title": "Mat", "category": "sports", "price": 9.999, "in_stock": True},
    {"item_id": "i2", "title": "Cup", "category": "home", "price": 3, "in_stock": False},
    {"item_id": "i9", "title": "Not in the model", "category": "x", "price": 1.0},
]


def test_cards_follow_the_models_items_and_only_them() -> None:
    got = catalog.cards(ROWS, ["i2", "i1", "i3"])
    assert list(got) == ["i2", "i1", "i3"]
    assert got["i1"] == {"title": "Mat", "category": "sports", "price": 10.0, "in_stock": True}
    assert got["i2"]["in_stock"] is False and got["i2"]["price"] == 3.0
    # Known to the model, missing from silver: a card of nulls, counted as in stock.
    assert got["i3"] == {"title": None, "category": None, "price": None, "in_stock": True}


def test_the_mask_the_lists_were_ranked_with_wins_over_the_rows_flag() -> None:
    got = catalog.cards(ROWS, ["i1", "i2"], in_stock={"i1": False, "i2": True})
    assert (got["i1"]["in_stock"], got["i2"]["in_stock"]) == (False, True)


def test_prices_a_page_cannot_print_are_null() -> None:
    for bad in (math.nan, math.inf, -math.inf, -0.01, True, "12.50", None, [1]):
        rows = [{"item_id": "i1", "price": bad}]
        assert catalog.cards(rows, ["i1"])["i1"]["price"] is None, bad
    assert catalog.cards([{"item_id": "i1", "price": 0}], ["i1"])["i1"]["price"] == 0.0


def test_texts_are_cut_and_blank_or_odd_ones_are_null() -> None:
    rows = [{"item_id": "i1", "title": "x" * 500, "category": "   "}]
    card = catalog.cards(rows, ["i1"])["i1"]
    assert len(card["title"]) == catalog.MAX_TEXT and card["title"].endswith("…")
    assert card["category"] is None
    assert catalog.cards([{"item_id": "i1", "title": 7}], ["i1"])["i1"]["title"] is None


def test_rows_with_unusable_ids_are_ignored() -> None:
    rows = [{"item_id": None, "title": "a"}, {"item_id": "", "title": "b"}, {"title": "c"}]
    assert catalog.cards(rows, ["i1"])["i1"]["title"] is None


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
)


@given(
    st.lists(
        st.fixed_dictionaries(
            {"item_id": st.one_of(st.text(min_size=1, max_size=5), st.none())},
            optional={f: values for f in ("title", "category", "price", "in_stock")},
        ),
        max_size=20,
    ),
    st.lists(st.text(min_size=1, max_size=5), unique=True, max_size=10),
)
def test_any_rows_give_a_body_clients_can_read(rows: list[dict], item_ids: list[str]) -> None:
    cards = catalog.cards(rows, item_ids)
    meta = {"publish_id": "20261201T000000Z-v1", "generated_at": "2026-12-01T00:00:00Z"}
    body = layout.decode(layout.encode(catalog.catalog_body(meta, cards)))
    assert list(body["items"]) == item_ids
    for card in body["items"].values():
        assert set(card) == set(catalog.CARD_FIELDS)
        assert card["price"] is None or (math.isfinite(card["price"]) and card["price"] >= 0)
        assert isinstance(card["in_stock"], bool)
        for text in (card["title"], card["category"]):
            assert text is None or (isinstance(text, str) and len(text) <= catalog.MAX_TEXT)
