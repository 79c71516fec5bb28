"""The reacting shop and injected drift, without Spark: models put in front of shoppers
in memory, CTR and attribution counted independently from the landing files."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
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
from jobs.sources.shop import CATEGORIES, ShopSpec, build_world, generate
from jobs.sources.storefront import (
    Attribution,
    ModelStorefront,
    PublishedStorefront,
    StorefrontError,
    drift_world,
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
    sessions: defaultdict[str, int] = defaultdict(int)
    impressions: dict[tuple[str, str, int], bool] = {}
    rec_clicks = 0
    for r in records:
        attributed = [f for f in ATTRIBUTION_FIELDS if r.get(f) is not None]
        assert attributed in ([], list(ATTRIBUTION_FIELDS)), r
        if r["event_type"] == "impression":
            sessions[r["session_id"]] += 1
            pos = r["position"]
            is_rec = pos <= SLOTS
            assert bool(attributed) == is_rec, r
            if is_rec:
                assert r["item_id"] == lists[r["user_id"]][pos - 1]
                assert r["rec_source"] in REC_SOURCES and r["rec_source"] == "cdn"
                assert (r["publish_id"], r["model_version"]) == (PUBLISH_ID, "7")
            assert r["request_id"] is None  # neither CDN lists nor organic slots have one
            impressions[(r["session_id"], r["item_id"], pos)] = is_rec
    expected_rec_impressions = SLOTS * len(sessions)  # every session has at least 4 slots
    n_rec_impressions = sum(impressions.values())
    assert n_rec_impressions == expected_rec_impressions == report.rec_impressions

    for r in records:
        if r["event_type"] == "impression":
            continue
        if r["event_type"] in ("click", "view") and r["position"] is not None:
            # A click (and the view it opens) carries what its impression carried.
            is_rec = impressions[(r["session_id"], r["item_id"], r["position"])]
            assert (r.get("rec_source") is not None) == is_rec, r
            rec_clicks += is_rec and r["event_type"] == "click"
        elif r["event_type"] in ("add_to_cart", "purchase"):
            if r.get("rec_source") is not None:
                assert impressions[(r["session_id"], r["item_id"], r["position"])] is True
            else:
                assert r["position"] is None
        else:
            assert r.get("rec_source") is None  # organic browsing views
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
