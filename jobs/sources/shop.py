"""Synthetic shop: a catalog and a clickstream that follow the landing contracts.

Reads: nothing but its settings. Writes: ``<landing>/catalog/dt=…/items.jsonl`` and
``<landing>/events/dt=…/hr=…/gen-dNNNN.jsonl`` plus ``<landing>/_generator.json``.

The shop is built to give collaborative filtering real signal: every user has a stable
latent taste drawn near the centroids of one or two favourite categories, items sit near
their category's centroid, and the chance of a click grows with the user-item affinity.
Item popularity is Zipf-like, the funnel runs impression → click → view → add_to_cart →
purchase with a click-through rate of a few percent, and day ``d`` depends only on
``(seed, d)``, so appending days later gives exactly what one long run would have.
Everything is vectorised with numpy; a million events take a few seconds.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from jobs.config import Settings
from jobs.contracts import ATTRIBUTION_FIELDS, EVENT_FIELDS, MAX_ID_LENGTH, Reason
from jobs.sources.landing import MS_PER_HOUR, write_hour_files, write_text_atomic

if TYPE_CHECKING:
    from jobs.sources.storefront import Attribution, Storefront

STATE_FILE = "_generator.json"
N_FACTORS = 8
EPOCH_MS_SHARE = 0.1  # the "app" client sends epoch milliseconds instead of ISO strings
# The click logit of an impression (simulate_day): intercept + affinity·(user·item taste)
# − position·slot + popularity·log(exposure × n_items). The reference models of
# jobs.sources.storefront rank by the same terms, so they read these, never copies.
CLICK_INTERCEPT = -5.0
CLICK_AFFINITY = 0.55
CLICK_POSITION = 0.08
CLICK_POPULARITY = 0.15

CATEGORIES: dict[str, dict[str, object]] = {
    "electronics": {
        "brands": ["Voltix", "Nuvia", "Tekko", "Ampere"],
        "nouns": ["headphones", "speaker", "charger", "tablet", "smartwatch", "camera"],
        "price": (20.0, 600.0),
    },
    "books": {
        "brands": ["Inkwell", "Papyr", "Quillhouse"],
        "nouns": ["novel", "cookbook", "atlas", "biography", "poetry collection"],
        "price": (6.0, 45.0),
    },
    "home": {
        "brands": ["Hearth", "Casa Nova", "Linden"],
        "nouns": ["lamp", "throw blanket", "vase", "cushion", "kettle", "rug"],
        "price": (10.0, 250.0),
    },
    "fashion": {
        "brands": ["Loom", "Threadly", "Atelier K"],
        "nouns": ["jacket", "sneakers", "scarf", "dress", "backpack", "jeans"],
        "price": (15.0, 300.0),
    },
    "sports": {
        "brands": ["Stride", "Peakform", "Aqualine"],
        "nouns": ["yoga mat", "running shoes", "water bottle", "tennis racket", "dumbbells"],
        "price": (8.0, 220.0),
    },
    "beauty": {
        "brands": ["Lumea", "Petal", "Dermis"],
        "nouns": ["face serum", "lip balm", "shampoo", "perfume", "hand cream"],
        "price": (5.0, 120.0),
    },
    "toys": {
        "brands": ["Brickle", "Wonderly", "Tiny Giants"],
        "nouns": ["puzzle", "building set", "plush bear", "board game", "kite"],
        "price": (7.0, 150.0),
    },
    "grocery": {
        "brands": ["Harvest", "Olive & Oak", "Bean There"],
        "nouns": ["coffee beans", "olive oil", "green tea", "dark chocolate", "honey"],
        "price": (3.0, 40.0),
    },
    "garden": {
        "brands": ["Verdant", "Rootstock"],
        "nouns": ["planter", "pruning shears", "seed kit", "hose", "bird feeder"],
        "price": (6.0, 180.0),
    },
    "gaming": {
        "brands": ["Pixelforge", "Respawn Gear"],
        "nouns": ["controller", "gaming mouse", "headset", "keyboard", "game voucher"],
        "price": (15.0, 200.0),
    },
}
ADJECTIVES = ["classic", "compact", "premium", "eco", "deluxe", "everyday", "pro", "vintage"]
# Words for the hidden taste axes (N_FACTORS of them): an item is described by the poles of
# the axes on which it sits furthest from its category's centre, so its text carries what
# makes people like it, as a real product description would (issue 18: content signals).
TASTE_WORDS = [
    ("bold", "subtle"),
    ("sporty", "relaxed"),
    ("bright", "muted"),
    ("rugged", "delicate"),
    ("modern", "traditional"),
    ("playful", "serious"),
    ("luxurious", "budget"),
    ("minimalist", "ornate"),
]

# Malformed record kinds and the quarantine reason the ETL must give each of them.
MALFORMED_KINDS: dict[str, Reason] = {
    "truncated_json": Reason.UNPARSEABLE,
    "garbage_text": Reason.UNPARSEABLE,
    "json_array": Reason.NOT_AN_OBJECT,
    "missing_event_id": Reason.MISSING_FIELD,
    "missing_user_id": Reason.MISSING_FIELD,
    "missing_item_id": Reason.MISSING_FIELD,
    "missing_ts": Reason.MISSING_FIELD,
    "null_event_type": Reason.MISSING_FIELD,
    "unknown_event_type": Reason.UNKNOWN_EVENT_TYPE,
    "ts_garbage": Reason.BAD_TIMESTAMP,
    "ts_future": Reason.FUTURE_TIMESTAMP,
    "ts_ancient": Reason.ANCIENT_TIMESTAMP,
    "negative_price": Reason.NEGATIVE_VALUE,
    "negative_quantity": Reason.NEGATIVE_VALUE,
    "position_not_int": Reason.WRONG_TYPE,
    "price_not_number": Reason.WRONG_TYPE,
    "user_id_object": Reason.WRONG_TYPE,
    "oversized_id": Reason.BAD_ID,
    "control_char_id": Reason.BAD_ID,
}


@dataclass(frozen=True)
class ShopSpec:
    """What defines a shop; two runs with the same spec write the same bytes."""

    seed: int
    n_users: int
    n_items: int
    sessions_per_user_day: float
    start: str
    malformed_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    # The reacting storefront and drift (jobs.sources.storefront): not part of the world,
    # so a shop may be continued with them switched on.
    react: bool = False
    rec_slots: int = 4
    drift_day: int | None = None
    drift_share: float = 0.6
    drift_boost: float = 5.0

    def __post_init__(self) -> None:
        # The CLI passes these straight through (not via Settings): refuse nonsense here.
        problems = []
        if self.rec_slots < 1:
            problems.append(f"rec_slots {self.rec_slots} (at least 1)")
        if self.drift_day is not None and self.drift_day < 0:
            problems.append(f"drift day {self.drift_day} (0 is the first day)")
        if not 0.0 <= self.drift_share <= 1.0:
            problems.append(f"drift share {self.drift_share} (between 0 and 1)")
        if self.drift_boost < 1.0:
            problems.append(f"drift boost {self.drift_boost} (at least 1)")
        if problems:
            raise ValueError("invalid shop: " + "; ".join(problems))

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> ShopSpec:
        values: dict[str, object] = {
            "seed": settings.seed,
            "n_users": settings.gen_users,
            "n_items": settings.gen_items,
            "sessions_per_user_day": settings.gen_sessions_per_user_day,
            "start": settings.gen_start,
            "malformed_fraction": settings.gen_malformed_fraction,
            "duplicate_fraction": settings.gen_duplicate_fraction,
            "react": settings.gen_react,
            "rec_slots": settings.gen_rec_slots,
            "drift_day": settings.gen_drift_day,
            "drift_share": settings.gen_drift_share,
            "drift_boost": settings.gen_drift_boost,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def start_dt(self) -> datetime:
        start = datetime.fromisoformat(self.start)
        if start.tzinfo is None:
            raise ValueError(f"generator start {self.start!r} needs a time zone")
        return start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    def world_key(self) -> dict[str, object]:
        """The part of the spec that defines users and items (must match to append)."""
        return {
            "seed": self.seed,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "start": self.start,
        }


@dataclass
class World:
    """Users, items and their hidden tastes; rebuilt identically from the spec."""

    items: pd.DataFrame
    item_vec: np.ndarray
    item_pop: np.ndarray
    item_cat: np.ndarray
    user_vec: np.ndarray
    user_cat_pref: np.ndarray
    user_activity: np.ndarray
    user_consent: np.ndarray
    # How the tastes were made (category centroids, each user's two favourite categories
    # and whether the second counts): what injected drift moves (jobs.sources.storefront).
    centroids: np.ndarray | None = None
    user_fav: np.ndarray | None = None
    user_two: np.ndarray | None = None


@dataclass
class GenerationReport:
    """What one `generate` call wrote, for the CLI and for tests."""

    days: list[str] = field(default_factory=list)
    events_by_type: dict[str, int] = field(default_factory=dict)
    valid_events: int = 0
    duplicates: int = 0
    malformed_by_kind: dict[str, int] = field(default_factory=dict)
    # Malformed lines made from a non-consenting user's event: ingest judges consent first,
    # so those that still say so are dropped as non-consented, not quarantined.
    malformed_not_consented: int = 0
    lines: int = 0
    files: int = 0
    items: int = 0
    users: int = 0
    seconds: float = 0.0
    # Reacting mode: impressions and clicks of recommended slots, and what each day showed.
    rec_impressions: int = 0
    rec_clicks: int = 0
    shown: dict[str, dict[str, object]] = field(default_factory=dict)
    drift: dict[str, object] | None = None

    @property
    def malformed(self) -> int:
        return sum(self.malformed_by_kind.values())

    @property
    def events_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["malformed"] = self.malformed
        out["events_per_second"] = round(self.events_per_second)
        return out


def build_world(spec: ShopSpec) -> World:
    """Catalog and hidden tastes, deterministic in ``spec.seed``."""
    rng = np.random.default_rng([spec.seed, 0])
    cats = list(CATEGORIES)
    n_cat = len(cats)
    centroids = rng.normal(0.0, 1.0, (n_cat, N_FACTORS))

    item_cat = rng.integers(0, n_cat, spec.n_items)
    item_vec = centroids[item_cat] + rng.normal(0.0, 0.45, (spec.n_items, N_FACTORS))
    # Zipf-like popularity: weight 1/rank^1.1 over a random ordering of items.
    ranks = rng.permutation(spec.n_items) + 1
    item_pop = 1.0 / ranks**1.1
    item_pop /= item_pop.sum()

    fav1 = rng.integers(0, n_cat, spec.n_users)
    fav2 = rng.integers(0, n_cat, spec.n_users)
    two = rng.random(spec.n_users) < 0.4
    user_vec = np.where(two[:, None], 0.5 * (centroids[fav1] + centroids[fav2]), centroids[fav1])
    user_vec = user_vec + rng.normal(0.0, 0.35, (spec.n_users, N_FACTORS))
    pref = np.full((spec.n_users, n_cat), 0.04)
    pref[np.arange(spec.n_users), fav1] += 1.0
    pref[np.arange(spec.n_users), fav2] += np.where(two, 0.8, 0.0)
    pref /= pref.sum(axis=1, keepdims=True)
    activity = rng.lognormal(0.0, 0.8, spec.n_users)
    activity /= activity.mean()
    consent = rng.random(spec.n_users) >= 0.02

    items = _catalog(spec, rng, item_cat, cats, taste_words(item_vec - centroids[item_cat]))
    return World(
        items,
        item_vec,
        item_pop,
        item_cat,
        user_vec,
        pref,
        activity,
        consent,
        centroids=centroids,
        user_fav=np.stack([fav1, fav2], axis=1),
        user_two=two,
    )


def taste_words(offsets: np.ndarray, n: int = 2) -> list[tuple[str, ...]]:
    """The pole words of each item's ``n`` strongest taste axes (offset from its category's
    centre), strongest first. Deterministic and draws nothing from the generator's random
    streams, so the events are the same as before items had these words."""
    strongest = np.argsort(-np.abs(offsets), axis=1, kind="stable")[:, :n]
    return [
        tuple(TASTE_WORDS[a][0 if offsets[i, a] > 0 else 1] for a in axes)
        for i, axes in enumerate(strongest)
    ]


def _catalog(
    spec: ShopSpec,
    rng: np.random.Generator,
    item_cat: np.ndarray,
    cats: list[str],
    words: list[tuple[str, ...]],
) -> pd.DataFrame:
    rows = []
    for i, c in enumerate(item_cat):
        cat = cats[c]
        info = CATEGORIES[cat]
        brand = str(rng.choice(info["brands"]))  # type: ignore[arg-type]
        noun = str(rng.choice(info["nouns"]))  # type: ignore[arg-type]
        adj = str(rng.choice(ADJECTIVES))
        lo, hi = info["price"]  # type: ignore[misc]
        price = round(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), 2)
        rows.append(
            {
                "item_id": item_id(i),
                "title": f"{brand} {words[i][0].capitalize()} {adj.capitalize()} {noun.title()}",
                "category": cat,
                "brand": brand,
                "price": price,
                "in_stock": bool(rng.random() >= 0.07),
                "description": f"A {adj} {noun} by {brand}, from our {cat} range: "
                f"{' and '.join(words[i])}.",
                "updated_at": (spec.start_dt - timedelta(days=int(rng.integers(1, 60))))
                .isoformat()
                .replace("+00:00", "Z"),
            }
        )
    return pd.DataFrame(rows)


def user_id(idx: int) -> str:
    return f"u{idx:06d}"


def item_id(idx: int) -> str:
    return f"i{idx:05d}"


def simulate_day(
    spec: ShopSpec, world: World, day: int, storefront: Storefront | None = None
) -> pd.DataFrame:
    """All valid events of one day, sorted by time, as contract columns.

    With a ``storefront`` (the reacting mode, :mod:`jobs.sources.storefront`) the first
    slots of each session show the user's recommended list instead of the generator's own
    pick; everything else, including every random draw, is the same, so without one the
    day is byte for byte what it always was.
    """
    rng = np.random.default_rng([spec.seed, 1, day])
    day_start = spec.start_dt + timedelta(days=day)
    n_users, n_items = world.user_vec.shape[0], world.item_vec.shape[0]

    # Sessions: heavy-tailed user activity, evening-peaked start hours.
    per_user = rng.poisson(spec.sessions_per_user_day * world.user_activity)
    s_user = np.repeat(np.arange(n_users), per_user)
    n_sess = s_user.size
    hour_w = 1.0 + np.sin((np.arange(24) - 14) / 24 * 2 * np.pi) * 0.6
    s_hour = rng.choice(24, n_sess, p=hour_w / hour_w.sum())
    s_start = s_hour * 3600.0 + rng.uniform(0, 3600, n_sess)

    # Impressions: a slate per session, half by taste (favourite categories), half by
    # global popularity, as a real recommender mixes exploitation and trending items.
    n_imp = 4 + rng.poisson(8, n_sess)
    i_sess = np.repeat(np.arange(n_sess), n_imp)
    i_user = s_user[i_sess]
    i_pos = np.arange(i_sess.size) - np.repeat(np.cumsum(n_imp) - n_imp, n_imp)
    i_item = _sample_items(rng, world, i_user)
    # Attribution of each impression: an index into the storefront's answers, -1 organic.
    i_attr = np.full(i_sess.size, -1)
    attributions: list[Attribution] = []
    if storefront is not None:
        offer = storefront.show(np.unique(s_user))
        attributions = offer.attributions
        slot = i_pos < offer.items.shape[1]
        rec = np.full(i_sess.size, -1)
        rec[slot] = offer.items[i_user[slot], i_pos[slot]]
        on = rec >= 0
        i_item[on] = rec[on]
        i_attr[on] = offer.attr[i_user[on]]
    score = np.einsum("ij,ij->i", world.user_vec[i_user], world.item_vec[i_item])
    logit = (
        CLICK_INTERCEPT
        + CLICK_AFFINITY * score
        - CLICK_POSITION * i_pos
        + CLICK_POPULARITY * np.log(world.item_pop[i_item] * n_items)
    )
    clicked = rng.random(i_sess.size) < 1.0 / (1.0 + np.exp(-logit))
    i_ts = s_start[i_sess] + i_pos * 2.0

    c_idx = np.flatnonzero(clicked)
    c_ts = i_ts[c_idx] + rng.exponential(8.0, c_idx.size) + 1.0
    v_ts = c_ts + 1.0
    affinity = 1.0 / (1.0 + np.exp(-(score[c_idx] - 1.0)))
    carted = rng.random(c_idx.size) < 0.12 + 0.3 * affinity
    a_idx = c_idx[carted]
    a_ts = v_ts[carted] + rng.exponential(60.0, a_idx.size)
    bought = rng.random(a_idx.size) < 0.45
    p_idx = a_idx[bought]
    p_ts = a_ts[bought] + rng.exponential(240.0, p_idx.size)

    # Organic browsing: views that no impression led to (search, category pages).
    n_org = rng.poisson(1.2, n_sess)
    o_sess = np.repeat(np.arange(n_sess), n_org)
    o_item = _sample_items(rng, world, s_user[o_sess], taste_share=0.8)
    o_ts = s_start[o_sess] + rng.uniform(0, 900, o_sess.size)

    # Add-to-carts and purchases carry the position only when a recommendation led to them.
    a_pos = np.where(i_attr[a_idx] >= 0, i_pos[a_idx], -1)
    p_pos = np.where(i_attr[p_idx] >= 0, i_pos[p_idx], -1)
    parts = [
        ("impression", i_sess, i_item, i_ts, i_pos, i_attr),
        ("click", i_sess[c_idx], i_item[c_idx], c_ts, i_pos[c_idx], i_attr[c_idx]),
        ("view", i_sess[c_idx], i_item[c_idx], v_ts, i_pos[c_idx], i_attr[c_idx]),
        ("add_to_cart", i_sess[a_idx], i_item[a_idx], a_ts, a_pos, i_attr[a_idx]),
        ("purchase", i_sess[p_idx], i_item[p_idx], p_ts, p_pos, i_attr[p_idx]),
        ("view", o_sess, o_item, o_ts, np.full(o_sess.size, -1), np.full(o_sess.size, -1)),
    ]
    etype = np.concatenate([np.full(p[1].size, p[0]) for p in parts])
    sess = np.concatenate([p[1] for p in parts])
    item = np.concatenate([p[2] for p in parts])
    secs = np.minimum(np.concatenate([p[3] for p in parts]), 86_399.999)
    pos = np.concatenate([p[4] for p in parts])
    attr = np.concatenate([p[5] for p in parts])

    order = np.argsort(secs, kind="stable")
    etype, sess, item, secs, pos = etype[order], sess[order], item[order], secs[order], pos[order]
    attr = attr[order]
    user = s_user[sess]
    n = etype.size
    ts_ms = int(day_start.timestamp() * 1000) + (secs * 1000).astype(np.int64)
    iso = np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms", timezone="UTC")
    as_epoch = rng.random(n) < EPOCH_MS_SHARE
    ts: np.ndarray = np.where(as_epoch, ts_ms.astype(object), iso.astype(object))

    is_buy = etype == "purchase"
    shown = pos >= 0
    sess_ids = np.char.add(f"s{spec.seed}-{day}-", sess.astype(str))
    prices = world.items["price"].to_numpy()
    # Organic slots, in either mode: the 0-based slot on the page and the session's page
    # request, so days with and without --react line up.
    request_id = np.where(shown, np.char.add("r", sess_ids), None)
    position = pd.Series(pos, dtype="Int64").where(shown)
    if storefront is not None:
        # A recommended slot (and what followed it) carries its 1-based rank in the shown
        # list and the service answer's request_id (None for a CDN list): the attribution
        # contract's convention; rec_source tells the two kinds of position apart.
        rec = attr >= 0
        request_id = np.where(
            rec, _attribution_column(attributions, attr, "request_id"), request_id
        )
        position = position.mask(rec, pd.Series(pos + 1, dtype="Int64"))
    frame = pd.DataFrame(
        {
            "event_id": np.char.add(f"ev{spec.seed}-{day}-", np.arange(n).astype(str)),
            "ts": ts,
            "user_id": np.char.add("u", np.char.zfill(user.astype(str), 6)),
            "item_id": np.char.add("i", np.char.zfill(item.astype(str), 5)),
            "event_type": etype,
            "session_id": sess_ids,
            "request_id": request_id,
            "position": position,
            "quantity": pd.Series(1 + rng.poisson(0.3, n), dtype="Int64").where(is_buy),
            "price": np.where(is_buy, prices[item], np.nan),
            "consent": world.user_consent[user],
            "_ts_ms": ts_ms,
        }
    )
    if storefront is not None:
        for name in ATTRIBUTION_FIELDS:
            frame[name] = _attribution_column(attributions, attr, name)
    return frame


def _attribution_column(attributions: list[Attribution], attr: np.ndarray, name: str) -> np.ndarray:
    """One attribution field per event (None for organic events, ``attr`` -1)."""
    values = np.array([getattr(a, name) for a in attributions] + [None], dtype=object)
    return values[attr]


def _sample_items(
    rng: np.random.Generator, world: World, users: np.ndarray, taste_share: float = 0.5
) -> np.ndarray:
    """Items for the given users: by taste (category preference × popularity) or trend."""
    n = users.size
    out = rng.choice(world.item_pop.size, n, p=world.item_pop)
    by_taste = rng.random(n) < taste_share
    idx = np.flatnonzero(by_taste)
    cdf = np.cumsum(world.user_cat_pref[users[idx]], axis=1)
    cat = (rng.random(idx.size)[:, None] > cdf).sum(axis=1)
    cat = np.minimum(cat, cdf.shape[1] - 1)
    for c in np.unique(cat):
        members = np.flatnonzero(world.item_cat == c)
        if members.size == 0:
            continue
        w = world.item_pop[members] / world.item_pop[members].sum()
        sel = idx[cat == c]
        out[sel] = members[rng.choice(members.size, sel.size, p=w)]
    return out


def malformed_line(kind: str, record: dict[str, object], rng: np.random.Generator) -> str:
    """One bad landing line of the given kind, derived from a valid record."""
    rec = dict(record)
    if kind == "truncated_json":
        text = json.dumps(rec)
        return text[: max(5, len(text) // 2)]
    if kind == "garbage_text":
        return "GET /products?id=" + str(rec["item_id"]) + " HTTP/1.1"
    if kind == "json_array":
        return json.dumps(list(rec.values()))
    if kind.startswith("missing_"):
        rec.pop(kind.removeprefix("missing_"))
    elif kind == "null_event_type":
        rec["event_type"] = None
    elif kind == "unknown_event_type":
        rec["event_type"] = str(rng.choice(["hover", "wishlist", "Purchase!", "refund"]))
    elif kind == "ts_garbage":
        rec["ts"] = str(rng.choice(["yesterday", "2026-13-45T99:00:00Z", "n/a", ""]))
    elif kind == "ts_future":
        rec["ts"] = "2031-06-01T12:00:00Z"
    elif kind == "ts_ancient":
        rec["ts"] = "1971-02-03T04:05:06Z"
    elif kind == "negative_price":
        rec["event_type"], rec["quantity"], rec["price"] = "purchase", 1, -19.99
    elif kind == "negative_quantity":
        rec["event_type"], rec["quantity"], rec["price"] = "purchase", -2, 9.5
    elif kind == "position_not_int":
        rec["position"] = "third"
    elif kind == "price_not_number":
        rec["event_type"], rec["quantity"], rec["price"] = "purchase", 1, "12,99 EUR"
    elif kind == "user_id_object":
        rec["user_id"] = {"id": rec["user_id"]}
    elif kind == "oversized_id":
        rec["item_id"] = "i" + "9" * (MAX_ID_LENGTH * 4)
    elif kind == "control_char_id":
        rec["user_id"] = f"{rec['user_id']}\u0000\u0007"
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(rec)


def _day_lines(
    spec: ShopSpec, events: pd.DataFrame, day: int, report: GenerationReport
) -> tuple[np.ndarray, np.ndarray]:
    """(hours, JSON lines) sorted by hour, with duplicates and malformed lines mixed in."""
    rng = np.random.default_rng([spec.seed, 2, day])
    hours = events["_ts_ms"].to_numpy() // MS_PER_HOUR
    # The reacting mode's events carry the attribution fields as well.
    body = events[[*EVENT_FIELDS, *(f for f in ATTRIBUTION_FIELDS if f in events.columns)]]
    lines = np.array(body.to_json(orient="records", lines=True).splitlines(), dtype=object)
    n_valid = lines.size

    n_dup = round(spec.duplicate_fraction * n_valid)
    dup = np.sort(rng.choice(n_valid, n_dup, replace=False)) if n_dup else np.array([], int)
    f = spec.malformed_fraction
    n_bad = round(f / (1.0 - f) * (n_valid + n_dup))
    bad_src = rng.choice(n_valid, n_bad) if n_bad else np.array([], int)
    kinds = list(MALFORMED_KINDS)
    bad_kind = [kinds[i % len(kinds)] for i in rng.permutation(n_bad)]
    records = body.iloc[bad_src].to_dict(orient="records") if n_bad else []
    bad_lines = [
        malformed_line(k, {key: _plain(v) for key, v in r.items()}, rng)
        for k, r in zip(bad_kind, records, strict=True)
    ]

    all_lines = np.concatenate([lines, lines[dup], np.array(bad_lines, dtype=object)])
    all_hours = np.concatenate([hours, hours[dup], hours[bad_src]])
    order = rng.permutation(all_lines.size) if (n_dup or n_bad) else np.arange(all_lines.size)
    # Keep each hour's lines in a stable order after the shuffle that mixes the bad in.
    order = order[np.argsort(all_hours[order], kind="stable")]
    all_hours, all_lines = all_hours[order], all_lines[order]
    report.valid_events += n_valid
    report.duplicates += n_dup
    for k, v in Counter(bad_kind).items():
        report.malformed_by_kind[k] = report.malformed_by_kind.get(k, 0) + v
    report.malformed_not_consented += sum(1 for r in records if not bool(r["consent"]))
    for k, v in events["event_type"].value_counts().items():
        report.events_by_type[str(k)] = report.events_by_type.get(str(k), 0) + int(v)
    report.lines += all_lines.size
    return all_hours, all_lines


def _plain(value: object) -> object:
    """numpy/pandas scalars to JSON-native values (missing values dropped to None)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _catalog_changes(spec: ShopSpec, world: World, day: int) -> pd.DataFrame:
    """A few items change price or stock during each later day."""
    rng = np.random.default_rng([spec.seed, 3, day])
    n = max(1, int(0.03 * len(world.items)))
    changed = world.items.iloc[np.sort(rng.choice(len(world.items), n, replace=False))].copy()
    changed["price"] = (changed["price"] * rng.uniform(0.8, 1.2, n)).round(2)
    changed["in_stock"] = rng.random(n) >= 0.15
    when = spec.start_dt + timedelta(days=day, seconds=int(rng.integers(0, 86_400)))
    changed["updated_at"] = when.isoformat().replace("+00:00", "Z")
    return changed


