"""The published catalog: what a page needs to draw the items a list names.

A published list carries item ids and scores only. A storefront built on the CDN alone
(``recflow shop``) still has to show a title, a category, a price and whether the item can
be bought, and it must not show stock the lists were not ranked with. So every publish
writes one more immutable object, ``recs/v/<publish_id>/catalog.json``, named by
``latest.json``: the items the publish's model can recommend, as silver ``items`` held them
at the Delta version the stock mask was read from (``in_stock`` is the very mask the lists
were ranked with). A list and its cards therefore always agree.

A shop of a million items renders cards from its own catalog service; one object of that
size would cost every page load tens of megabytes. Above ``RECFLOW_PUBLISH_CATALOG_MAX_ITEMS``
the object is not written (``latest.json`` then names none, and a page shows item ids).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jobs.contracts import MAX_ID_LENGTH

SCHEMA_VERSION = 1
# The fields of a card, besides the item id (the object's keys). Nothing about users.
CARD_FIELDS: tuple[str, ...] = ("title", "category", "price", "in_stock")
# Titles and categories are cut here: a page shows a line, not a description.
MAX_TEXT = 200


def _text(value: object, limit: int) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _price(value: object) -> float | None:
    """A price a page may print: finite and not negative, else None (shown as no price)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return round(number, 2) if math.isfinite(number) and number >= 0 else None


def cards(
    rows: Iterable[Mapping[str, Any]],
    item_ids: Sequence[str],
    in_stock: Mapping[str, bool] | None = None,
) -> dict[str, dict[str, Any]]:
    """``item_id -> card`` for the model's items, in the model's order.

    ``rows`` are silver ``items`` rows (any extra fields are ignored). An item the model
    knows but ``rows`` lacks still gets a card of nulls, so a client never has to tell a
    missing card from a missing item. ``in_stock`` (the mask the lists were ranked with)
    wins over the rows' own flag; without either an item counts as in stock, as
    :func:`jobs.publish.steps.read_stock` reads it.
    """
    by_id: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        item = row.get("item_id")
        if isinstance(item, str) and 0 < len(item) <= MAX_ID_LENGTH:
            by_id[item] = row
    out: dict[str, dict[str, Any]] = {}
    for item in item_ids:
        row = by_id.get(item, {})
        if in_stock is not None and item in in_stock:
            stocked = bool(in_stock[item])
        else:
            stocked = row.get("in_stock") is not False
        out[item] = {
            "title": _text(row.get("title"), MAX_TEXT),
            "category": _text(row.get("category"), MAX_TEXT),
            "price": _price(row.get("price")),
            "in_stock": stocked,
        }
    return out


def catalog_body(meta: Mapping[str, Any], items: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The object clients read: which publish it belongs to, and the cards."""
    return {
        "schema_version": SCHEMA_VERSION,
        "publish_id": meta["publish_id"],
        "generated_at": meta["generated_at"],
        "items": dict(items),
    }
