"""The reacting shop and injected drift, without Spark: models put in front of shoppers
in memory, CTR and attribution counted independently from the landing files."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from jobs.config import Settings, load_settings
from jobs.contracts import ATTRIBUTION_FIELDS, REC_SOURCES
from jobs.publish import layout
from jobs.publish.storage import LocalStore
from jobs.sources import storefront
from jobs.sources.shop import CATEGORIES, ShopSpec, build_world, generate
from jobs.sources.storefront import (
    Attribution,
    ModelStorefront,
    PublishedStorefront,
    StorefrontError,
    drift_world,
    http_fetch,
    reference_model,
)

SLOTS = 4
PUBLISH_ID = "20261101T000000Z-v7"


def _settings(root: Path, users: int = 1500, items: int = 200) -> Settings:
    return load_settings(data_root=root, gen_users=users, gen_items=items)


def _storefront(settings: Settings, kind: str, **spec: Any) -> ModelStorefront:
    world = build_world(ShopSpec.from_settings(settings, **spec))
    return ModelStorefront(reference_model(world, kind), world, SLOTS, PUBLISH_ID, "7")


def _records(settings: Settings) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for p in sorted(settings.events_dir.rglob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]


def _day(record: dict[str, Any]) -> str:
    """The UTC date of an event, whichever way its ``ts`` is written."""
    ts = record["ts"]
    if isinstance(ts, int):
        return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m-%d")
    return str(ts)[:10]


def _ctr(records: list[dict[str, Any]], day: str | None = None) -> tuple[float, float]:
    """(CTR of recommended slots, CTR of organic slots), counted from the landing lines."""
    n: Counter[tuple[bool, str]] = Counter()
    for r in records:
        if day is None or _day(r) == day:
            n[(r.get("rec_source") is not None, r["event_type"])] += 1
    return (
        n[(True, "click")] / n[(True, "impression")],
        n[(False, "click")] / n[(False, "impression")],
    )


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_a_better_list_earns_a_higher_ctr(tmp_path: Path) -> None:
    """oracle > popularity > shuffled, on the same users, days and organic slots."""
    ctr = {}
    for kind in ("oracle", "popular", "shuffled"):
        s = _settings(tmp_path / kind)
        report = generate(s, days=2, storefront=_storefront(s, kind))
        rec, organic = _ctr(_records(s))
        ctr[kind] = rec
        assert report.rec_impressions > 5_000
        assert 0.02 < organic < 0.08  # the organic slots keep the shop's usual funnel
    assert ctr["oracle"] > 2 * ctr["popular"], ctr
    assert ctr["popular"] > 1.15 * ctr["shuffled"], ctr


def test_drift_costs_the_old_oracle_ctr_and_moves_the_category_mix(tmp_path: Path) -> None:
    drift, steady = _settings(tmp_path / "drift", 2500), _settings(tmp_path / "steady", 2500)
    report = generate(drift, days=4, drift_day=2, storefront=_storefront(drift, "oracle"))
    generate(steady, days=4, storefront=_storefront(steady, "oracle"))
    days = [f"2026-11-0{d}" for d in range(1, 5)]

    drifting, stable = _records(drift), _records(steady)
    before = [_ctr(drifting, d)[0] for d in days[:2]]
    after = [_ctr(drifting, d)[0] for d in days[2:]]
    assert max(after) < 0.7 * min(before), (before, after)
    steady_ctr = [_ctr(stable, d)[0] for d in days]
    assert max(steady_ctr) < 1.2 * min(steady_ctr), steady_ctr
    assert before == steady_ctr[:2]  # nothing changes before the drift day

    catalog = {
        json.loads(x)["item_id"]: json.loads(x)["category"]
        for x in (drift.catalog_dir / "dt=2026-11-01" / "items.jsonl").read_text().splitlines()
    }

    def mix(records: list[dict[str, Any]], wanted: list[str]) -> dict[str, float]:
        c = Counter(
            catalog[r["item_id"]]
            for r in records
            if r["event_type"] == "impression" and _day(r) in wanted
        )
        return {k: v / c.total() for k, v in c.items()}

    def total_variation(records: list[dict[str, Any]]) -> float:
        old, new = mix(records, days[:2]), mix(records, days[2:])
        return 0.5 * sum(abs(old.get(k, 0) - new.get(k, 0)) for k in old | new)

    moved, still = total_variation(drifting), total_variation(stable)
    assert moved > 0.05 and moved > 4 * still, (moved, still)
    old, new = mix(drifting, days[:2]), mix(drifting, days[2:])
    trending = report.drift["trending_category"]  # type: ignore[index]
    assert new[trending] > 1.5 * old[trending]
    per_user = Counter(r["user_id"] for r in drifting if _day(r) in days[2:])
    per_user_before = Counter(r["user_id"] for r in drifting if _day(r) in days[:2])
    assert per_user.total() > 1.15 * per_user_before.total()  # moved users come more often

    state = json.loads((drift.landing_dir / "_generator.json").read_text())
    assert state["drift"]["from_day"] == 2 and state["drift"]["moved_users"] > 0
    assert set(state["shown"]) == set(days)


def test_an_appending_run_keeps_the_recorded_drift(tmp_path: Path) -> None:
    long, inc = _settings(tmp_path / "long", 300, 80), _settings(tmp_path / "inc", 300, 80)
    generate(long, days=3, drift_day=1)
    generate(inc, days=1, drift_day=1)
    generate(inc, days=2, append=True)  # no drift named: the recorded one goes on
    assert _digest(long.landing_dir) == _digest(inc.landing_dir)


def test_attribution_marks_exactly_the_recommended_slots_and_what_followed(
    tmp_path: Path,
) -> None:
    s = _settings(tmp_path, 600, 150)
    front = _storefront(s, "oracle")
    report = generate(s, days=1, storefront=front)
    records = _records(s)
    model = front.model

    # Independently: each session's first SLOTS slots are the user's top list, in order.
    lists = {
        uid: [str(i) for i in model.item_ids[row]]
        for uid, row in zip(
            model.user_ids,
            model.recommend_rows(np.arange(len(model.user_ids)), SLOTS)[0],
            strict=True,
        )
    }
    slots: defaultdict[str, list[int]] = defaultdict(list)
    impressions: set[tuple[str, str, int, bool]] = set()
    rec_clicks = 0
    for r in records:
        attributed = [f for f in ATTRIBUTION_FIELDS if r.get(f) is not None]
        assert attributed in ([], list(ATTRIBUTION_FIELDS)), r
        is_rec = bool(attributed)
        if r["event_type"] == "impression":
            pos = r["position"]
            if is_rec:  # the 1-based rank in the shown list, no request behind a CDN list
                assert 1 <= pos <= SLOTS and r["item_id"] == lists[r["user_id"]][pos - 1], r
                assert r["rec_source"] in REC_SOURCES and r["rec_source"] == "cdn"
                assert (r["publish_id"], r["model_version"]) == (PUBLISH_ID, "7")
                assert r["request_id"] is None
            else:  # organic: the plain mode's 0-based slot and page request
                assert pos >= SLOTS and r["request_id"] == "r" + r["session_id"], r
            slots[r["session_id"]].append(pos - 1 if is_rec else pos)
            impressions.add((r["session_id"], r["item_id"], pos, is_rec))
    # Every session's slots are 0..n-1 exactly once, the first SLOTS recommended.
    assert all(sorted(x) == list(range(len(x))) for x in slots.values())
    expected_rec_impressions = SLOTS * len(slots)  # every session has at least 4 slots
    n_rec_impressions = sum(rec for *_, rec in impressions)
    assert n_rec_impressions == expected_rec_impressions == report.rec_impressions

    for r in records:
        is_rec = r.get("rec_source") is not None
        if r["event_type"] == "impression":
            continue
        if r["event_type"] in ("click", "view") and r["position"] is not None:
            # A click (and the view it opens) carries what its impression carried.
            assert (r["session_id"], r["item_id"], r["position"], is_rec) in impressions, r
            rec_clicks += is_rec and r["event_type"] == "click"
        elif r["event_type"] in ("add_to_cart", "purchase"):
            if is_rec:
                assert (r["session_id"], r["item_id"], r["position"], True) in impressions
            else:
                assert r["position"] is None and r["request_id"] is None
        else:
            assert not is_rec and r["request_id"] is None  # organic browsing views
    assert rec_clicks == report.rec_clicks > 0
    follow = Counter(r["event_type"] for r in records if r.get("rec_source"))
    assert follow["view"] >= follow["click"] > follow["add_to_cart"] >= follow["purchase"] > 0


def test_drift_moves_a_share_of_users_to_other_categories_and_leaves_the_rest() -> None:
    spec = ShopSpec(
        seed=3,
        n_users=4000,
        n_items=300,
        sessions_per_user_day=0.6,
        start="2026-11-01T00:00:00+00:00",
        drift_day=0,
        drift_share=0.3,
        drift_boost=4.0,
    )
    world = build_world(spec)
    drifted, info = drift_world(spec, world)
    cycle = info["category_cycle"]
    assert isinstance(cycle, dict) and all(a != b for a, b in cycle.items())
    assert sorted(cycle.values()) == sorted(cycle)  # a permutation: every category is hit
    moved = (drifted.user_fav != world.user_fav).any(axis=1)
    assert moved.sum() == info["moved_users"]
    assert abs(moved.mean() - 0.3) < 0.03
    assert np.array_equal(drifted.user_vec[~moved], world.user_vec[~moved])
    assert not np.isclose(drifted.user_vec[moved], world.user_vec[moved]).all(axis=1).any()
    assert np.allclose(drifted.user_activity[moved], 1.5 * world.user_activity[moved])
    trending = list(CATEGORIES).index(str(info["trending_category"]))
    in_trend = world.item_cat == trending
    ratio = drifted.item_pop[in_trend].sum() / world.item_pop[in_trend].sum()
    assert 1.5 < ratio < 4.0  # boosted 4x, then the whole vector renormalised
    assert drift_world(spec, world)[1] == info  # the seed alone decides


def test_attribution_names_a_known_source() -> None:
    with pytest.raises(ValueError, match="rec_source 'email'"):
        Attribution("email", None, None)


def test_plain_mode_carries_no_attribution(settings: Settings) -> None:
    generate(settings, days=1)
    assert not any(set(ATTRIBUTION_FIELDS) & set(r) for r in _records(settings))


def test_same_lists_same_bytes_other_lists_other_bytes(tmp_path: Path) -> None:
    digests = []
    for name, kind in (("a", "oracle"), ("b", "oracle"), ("c", "shuffled")):
        s = _settings(tmp_path / name, 300, 80)
        generate(s, days=2, drift_day=1, storefront=_storefront(s, kind))
        digests.append(_digest(s.landing_dir))
    assert digests[0] == digests[1] != digests[2]


def _hand_publish(settings: Settings, users: dict[str, Any]) -> str:
    """A publish written object by object with the layout (no registry, no scoring)."""
    store = LocalStore(settings.publish_dir)
    prefix, pid = settings.publish_prefix, PUBLISH_ID
    meta = {"publish_id": pid, "model": {"version": "7"}, "generated_at": "2026-11-01T00:00:00Z"}
    headers = {"Content-Type": "application/json"}
    popular = layout.recs_body(meta, "popular", ["i00005", "i00006"], [2.0, 1.0])
    store.put(layout.popular_key(prefix, pid), layout.encode(popular), headers)
    for uid, items in users.items():
        key = layout.user_object_key(prefix, pid, layout.user_key(settings.hmac_secret(), uid))
        body = (
            layout.recs_body(meta, "als", items, [1.0] * len(items))
            if isinstance(items, list)
            else items
        )
        store.put(key, body if isinstance(body, bytes) else layout.encode(body), headers)
    pointer = {
        "publish_id": pid,
        "users": f"{layout.publish_root(prefix, pid)}u/{{kk}}/{{key}}.json",
        "popular": layout.popular_key(prefix, pid),
        "model": meta["model"],
    }
    store.put(layout.latest_key(prefix), layout.encode(pointer), headers)
    return pid


def test_published_lists_and_popular_json_from_a_local_store(tmp_path: Path) -> None:
    s = _settings(tmp_path, 50, 40)
    world = build_world(ShopSpec.from_settings(s))
    # u000001's list has an id the catalog lacks (skipped) and a "group" (passed through).
    control = layout.recs_body(
        {"publish_id": PUBLISH_ID, "model": {"version": "7"}, "generated_at": "x"},
        "popular",
        ["i00003", "nope", "i00001"],
        [3.0, 2.0, 1.0],
    )
    _hand_publish(
        s,
        {
            "u000000": ["i00009", "i00002", "i00004", "i00007", "i00008"],
            "u000001": {**control, "group": "control"},
        },
    )
    front = PublishedStorefront(s, world, SLOTS)
    shown = front.show(np.array([0, 1, 2]))
    assert shown.items[:3].tolist() == [[9, 2, 4, 7], [3, 1, -1, -1], [5, 6, -1, -1]]
    assert (shown.items[3:] == -1).all() and (shown.attr[3:] == -1).all()  # not active today
    assert shown.attr[:3].tolist() == [0, 0, 0]
    assert shown.attributions == [Attribution("cdn", PUBLISH_ID, "7")]
    assert front.describe()["users"] == {"cdn": 2, "service": 0, "popular": 1}


def test_a_damaged_list_object_is_a_clear_error(tmp_path: Path) -> None:
    s = _settings(tmp_path, 50, 40)
    _hand_publish(s, {"u000000": b"\x1f\x8b not gzip at all"})
    front = PublishedStorefront(s, build_world(ShopSpec.from_settings(s)), SLOTS)
    with pytest.raises(StorefrontError, match=r"u/.*\.json at .* is damaged"):
        front.show(np.array([0]))


def test_react_without_a_publish_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(StorefrontError, match=r"nothing published .* run `recflow publish`"):
        generate(settings, days=1, react=True)
    assert not settings.events_dir.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"drift_day": -1}, "drift day -1"),
        ({"drift_share": 1.5}, "drift share 1.5"),
        ({"drift_boost": 0.5}, "drift boost 0.5"),
        ({"rec_slots": 0}, "rec_slots 0"),
    ],
)
def test_a_nonsense_shop_is_refused_by_name(
    settings: Settings, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        generate(settings, days=1, **override)
    assert not settings.events_dir.exists()


def test_cli_generate_drift_and_react(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.cli import app
    from jobs.config import get_settings

    monkeypatch.setenv("RECFLOW_DATA_ROOT", str(settings.data_root))
    get_settings.cache_clear()
    runner = CliRunner()
    done = runner.invoke(app, ["generate", "--days", "2", "--users", "200", "--drift", "1"])
    assert done.exit_code == 0, done.output
    assert "trending_category" in done.output
    state = json.loads((settings.landing_dir / "_generator.json").read_text())
    assert state["drift"]["from_day"] == 1
    refused = runner.invoke(app, ["generate", "--days", "1", "--users", "200", "--react"])
    assert refused.exit_code == 1 and "nothing published" in refused.output
    negative = runner.invoke(app, ["generate", "--days", "1", "--users", "200", "--drift", "-2"])
    assert negative.exit_code == 1 and "drift day -2" in negative.output


# -- reading a published list body (a parser: property-based) ---------------------------------


class _NoStore:
    def __call__(self, key: str) -> bytes | None:
        return None


@hsettings(max_examples=150, deadline=None)
@given(
    ids=st.lists(
        st.one_of(st.integers(0, 79).map(lambda i: f"i{i:05d}"), st.text(min_size=1, max_size=12)),
        max_size=30,
    ),
    seed=st.integers(0, 2**16),
)
def test_a_list_body_is_read_in_rank_order_keeping_known_items(ids: list[str], seed: int) -> None:
    front = _list_reader()
    ranks = np.random.default_rng(seed).permutation(len(ids)) + 1
    pairs = zip(ids, ranks, strict=True)
    body = {"items": [{"item_id": i, "rank": int(r), "score": 0.0} for i, r in pairs]}
    by_rank = [i for _, i in sorted(zip(ranks, ids, strict=True))]
    known = {f"i{n:05d}": n for n in range(80)}
    expected = [known[i] for i in by_rank if i in known][:SLOTS]
    assert front._list(body) == expected
    assert front._list(layout.decode(layout.encode(body))) == expected


@cache
def _list_reader() -> PublishedStorefront:
    """A storefront over an 80-item shop whose store holds nothing (only its reader is used)."""
    s = load_settings(data_root=Path("/nonexistent-recflow-root"), gen_items=80, gen_users=10)
    return PublishedStorefront(s, build_world(ShopSpec.from_settings(s)), SLOTS, fetch=_NoStore())


# -- damaged or partial publishes: nothing but StorefrontError escapes ------------------------

HEX_KEY = "0" * layout.KEY_HEX


def _good_pointer(prefix: str = "") -> dict[str, Any]:
    return {
        "publish_id": PUBLISH_ID,
        "users": f"{layout.publish_root(prefix, PUBLISH_ID)}u/{{kk}}/{{key}}.json",
        "popular": layout.popular_key(prefix, PUBLISH_ID),
        "model": {"version": "7"},
    }


def _good_list(items: list[str]) -> dict[str, Any]:
    meta = {"publish_id": PUBLISH_ID, "model": {"version": "7"}, "generated_at": "x"}
    return layout.recs_body(meta, "als", items, [1.0] * len(items))


def _reader_over(objects: dict[str, bytes], service_url: str | None = None) -> PublishedStorefront:
    """The 80-item storefront reading ``objects`` (key → bytes) instead of a store."""
    base = _list_reader()
    return PublishedStorefront(
        load_settings(data_root=Path("/nonexistent-recflow-root"), gen_items=80, gen_users=10),
        base.world,
        SLOTS,
        fetch=objects.get,
        service_url=service_url,
    )


def _user_object_key(front: PublishedStorefront, uid: str) -> str:
    key = layout.user_key(front.secret, uid)
    return layout.user_object_key("", PUBLISH_ID, key)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _damaged(good: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Bytes of a body: arbitrary JSON, the good body with fields replaced or dropped, the
    good bytes cut short or with one byte flipped, or arbitrary bytes."""
    encoded = layout.encode(good)
    fields = st.dictionaries(st.sampled_from([*good, "items"]), _json | st.just(None), max_size=3)
    return st.one_of(
        _json.map(lambda v: layout.encode(v)),  # type: ignore[arg-type]
        st.tuples(fields, st.sets(st.sampled_from(list(good)))).map(
            lambda fd: layout.encode({**{k: v for k, v in good.items() if k not in fd[1]}, **fd[0]})
        ),
        st.integers(0, len(encoded) - 1).map(lambda n: encoded[:n]),
        st.tuples(st.integers(0, len(encoded) - 1), st.integers(1, 255)).map(
            lambda nb: encoded[: nb[0]] + bytes([encoded[nb[0]] ^ nb[1]]) + encoded[nb[0] + 1 :]
        ),
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b),
    )


