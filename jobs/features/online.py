"""Online feature reads: what the recommender service asks the Feast online store.

Reads: the online store (SQLite or Redis) through a ``FeatureStore``. Writes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobs.features.definitions import (
    ITEM_CONTENT,
    ITEM_STATS,
    ITEM_STOCK,
    USER_RECENT_ITEMS,
    USER_STATS,
    VIEW_KEYS,
)

if TYPE_CHECKING:
    from feast import FeatureStore


# -- online reads (what the recommender service calls) ---------------------------------------
def _online(
    fs: FeatureStore, view: str, ids: list[str], features: list[str] | None = None
) -> tuple[list[str], dict[str, list[Any]]]:
    """Online values of ``view`` for unique ``ids`` in request order."""
    unique = list(dict.fromkeys(ids))
    if features is None:
        features = [f.name for f in fs.get_feature_view(view).features]
    if not unique:
        return unique, {f: [] for f in features}
    response = fs.get_online_features(
        features=[f"{view}:{f}" for f in features],
        entity_rows=[{VIEW_KEYS[view]: i} for i in unique],
    ).to_dict()
    return unique, {f: response[f] for f in features}


def _rows(fs: FeatureStore, view: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Known entities only: an unknown or erased one (all values null) is left out."""
    unique, values = _online(fs, view, ids)
    out: dict[str, dict[str, Any]] = {}
    for n, entity in enumerate(unique):
        row = {f: column[n] for f, column in values.items()}
        if any(v is not None for v in row.values()):
            out[entity] = row
    return out


def recent_items(fs: FeatureStore, user_ids: list[str]) -> dict[str, list[str]]:
    """Each user's most recent item ids, most recent first; unknown users get ``[]``."""
    unique, values = _online(fs, USER_RECENT_ITEMS, user_ids, ["recent_item_ids"])
    return {u: list(v or []) for u, v in zip(unique, values["recent_item_ids"], strict=True)}


def recent_rows(fs: FeatureStore, user_ids: list[str]) -> dict[str, list[tuple[str, int]]]:
    """Each user's recent (item id, epoch ms of its newest interaction), newest first;
    unknown users get ``[]`` (what the stream worker merges new clicks into)."""
    unique, values = _online(fs, USER_RECENT_ITEMS, user_ids, ["recent_item_ids", "recent_item_ts"])
    out: dict[str, list[tuple[str, int]]] = {}
    for n, user in enumerate(unique):
        items, stamps = values["recent_item_ids"][n] or [], values["recent_item_ts"][n] or []
        # A row written before the view had timestamps: its items count as older than any
        # event, in the row's own order.
        stamps = list(stamps) if len(stamps) == len(items) else [-1 - j for j in range(len(items))]
        out[user] = [(str(i), int(t)) for i, t in zip(items, stamps, strict=True)]
    return out


def stock(fs: FeatureStore, item_ids: list[str]) -> dict[str, bool]:
    """Whether each item is in stock; items with unknown stock are *absent*.

    Absent means the online store has no stock value for the item (not in the catalog,
    not materialized yet, or the catalog left ``in_stock`` empty): the caller decides
    whether to show such an item (``result.get(item_id, default)``).
    """
    unique, values = _online(fs, ITEM_STOCK, item_ids, ["in_stock"])
    return {i: bool(v) for i, v in zip(unique, values["in_stock"], strict=True) if v is not None}


def user_stats(fs: FeatureStore, user_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Activity counts of known users (unknown users are absent)."""
    return _rows(fs, USER_STATS, user_ids)


def item_stats(fs: FeatureStore, item_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Popularity and conversion stats of known items (unknown items are absent)."""
    return _rows(fs, ITEM_STATS, item_ids)


def content_vectors(fs: FeatureStore, item_ids: list[str]) -> dict[str, tuple[list[float], str]]:
    """Each item's content vector and embedding model id; items without one are absent."""
    unique, values = _online(fs, ITEM_CONTENT, item_ids, ["content_embedding", "content_model"])
    return {
        i: (list(v), str(m))
        for i, v, m in zip(
            unique, values["content_embedding"], values["content_model"], strict=True
        )
        if v and m
    }
