"""The synthetic shop: deterministic, on contract, with a realistic funnel and signal."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs.config import Settings, load_settings
from jobs.contracts import EVENT_TYPES, ITEM_FIELDS, MAX_ID_LENGTH, REQUIRED_EVENT_FIELDS
from jobs.sources.shop import MALFORMED_KINDS, generate


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.jsonl"))
    }


def _conforms(line: str) -> bool:
    """An independent reading of the event contract (kept apart from the generator)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    if not isinstance(rec, dict) or any(rec.get(f) is None for f in REQUIRED_EVENT_FIELDS):
        return False
    for f in ("event_id", "user_id", "item_id"):
        v = rec[f]
        if not isinstance(v, str) or len(v) > MAX_ID_LENGTH or any(ord(c) < 32 for c in v):
            return False
    if rec["event_type"] not in EVENT_TYPES:
        return False
    ts = rec["ts"]
    try:
        when = (
            datetime.fromtimestamp(ts / 1000, tz=UTC)
            if isinstance(ts, int)
            else datetime.fromisoformat(ts)
        )
    except (TypeError, ValueError):
        return False
    if not (datetime(2000, 1, 1, tzinfo=UTC) < when < datetime(2030, 1, 1, tzinfo=UTC)):
        return False
    if rec.get("position") is not None and not isinstance(rec["position"], int):
        return False
    for f in ("price", "quantity"):
        v = rec.get(f)
        if v is not None and (not isinstance(v, int | float) or v < 0):
            return False
    return True


def _events(settings: Settings) -> list[str]:
    return [
        line
        for p in sorted(settings.events_dir.rglob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = load_settings(data_root=tmp_path / "a", gen_users=200, gen_items=80)
    b = load_settings(data_root=tmp_path / "b", gen_users=200, gen_items=80)
    c = load_settings(data_root=tmp_path / "c", gen_users=200, gen_items=80, seed=43)
    for s in (a, b, c):
        generate(s, days=1, malformed_fraction=0.02)
    assert _tree_digest(a.landing_dir) == _tree_digest(b.landing_dir)
    assert _tree_digest(a.landing_dir) != _tree_digest(c.landing_dir)


def test_rerun_is_idempotent_and_append_equals_one_long_run(tmp_path: Path) -> None:
    long = load_settings(data_root=tmp_path / "long", gen_users=150, gen_items=60)
    inc = load_settings(data_root=tmp_path / "inc", gen_users=150, gen_items=60)
    generate(long, days=2)
    generate(inc, days=1)
    generate(inc, days=1)  # same day again: same files, nothing added
    assert len(_tree_digest(inc.landing_dir)) < len(_tree_digest(long.landing_dir))
    report = generate(inc, days=1, append=True)
    assert report.days == ["2026-11-02"]
    assert _tree_digest(inc.landing_dir) == _tree_digest(long.landing_dir)


def test_append_refuses_a_different_world(settings: Settings) -> None:
    generate(settings, days=1)
    with pytest.raises(ValueError, match="already holds a shop"):
        generate(settings, days=1, append=True, seed=999)


def test_valid_events_follow_the_contract_and_are_hour_partitioned(settings: Settings) -> None:
    report = generate(settings, days=1)
    lines = _events(settings)
    assert len(lines) == report.lines == report.valid_events
    assert all(_conforms(line) for line in lines)
    for path in settings.events_dir.rglob("*.jsonl"):
        hour = path.parent.name.removeprefix("hr=")
        for line in path.read_text().splitlines()[:20]:
            ts = json.loads(line)["ts"]
            when = (
                datetime.fromtimestamp(ts / 1000, tz=UTC)
                if isinstance(ts, int)
                else datetime.fromisoformat(ts)
            )
            assert f"{when:%H}" == hour
    ts_kinds = Counter(type(json.loads(line)["ts"]).__name__ for line in lines)
    assert ts_kinds["str"] > 0 and ts_kinds["int"] > 0  # ISO strings and epoch ms both occur
    ids = [json.loads(line)["event_id"] for line in lines]
    assert len(set(ids)) == len(ids)


def test_catalog_follows_the_item_contract(settings: Settings) -> None:
    generate(settings, days=2)
    first, second = sorted(settings.catalog_dir.rglob("items.jsonl"))
    items = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(items) == settings.gen_items
    for item in items:
        assert set(item) == set(ITEM_FIELDS)
        assert item["price"] > 0 and isinstance(item["in_stock"], bool)
        assert item["category"] in item["description"]
    changes = [json.loads(line) for line in second.read_text().splitlines()]
    assert 0 < len(changes) < len(items)
    assert all(c["updated_at"].startswith("2026-11-02") for c in changes)


def test_funnel_ratios_and_popularity_skew(tmp_path: Path) -> None:
    s = load_settings(data_root=tmp_path, gen_users=1500, gen_items=400)
    report = generate(s, days=2)
    n = report.events_by_type
    ctr = n["click"] / n["impression"]
    assert 0.02 <= ctr <= 0.08, ctr
    assert 0.2 <= n["add_to_cart"] / n["click"] <= 0.6
    assert 0.3 <= n["purchase"] / n["add_to_cart"] <= 0.6
    assert n["view"] > n["click"]  # clicks lead to views, plus organic browsing

    impressions = Counter(
        rec["item_id"] for rec in map(json.loads, _events(s)) if rec["event_type"] == "impression"
    )
    counts = sorted(impressions.values(), reverse=True)
    top_decile = sum(counts[: len(counts) // 10]) / sum(counts)
    assert top_decile > 0.35, top_decile  # uniform popularity would give 0.10


def test_users_have_stable_tastes_that_cf_can_find(tmp_path: Path) -> None:
    s = load_settings(data_root=tmp_path, gen_users=400, gen_items=300)
    generate(s, days=4)
    catalog = {
        json.loads(x)["item_id"]: json.loads(x)["category"]
        for x in sorted(s.catalog_dir.rglob("items.jsonl"))[0].read_text().splitlines()
    }
    by_user: dict[str, Counter[str]] = {}
    for rec in map(json.loads, _events(s)):
        if rec["event_type"] in ("click", "view", "purchase"):
            by_user.setdefault(rec["user_id"], Counter())[catalog[rec["item_id"]]] += 1
    shares = [c.most_common(1)[0][1] / c.total() for c in by_user.values() if c.total() >= 10]
    assert len(shares) > 50
    mean_top_share = sum(shares) / len(shares)
    assert mean_top_share > 0.4, mean_top_share  # 10 categories: no taste would give ~0.1-0.2


@pytest.mark.parametrize("fraction", [0.01, 0.1])
def test_malformed_fraction_is_honoured_and_every_kind_occurs(
    settings: Settings, fraction: float
) -> None:
    report = generate(settings, days=1, malformed_fraction=fraction)
    lines = _events(settings)
    bad = [line for line in lines if not _conforms(line)]
    assert len(bad) == report.malformed
    assert math.isclose(len(bad) / len(lines), fraction, abs_tol=0.002)
    assert set(report.malformed_by_kind) == set(MALFORMED_KINDS)


def test_duplicates_repeat_existing_events(settings: Settings) -> None:
    report = generate(settings, days=1, duplicate_fraction=0.05)
    ids = Counter(json.loads(line)["event_id"] for line in _events(settings))
    assert sum(v - 1 for v in ids.values()) == report.duplicates > 0