@hsettings(max_examples=300, deadline=None)
@given(data=st.data())
def test_only_storefront_errors_escape_a_damaged_publish(data: st.DataObject) -> None:
    """Whatever latest.json, popular.json and a user's object hold, show() either shows
    lists or raises StorefrontError naming the object."""
    front = _reader_over({})
    pointer, popular = _good_pointer(), _good_list(["i00005", "i00006"])
    user = _good_list(["i00001", "i00002", "i00003"])
    objects = {
        layout.latest_key(""): layout.encode(pointer),
        pointer["popular"]: layout.encode(popular),
        _user_object_key(front, "u000000"): layout.encode(user),
    }
    broken = data.draw(st.sets(st.sampled_from(list(objects)), min_size=1), label="broken")
    for key in broken:
        good = {layout.latest_key(""): pointer, pointer["popular"]: popular}.get(key, user)
        objects[key] = data.draw(_damaged(good), label=key)
    front.fetch = objects.get
    try:
        shown = front.show(np.array([0, 1]))
    except StorefrontError as exc:
        assert any(name in str(exc) for name in ("latest.json", "popular.json", "/u/")), exc
    else:
        assert shown.items.shape == (10, SLOTS)


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ({"users": None}, r"'users' must be a non-empty string"),
        ({"popular": None}, r"'popular' must be a non-empty string"),
        ({"users": "recs/{0}.json"}, r"'users' 'recs/\{0\}.json' is not a key template"),
        ({"users": "recs/{user}.json"}, r"only the plain fields"),
        ({"users": "recs/{key:>999999999}.json"}, r"only the plain fields"),
        ({"users": "recs/{key.upper}.json"}, r"only the plain fields"),
        ({"users": "recs/{kk}/x.json"}, r"\{key\} is missing"),
        ({"users": "recs/{key"}, r"is not a key template"),
        ({"model": "v7"}, r"'model' must be an object"),
        ({"model": {"version": [7]}}, r"model version must be a string"),
    ],
)
def test_a_latest_json_off_the_layout_is_named(pointer: dict[str, Any], message: str) -> None:
    body = {k: v for k, v in {**_good_pointer(), **pointer}.items() if v is not None}
    front = _reader_over({layout.latest_key(""): layout.encode(body)})
    with pytest.raises(StorefrontError, match=r"recs/latest\.json at .*: .*" + message):
        front.show(np.array([0]))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-6],  # truncated gzip: EOFError inside gzip
        lambda b: b[:20] + bytes([b[20] ^ 0xFF]) + b[21:],  # corrupt deflate: zlib.error
        lambda b: layout.encode([1, 2]),  # type: ignore[arg-type]  # a JSON list
    ],
    ids=["truncated", "corrupt-deflate", "json-list"],
)
def test_a_damaged_latest_json_or_list_object_is_named(damage: Callable[[bytes], bytes]) -> None:
    good = layout.encode(_good_list(["i00001"]))
    pointer = layout.encode(_good_pointer())
    for target in ("latest", "user"):
        front = _reader_over({})
        user_key = _user_object_key(front, "u000000")
        front.fetch = {
            layout.latest_key(""): damage(pointer) if target == "latest" else pointer,
            layout.popular_key("", PUBLISH_ID): layout.encode(_good_list(["i00005"])),
            user_key: damage(good) if target == "user" else good,
        }.get
        named = layout.latest_key("") if target == "latest" else user_key
        with pytest.raises(StorefrontError, match=re.escape(named)):
            front.show(np.array([0]))


