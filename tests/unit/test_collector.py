"""The collector's request parsing: silver's rules, all or nothing, the field named."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.config import load_settings
from jobs.ingest.validate import Rejected, parse_event
from jobs.stream.collector import BadBatch, TooLarge, live_window, split_events

NOW = datetime(2026, 11, 30, 15, 20, tzinfo=UTC)
SETTINGS = load_settings(collector_max_events=5)


def event(**over: object) -> dict[str, object]:
    base = {
        "event_id": "e1",
        "ts": "2026-11-30T15:19:00Z",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "click",
    }
    return {k: v for k, v in {**base, **over}.items() if v is not None}


def test_one_object_lands_as_the_bytes_sent() -> None:
    body = json.dumps(event(), indent=2).encode()
    assert split_events(body, SETTINGS, NOW) == [(body, "u1")]


def test_a_batch_lands_one_line_per_event_keyed_by_user() -> None:
    body = json.dumps([event(event_id=f"e{i}", user_id=f"ü{i}") for i in range(3)]).encode()
    got = split_events(body, SETTINGS, NOW)
    assert [key for _, key in got] == ["ü0", "ü1", "ü2"]
    assert [json.loads(line)["event_id"] for line, _ in got] == ["e0", "e1", "e2"]
    assert all(b"\n" not in line for line, _ in got)


@pytest.mark.parametrize(
    ("bad", "reason", "field"),
    [
        (event(user_id=None), "missing_field", "user_id"),
        (event(ts="yesterday"), "bad_timestamp", "ts"),
        (event(ts="2026-12-30T00:00:00Z"), "future_timestamp", "ts"),
        (event(event_type="hover"), "unknown_event_type", "event_type"),
        (event(position=-1), "negative_value", "position"),
        (event(item_id=" i1"), "bad_id", "item_id"),
        (event(rec_source="email"), "unknown_rec_source", "rec_source"),
        (event(consent="yes"), "wrong_type", "consent"),
        ([1, 2], "not_an_object", None),
    ],
)
def test_a_bad_event_refuses_the_whole_batch_naming_index_and_field(
    bad: object, reason: str, field: str | None
) -> None:
    body = json.dumps([event(event_id="ok"), bad]).encode()
    with pytest.raises(BadBatch) as caught:
        split_events(body, SETTINGS, NOW)
    assert caught.value.body() == {
        "error": reason,
        "field": field,
        "detail": caught.value.rejected.detail,
        "index": 1,
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty_line"),
        (b"   ", "empty_line"),
        (b"[]", "empty_line"),
        (b'{"event_id": ', "unparseable"),
        (b"\xff\xfe{}", "bad_encoding"),
        (b"42", "not_an_object"),
    ],
)
def test_a_body_that_is_no_event_is_refused_with_the_quarantine_reason(
    body: bytes, reason: str
) -> None:
    with pytest.raises(BadBatch) as caught:
        split_events(body, SETTINGS, NOW)
    assert caught.value.rejected.reason == reason and caught.value.index is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # Bronze judges a line's raw text (two consent keys: unclear, redacted); an array's
        # events are serialized again, which would keep only the last: refused instead.
        (b'[{"event_id": "a", "consent": false, "consent": true}]', "unparseable"),
        (b'[{"event_id": "a", "price": 1e400}]', "out_of_range"),
    ],
)
def test_what_a_second_serialization_would_change_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(BadBatch) as caught:
        split_events(body, SETTINGS, NOW)
    assert caught.value.rejected.reason == reason


def test_more_events_than_a_request_may_carry_is_too_large() -> None:
    with pytest.raises(TooLarge):
        split_events(json.dumps([event()] * 6).encode(), SETTINGS, NOW)


@given(st.binary(max_size=300))
def test_any_body_is_accepted_or_refused_with_a_reason_never_crashes(body: bytes) -> None:
    with contextlib.suppress(BadBatch, TooLarge):
        split_events(body, SETTINGS, NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "ts",
                "user_id",
                "item_id",
                "event_type",
                "position",
                "price",
                "consent",
                "x",
            ]
        ),
        json_values,
    )
)
def test_what_the_collector_accepts_silver_accepts_with_the_same_values(rec: dict) -> None:
    body = json.dumps([{**event(), **rec}]).encode()
    window = live_window(SETTINGS, NOW)
    try:
        accepted = split_events(body, SETTINGS, NOW)
    except BadBatch as exc:
        # Refused: silver would quarantine it for the same reason.
        with pytest.raises(Rejected) as silver:
            parse_event(json.dumps({**event(), **rec}).encode(), window)
        assert silver.value.reason == exc.rejected.reason
        return
    ((line, _),) = accepted
    assert parse_event(line, window) == parse_event(json.dumps({**event(), **rec}).encode(), window)