def _check_appended_drift(
    spec: ShopSpec, earlier: dict[str, object] | None, first: int, landing: Path
) -> None:
    """Refuse an appending run whose drift contradicts the days already written.

    The recorded drift (``_generator.json``) describes every day written so far; appended
    days must continue it, or the shop no longer equals one long run and the record lies
    about the earlier days. A drift may be named on an append only when none is recorded
    and it starts at or after the first appended day (the earlier days had none).
    """
    if spec.drift_day is None:
        return
    named = {"from_day": spec.drift_day, "share": spec.drift_share, "boost": spec.drift_boost}
    if earlier is not None:
        recorded = {k: earlier.get(k) for k in named}
        if recorded != named:
            raise ValueError(
                f"{landing} was generated with drift {recorded}; this --append names {named}. "
                "Append without --drift to continue the recorded drift, or regenerate the "
                "shop without --append"
            )
    elif spec.drift_day < first:
        raise ValueError(
            f"--drift {spec.drift_day} on --append: days 0–{first - 1} of {landing} are "
            f"already written without drift; a drift appended now must start at day {first} "
            "or later (or regenerate the shop without --append)"
        )


def generate(
    settings: Settings,
    days: int | None = None,
    append: bool = False,
    force: bool = False,
    progress: bool = False,
    storefront: Storefront | None = None,
    **overrides: object,
) -> GenerationReport:
    """Write ``days`` days of shop data to the landing folder and return what was written.

    Without ``append`` the days start at the spec's first day (rewriting the same bytes if
    they exist: reruns are idempotent); with ``append`` they follow the last day written.
    ``react`` (or a ``storefront``) shows the live recommendations in the first slots of
    each session and ``drift_day`` shifts tastes and the catalog mix from that day
    (:mod:`jobs.sources.storefront`); an appending run keeps a drift recorded earlier.
    """
    spec = ShopSpec.from_settings(settings, **overrides)
    days = days or settings.gen_days
    landing = Path(settings.landing_dir or "")
    state_path = landing / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state and state["world"] != spec.world_key() and not force:
        raise ValueError(
            f"{landing} already holds a shop generated with {state['world']}; "
            "use the same seed/users/items/start, another data root, or force=True"
        )
    first = state["days_written"] if (append and state) else 0
    earlier = (state or {}).get("drift") if append else None
    if spec.drift_day is None and earlier:
        spec = replace(
            spec,
            drift_day=earlier["from_day"],
            drift_share=earlier["share"],
            drift_boost=earlier["boost"],
        )
    elif append and state:
        _check_appended_drift(spec, earlier, first, landing)
    t0 = time.perf_counter()
    world = build_world(spec)
    report = GenerationReport(items=len(world.items), users=len(world.user_vec))
    drifted = None
    if spec.drift_day is not None:
        from jobs.sources.storefront import drift_world

        drifted, report.drift = drift_world(spec, world)
    if spec.react and storefront is None:
        from jobs.sources.storefront import PublishedStorefront

        storefront = PublishedStorefront(settings, world, spec.rec_slots)

    day_range = range(first, first + days)
    if progress:
        from tqdm import tqdm

        day_range = tqdm(day_range, desc="generating days", unit="day")
    for day in day_range:
        date = spec.start_dt + timedelta(days=day)
        catalog = world.items if day == 0 else _catalog_changes(spec, world, day)
        write_text_atomic(
            settings.catalog_dir / f"dt={date:%Y-%m-%d}" / "items.jsonl",
            catalog.to_json(orient="records", lines=True),
        )
        today = world
        if drifted is not None and spec.drift_day is not None and day >= spec.drift_day:
            today = drifted
        events = simulate_day(spec, today, day, storefront)
        if storefront is not None:
            report.shown[f"{date:%Y-%m-%d}"] = storefront.describe()
            rec = events["rec_source"].notna().to_numpy()
            kind = events["event_type"].to_numpy()
            report.rec_impressions += int((rec & (kind == "impression")).sum())
            report.rec_clicks += int((rec & (kind == "click")).sum())
        hours, lines = _day_lines(spec, events, day, report)
        report.files += write_hour_files(settings.events_dir, hours, lines, f"gen-d{day:04d}")
        report.days.append(f"{date:%Y-%m-%d}")

    written = max(first + days, state["days_written"] if state and not force else 0)
    new_state = {
        "world": spec.world_key(),
        "days_written": written,
        "start": spec.start_dt.isoformat(),
    }
    if report.drift is not None:
        new_state["drift"] = report.drift
    # What each day showed: the days this run wrote replace their old entries, including
    # by nothing when they were written without --react this time.
    kept = {} if force else dict((state or {}).get("shown", {}))
    for day_name in report.days:
        kept.pop(day_name, None)
    shown = {**kept, **report.shown}
    if shown:
        new_state["shown"] = dict(sorted(shown.items()))
    write_text_atomic(state_path, json.dumps(new_state, indent=2) + "\n")
    report.seconds = time.perf_counter() - t0
    return report
