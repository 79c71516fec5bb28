"""The stream worker: the batch's rule over the online row and what it streamed, and who
may be pushed at all."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis
import pytest
from hypothesis import strategies as st

from jobs.config import load_settings
from jobs.stream.features import (
    REMEMBERED_PER_ITEM,
    Gate,
    GateUnavailableError,
    RecentItems,
    Touch,
    push_frame,
    touches,
)

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


def as_rows(pushed: dict[str, tuple[list[str], list[int]]]) -> dict[str, list[tuple[str, int]]]:
    return {u: list(zip(items, stamps, strict=True)) for u, (items, stamps) in pushed.items()}


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    events=st.lists(touch, max_size=60), cuts=st.lists(st.integers(0, 60)), n=st.integers(1, 5)
)
def test_streamed_lists_equal_the_batch_rule_however_the_events_are_batched(
    events: list[Touch], cuts: list[int], n: int
) -> None:
    """From an empty online store, each push reading back the row the last one wrote."""
    state = RecentItems(n, capacity=10)
    store: dict[str, list[tuple[str, int]]] = {}
    bounds = sorted({0, len(events), *(c for c in cuts if c <= len(events))})
    for lo, hi in itertools.pairwise(bounds):
        pushed = state.apply(events[lo:hi], store)
        store.update(as_rows(pushed))
        for user, (_, stamps) in pushed.items():
            assert stamps[0] == max(t.ts_ms for t in events[:hi] if t.user_id == user)
    assert {u: [i for i, _ in row] for u, row in store.items()} == batch_rule(events, n)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(
    before=st.lists(touch, max_size=30),
    after=st.lists(touch, max_size=30),
    overwritten=st.booleans(),
    n=st.integers(1, 5),
)
def test_a_materialized_row_and_streamed_events_merge_as_the_batch_would_rank_them(
    before: list[Touch], after: list[Touch], overwritten: bool, n: int
) -> None:
    """The batch wrote its row (with item times) for ``before``; ``after`` streams in, late
    events included. With distinct times per user the merge is exactly the batch's list of
    everything, whether or not a materialization overwrote the worker's push in between."""
    every = before + after
    stamps = [(t.user_id, t.ts_ms) for t in every]
    items_at = {(t.user_id, t.ts_ms): t.item_id for t in every}
    hypothesis.assume(all(items_at[k] == t.item_id for k, t in zip(stamps, every, strict=True)))
    row = _batch_rows(before, n)
    state = RecentItems(n, capacity=10)
    half = len(after) // 2
    pushed = as_rows(state.apply(after[:half], row))
    store = {**row, **pushed} if not overwritten else dict(row)
    final = {**store, **as_rows(state.apply(after[half:], store))}
    want = batch_rule(every, n)
    touched = {t.user_id for t in after[half:]}
    for user in touched:
        assert [i for i, _ in final[user]] == want[user]


def _batch_rows(events: list[Touch], n: int) -> dict[str, list[tuple[str, int]]]:
    newest: dict[tuple[str, str], int] = {}
    for t in events:
        newest[(t.user_id, t.item_id)] = max(newest.get((t.user_id, t.item_id), 0), t.ts_ms)
    return {u: [(i, newest[(u, i)]) for i in items] for u, items in batch_rule(events, n).items()}


def test_a_late_click_takes_its_place_by_time_not_ahead_of_newer_items() -> None:
    state = RecentItems(3, capacity=10)
    row = {"u1": [("n1", T0 + 300), ("n2", T0 + 200), ("n3", T0 + 100)]}
    (items, stamps) = state.apply([Touch("u1", "old", T0 + 150, 8.0)], row)["u1"]
    assert items == ["n1", "n2", "old"] and stamps == [T0 + 300, T0 + 200, T0 + 150]
    (items, _) = state.apply([Touch("u1", "n3", T0 + 400, 1.0)], row)["u1"]
    assert items == ["n3", "n1", "n2"]