def test_the_cli_prints_one_line_for_a_damaged_publish(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.cli import app
    from jobs.config import get_settings

    s = load_settings(data_root=settings.data_root, gen_users=50, gen_items=40)
    _hand_publish(s, {})
    store = LocalStore(s.publish_dir)
    store.put(layout.latest_key(s.publish_prefix), layout.encode(_good_pointer())[:-5], {})
    monkeypatch.setenv("RECFLOW_DATA_ROOT", str(settings.data_root))
    get_settings.cache_clear()
    done = CliRunner().invoke(
        app, ["generate", "--days", "1", "--users", "50", "--items", "40", "--react"]
    )
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
    assert "recs/latest.json" in done.output and "is damaged" in done.output
    assert "Traceback" not in done.output


# -- over HTTP: a CDN and a service that misbehave, as real sockets ----------------------------


class _RawServer:
    """A loopback HTTP server answering each path with fixed raw bytes (or a close)."""

    def __init__(self, answers: Callable[[str], bytes | None]) -> None:
        self.answers = answers
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed by stop(): the accept loop ends
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                path = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else "/"
                # Read a request body (the service's POST) to its end: closing with unread
                # bytes would reset the connection instead of showing the answer below.
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                body = head.partition(b"\r\n\r\n")[2]
                while length and len(body) < int(length[1]):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                answer = self.answers(path)
                if answer == b"SLEEP":
                    threading.Event().wait(2.0)
                elif answer is not None:
                    conn.sendall(answer)

    def stop(self) -> None:
        self.sock.close()


def _ok(body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size + body


def _status(code: int) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % code


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[str], bytes | None]], _RawServer]]:
    started: list[_RawServer] = []

    def start(answers: Callable[[str], bytes | None]) -> _RawServer:
        started.append(_RawServer(answers))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (_ok(b'{"publish_id":', length=1000), "IncompleteRead"),
        (None, "RemoteDisconnected"),
        (b"SLEEP", "timed out"),
        (b"garbage\r\n\r\n", "BadStatusLine"),
        (_status(500), "500"),
    ],
    ids=["incomplete-read", "remote-disconnected", "timeout", "bad-status", "500"],
)
def test_a_cdn_that_fails_mid_answer_is_a_clear_error(
    raw_server: Callable[..., _RawServer],
    monkeypatch: pytest.MonkeyPatch,
    answer: bytes | None,
    message: str,
) -> None:
    monkeypatch.setattr(storefront, "HTTP_TIMEOUT_SECONDS", 0.5)
    server = raw_server(lambda path: answer)
    fetch = http_fetch(server.url)
    with pytest.raises(
        StorefrontError,
        match=rf"{message}.*{server.url}/recs/latest\.json|{server.url}/recs/latest\.json.*{message}",
    ):
        fetch("recs/latest.json")


