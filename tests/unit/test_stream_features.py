"""The stream worker's list: the batch rule over what it streamed, ahead of the online row."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import hypothesis
from hypothesis import strategies as st

from jobs.config import load_settings
from jobs.stream.features import RecentItems, Touch, push_frame, touches

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
T0 = int(datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp() * 1000)


def batch_rule(events: list[Touch], n: int) -> dict[str, list[str]]:
    """What jobs.features.export computes from gold/interactions, written out plainly."""
    agg: dict[tuple[str, str], list[float]] = {}
    for t in events:
        got = agg.setdefault((t.user_id, t.item_id), [t.ts_ms, 0.0])
        got[0] = max(got[0], t.ts_ms)
        got[1] += t.weight
    out: dict[str, list[tuple[float, float, str]]] = {}
    for (user, item), (ts, weight) in agg.items():
        out.setdefault(user, []).append((-ts, -weight, item))
    return {u: [i for _, _, i in sorted(rows)][:n] for u, rows in out.items()}


touch = st.builds(
    Touch,
    user_id=st.sampled_from(["u1", "u2", "ü3"]),
    item_id=st.sampled_from([f"i{j}" for j in range(8)]),
    ts_ms=st.integers(T0, T0 + 20),  # a narrow range: many ties, the tie-breaks matter
    weight=st.sampled_from([1.0, 2.0, 4.0, 8.0]),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    events=st.lists(touch, max_size=60), cuts=st.lists(st.integers(0, 60)), n=st.integers(1, 5)
)
def test_streamed_lists_equal_the_batch_rule_however_the_events_are_batched(
    events: list[Touch], cuts: list[int], n: int
) -> None:
    state = RecentItems(n, capacity=10)
    latest: dict[str, list[str]] = {}
    bounds = sorted({0, len(events), *(c for c in cuts if c <= len(events))})
    for lo, hi in itertools.pairwise(bounds):
        for user, (items, newest) in state.apply(events[lo:hi]).items():
            latest[user] = items
            assert newest == max(t.ts_ms for t in events[:hi] if t.user_id == user)
    assert latest == batch_rule(events, n)


def test_streamed_items_go_ahead_of_the_online_row_which_keeps_its_order() -> None:
    seeds: list[list[str]] = []

    def seed(users: list[str]) -> dict[str, list[str]]:
        seeds.append(users)
        return {"u1": ["a", "b", "c", "d"]}

    state = RecentItems(4, capacity=10, seed=seed)
    got = state.apply([Touch("u1", "c", T0, 2.0), Touch("u1", "x", T0 + 1, 1.0)])
    assert got == {"u1": (["x", "c", "a", "b"], T0 + 1)}
    got = state.apply([Touch("u2", "y", T0, 1.0)])
    assert got["u2"][0] == ["y"]
    assert seeds == [["u1"], ["u2"]]  # each user read once, not at every event


def test_evicted_users_are_read_back_from_the_online_row() -> None:
    rows = {"u1": ["old"], "u2": ["older"]}
    reads: list[str] = []

    def seed(users: list[str]) -> dict[str, list[str]]:
        reads.extend(users)
        return {u: rows[u] for u in users}

    state = RecentItems(3, capacity=1, seed=seed)
    rows["u1"] = state.apply([Touch("u1", "a", T0, 1.0)])["u1"][0]
    state.apply([Touch("u2", "b", T0, 1.0)])
    assert len(state) == 1
    assert state.apply([Touch("u1", "c", T0 + 5, 1.0)])["u1"][0] == ["c", "a", "old"]
    assert reads == ["u1", "u2", "u1"]


def event(**fields: object) -> bytes:
    base = {
        "event_id": "e1",
        "ts": "2026-11-30T12:10:00Z",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "click",
    }
    return json.dumps({**base, **fields}).encode()


def test_only_what_gold_would_count_is_pushed() -> None:
    settings = load_settings()
    values = [
        event(),
        event(event_type="impression"),  # weight 0
        event(consent=False),
        event(user_id="denied"),
        event(ts="2999-01-01T00:00:00Z"),  # silver quarantines it (future)
        b"{not json",
        None,  # a tombstone
        event(event_type="purchase", item_id="i2", ts=1_764_504_000_000),
    ]
    found, skipped = touches(values, settings, NOW, denied=lambda user: user == "denied")
    assert skipped == 6
    assert found == [
        Touch("u1", "i1", int(datetime(2026, 11, 30, 12, 10, tzinfo=UTC).timestamp() * 1000), 2.0),
        Touch("u1", "i2", 1_764_504_000_000, 8.0),
    ]


def test_pushed_rows_are_stamped_with_the_newest_event() -> None:
    frame = push_frame({"u2": (["a"], T0 + 1500), "u1": (["b", "c"], T0)})
    assert frame["user_id"].tolist() == ["u1", "u2"]
    assert frame["recent_item_ids"].tolist() == [["b", "c"], ["a"]]
    assert frame["event_timestamp"].tolist()[1] == datetime.fromtimestamp((T0 + 1500) / 1000, UTC)