def test_memory_is_bounded_per_user_and_in_users() -> None:
    state = RecentItems(2, capacity=2)
    for j in range(50):
        state.apply([Touch("busy", f"i{j}", T0 + j, 1.0)], {})
    assert len(state._users["busy"]) <= REMEMBERED_PER_ITEM * 2
    state.apply([Touch("a", "x", T0, 1.0)], {})
    state.apply([Touch("b", "y", T0, 1.0)], {})
    assert len(state) == 2 and "busy" not in state._users
    # An evicted user starts again from their row: what was pushed for them.
    got = state.apply([Touch("busy", "z", T0 + 99, 1.0)], {"busy": [("i49", T0 + 49)]})
    assert got["busy"][0] == ["z", "i49"]


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
        event(),  # the same event_id again: silver keeps one
        event(event_id="e2", event_type="impression"),  # weight 0
        event(event_id="e3", consent=False),
        event(event_id="e4", ts="2999-01-01T00:00:00Z"),  # silver quarantines it (future)
        b'{"event_id": "e5", "consent": false, "consent": true, "ts": 1}',  # unclear
        b"{not json",
        None,  # a tombstone
        event(event_id="e6", event_type="purchase", item_id="i2", ts=1_764_504_000_000),
    ]
    found, skipped = touches(values, settings, NOW)
    assert skipped == 7
    assert found == [
        Touch("u1", "i1", int(datetime(2026, 11, 30, 12, 10, tzinfo=UTC).timestamp() * 1000), 2.0),
        Touch("u1", "i2", 1_764_504_000_000, 8.0),
    ]


def test_pushed_rows_are_stamped_with_the_time_they_are_written() -> None:
    written = datetime(2026, 11, 30, 13, tzinfo=UTC)
    frame = push_frame({"u2": (["a"], [T0 + 1500]), "u1": (["b", "c"], [T0, T0 - 5])}, written)
    assert frame["user_id"].tolist() == ["u1", "u2"]
    assert frame["recent_item_ids"].tolist() == [["b", "c"], ["a"]]
    assert frame["recent_item_ts"].tolist() == [[T0, T0 - 5], [T0 + 1500]]
    assert set(frame["event_timestamp"]) == {written}


# -- who may be pushed: the deny list and consent withdrawals --------------------------------


def test_the_gate_keeps_out_denied_users_and_withdrawals_until_the_regrant(
    tmp_path: Path,
) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    from jobs import tables
    from jobs.subjects import add_to_deny_list, deny_list_path, key_id, subject_key

    settings = load_settings(data_root=tmp_path / "var")
    gate = Gate(settings)
    gate.refresh()
    assert gate.allows(Touch("w", "i", T0, 1.0))
    subject = gate.subject
    at = datetime.fromtimestamp(T0 / 1000, UTC)
    consent = pa.table(
        {
            "subject": [subject("w"), subject("w"), subject("g"), subject("g")],
            "status": ["withdrawn", "withdrawn", "withdrawn", "granted"],
            "changed_at": [
                at - timedelta(days=2),
                at - timedelta(days=1),
                at - timedelta(days=1),
                at + timedelta(seconds=10),
            ],
        }
    )
    write_deltalake(tables.path(settings, "consent"), consent)
    key = key_id(subject_key(settings.subject_secret_value()))
    add_to_deny_list(deny_list_path(settings), [subject("d")], key)
    gate._consent_checked = 0.0  # do not wait for the refresh interval
    gate.refresh()
    assert not gate.allows(Touch("d", "i", T0, 1.0))
    assert not gate.allows(Touch("w", "i", T0 + 10**9, 1.0))  # withdrawn, never re-granted
    assert not gate.allows(Touch("g", "i", T0, 1.0))  # before the re-grant
    assert gate.allows(Touch("g", "i", T0 + 10_000, 1.0))  # from the re-grant on
    assert gate.allows(Touch("someone", "i", T0, 1.0))


def test_an_unreadable_deny_list_stops_the_gate(tmp_path: Path) -> None:
    # In production the deny list is required: missing means storage not mounted.
    settings = load_settings(
        data_root=tmp_path / "var", env="prod", publish_secret="x" * 40, subject_secret="y" * 40
    )
    gate = Gate(settings)
    with pytest.raises(GateUnavailableError):
        gate.refresh()


_values = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.builds(
        lambda fields: json.dumps(fields, ensure_ascii=False).encode("utf-8", "surrogatepass"),
        st.dictionaries(
            st.sampled_from(
                ["event_id", "ts", "user_id", "item_id", "event_type", "consent", "session_id"]
            ),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-(2**70), 2**70),
                st.floats(allow_nan=False, allow_infinity=False),
                st.text(max_size=12),  # odd unicode, lone surrogates included
                st.sampled_from(["click", "purchase", "impression", "2026-11-30T12:10:00Z"]),
            ),
        ),
    ),
)


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(values=st.lists(_values, max_size=20))
def test_any_bytes_are_counted_or_skipped_never_a_crash(values: list[bytes | None]) -> None:
    """Every optional field absent, extreme numbers, odd unicode, broken bytes: each value
    is either one countable touch or one skip."""
    settings = load_settings()
    found, skipped = touches(values, settings, NOW)
    assert len(found) + skipped == len(values)
    for t in found:
        assert t.weight > 0 and t.user_id and t.item_id
        assert t.ts_ms <= int(NOW.timestamp() * 1000) + 3_600_000 * 26