def test_a_cdn_403_means_no_list_for_a_user_but_not_for_latest_json(
    tmp_path: Path, raw_server: Callable[..., _RawServer]
) -> None:
    """CloudFront over S3 without ListBucket: a missing key answers 403."""
    s = _settings(tmp_path, 50, 40)
    _hand_publish(s, {"u000000": ["i00009", "i00002"]})
    store = LocalStore(s.publish_dir)

    def cloudfront(path: str) -> bytes:
        found = store.get(path.lstrip("/"))
        return _status(403) if found is None else _ok(found)

    server = raw_server(cloudfront)
    world = build_world(ShopSpec.from_settings(s))
    front = PublishedStorefront(s, world, SLOTS, fetch=http_fetch(server.url))
    shown = front.show(np.array([0, 1]))
    assert shown.items[:2].tolist() == [[9, 2, -1, -1], [5, 6, -1, -1]]
    assert front.describe()["users"] == {"cdn": 1, "service": 0, "popular": 1}

    store.root.joinpath(layout.latest_key(s.publish_prefix)).unlink()
    with pytest.raises(StorefrontError, match=r"answered 403 for .*recs/latest\.json"):
        PublishedStorefront(s, world, SLOTS, fetch=http_fetch(server.url)).show(np.array([0]))


def _service_answer(body: object) -> bytes:
    return _ok(json.dumps(body).encode())


def test_a_null_version_or_request_id_from_the_service_stays_null(
    tmp_path: Path, raw_server: Callable[..., _RawServer]
) -> None:
    answer = {
        "request_id": None,
        "model_version": None,
        "items": [{"item_id": "i00003", "rank": 1}],
    }
    server = raw_server(lambda path: _service_answer(answer))
    front = _reader_over({}, service_url=server.url)
    front.fetch = {
        layout.latest_key(""): layout.encode(_good_pointer()),
        layout.popular_key("", PUBLISH_ID): layout.encode(_good_list(["i00005"])),
    }.get
    shown = front.show(np.array([0]))
    assert shown.items[0].tolist() == [3, -1, -1, -1]
    assert shown.attributions == [Attribution("service", None, None, None)]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (_ok(b'{"request_id":', length=500), "did not answer /recommend.*IncompleteRead"),
        (None, "did not answer /recommend.*RemoteDisconnected"),
        (b"SLEEP", "did not answer /recommend.*timed out"),
        (_ok(b"[1, 2]"), "off its schema: not a JSON object but list"),
        (_service_answer({"request_id": 5, "items": []}), "request_id 5 is not a string"),
        (_service_answer({"request_id": "r", "model_version": {}, "items": []}), "model version"),
        (_service_answer({"request_id": "r", "items": [{"item_id": "i1"}]}), "integer rank"),
        (_service_answer({"request_id": "r", "items": "i00001"}), "'items' must be a list"),
    ],
    ids=["incomplete", "disconnected", "timeout", "list", "request-id", "version", "rank", "items"],
)
def test_a_service_answer_off_its_schema_is_a_clear_error(
    raw_server: Callable[..., _RawServer],
    monkeypatch: pytest.MonkeyPatch,
    answer: bytes | None,
    message: str,
) -> None:
    monkeypatch.setattr(storefront, "HTTP_TIMEOUT_SECONDS", 0.5)
    server = raw_server(lambda path: answer)
    front = _reader_over({}, service_url=server.url)
    front.fetch = {
        layout.latest_key(""): layout.encode(_good_pointer()),
        layout.popular_key("", PUBLISH_ID): layout.encode(_good_list(["i00005"])),
    }.get
    with pytest.raises(StorefrontError, match=rf"{server.url}.*{message}"):
        front.show(np.array([0]))


# -- positions, the popular fallback and _generator.json ---------------------------------------


def test_reacting_days_keep_the_plain_organic_positions_and_request_ids(tmp_path: Path) -> None:
    """A day with --react appended to a plain day: its organic slots are exactly the plain
    day's (0-based position, request_id r<session>); only the first SLOTS slots change."""
    plain, mixed = _settings(tmp_path / "plain", 400, 100), _settings(tmp_path / "mixed", 400, 100)
    generate(plain, days=2)
    generate(mixed, days=1)
    generate(mixed, days=1, append=True, storefront=_storefront(mixed, "oracle"))

    def impressions(records: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {
            (r["session_id"], r["position"], r["item_id"], r["request_id"])
            for r in records
            if r["event_type"] == "impression" and r.get("rec_source") is None
        }

    before, after = _records(plain), _records(mixed)
    day2 = [r for r in before if _day(r) == "2026-11-02"]
    organic = impressions([r for r in after if _day(r) == "2026-11-02"])
    expected = {x for x in impressions(day2) if x[1] >= SLOTS}
    assert organic == expected and organic
    assert impressions([r for r in after if _day(r) == "2026-11-01"]) == impressions(
        [r for r in before if _day(r) == "2026-11-01"]
    )
    rec = [r for r in after if r.get("rec_source") and r["event_type"] == "impression"]
    assert {r["position"] for r in rec} == set(range(1, SLOTS + 1))


def test_the_popular_fallback_is_attributed_to_the_cdn_and_the_publish(tmp_path: Path) -> None:
    """No field says "popular": rec_source cdn and the publish's model version (module doc)."""
    s = _settings(tmp_path, 50, 40)
    _hand_publish(s, {})
    report = generate(s, days=1, react=True)
    rec = [r for r in _records(s) if r.get("rec_source")]
    assert rec and {(r["rec_source"], r["publish_id"], r["model_version"]) for r in rec} == {
        ("cdn", PUBLISH_ID, "7")
    }
    assert {r["item_id"] for r in rec if r["event_type"] == "impression"} == {"i00005", "i00006"}
    assert report.shown["2026-11-01"]["users"]["cdn"] == 0  # type: ignore[index]
    assert report.shown["2026-11-01"]["users"]["popular"] > 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ({"drift_day": 1}, {"drift_day": 2}, "generated with drift .*'from_day': 1"),
        ({"drift_day": 1}, {"drift_day": 1, "drift_boost": 3.0}, "this --append names"),
        ({}, {"drift_day": 0}, "days 0–1 .* already written without drift"),
    ],
)
def test_an_append_may_not_contradict_the_recorded_drift(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any], message: str
) -> None:
    s = _settings(tmp_path, 200, 60)
    generate(s, days=2, **first)
    before = _digest(s.landing_dir)
    with pytest.raises(ValueError, match=message):
        generate(s, days=1, append=True, **second)
    assert _digest(s.landing_dir) == before  # refused before writing anything


def test_an_append_may_start_a_drift_on_a_later_day(tmp_path: Path) -> None:
    long, inc = _settings(tmp_path / "long", 200, 60), _settings(tmp_path / "inc", 200, 60)
    generate(long, days=3, drift_day=2)
    generate(inc, days=2)
    generate(inc, days=1, append=True, drift_day=2)
    assert _digest(long.landing_dir) == _digest(inc.landing_dir)


def test_a_rerun_without_react_drops_what_those_days_showed(tmp_path: Path) -> None:
    s = _settings(tmp_path, 200, 60)
    generate(s, days=2, storefront=_storefront(s, "oracle"))
    state_path = s.landing_dir / "_generator.json"
    assert set(json.loads(state_path.read_text())["shown"]) == {"2026-11-01", "2026-11-02"}
    generate(s, days=1)  # day 1 again, organic only: day 2 keeps its record
    assert set(json.loads(state_path.read_text())["shown"]) == {"2026-11-02"}
    generate(s, days=2)
    assert "shown" not in json.loads(state_path.read_text())


# -- the popularity reference: O(n_items) ------------------------------------------------------


def test_the_popular_reference_ranks_as_the_exact_mean_without_a_users_by_items_matrix() -> None:
    spec = ShopSpec(
        seed=5, n_users=3000, n_items=2000, sessions_per_user_day=0.6, start="2026-11-01T00:00:00Z"
    )
    world = build_world(spec)
    # Independently: the exact mean click probability over every user (brute force).
    logit = -5.0 + 0.55 * world.user_vec @ world.item_vec.T + 0.15 * np.log(world.item_pop * 2000)
    exact = world.item_pop * (1.0 / (1.0 + np.exp(-logit))).mean(axis=0)
    del logit

    tracemalloc.start()
    try:
        model = reference_model(world, "popular")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 3,000 × 2,000 float64 is 48 MB; what is left is per-item arrays and the model itself.
    assert peak < 8_000_000, peak
    assert model.user_factors.shape[1] == 1 and model.item_factors.shape == (2000, 1)
    top_exact = set(np.argsort(-exact)[:50])
    top_model = set(np.argsort(-model.item_factors[:, 0])[:50])
    assert len(top_exact & top_model) >= 45
    assert (
        np.corrcoef(np.argsort(np.argsort(exact)), np.argsort(np.argsort(model.popularity)))[0, 1]
        > 0.99
    )
