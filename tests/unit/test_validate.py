"""Record-level contract rules: each malformed kind gets its reason; valid lines are typed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.contracts import Reason
from jobs.ingest.validate import Rejected, TimeWindow, parse_event, parse_item
from jobs.sources.shop import MALFORMED_KINDS, malformed_line

WINDOW = TimeWindow(min_ms=788_918_400_000, max_ms=1_893_456_000_000)  # 1995 .. 2030
GOOD = {
    "event_id": "e1",
    "ts": "2026-11-01T10:00:00Z",
    "user_id": "u1",
    "item_id": "i1",
    "event_type": "purchase",
    "session_id": "s1",
    "request_id": None,
    "position": 3,
    "quantity": 2,
    "price": 9.5,
    "consent": True,
}


def test_a_valid_line_becomes_a_typed_record() -> None:
    rec = parse_event(json.dumps(GOOD), WINDOW)
    assert rec["ts_ms"] == 1_793_527_200_000
    assert (rec["position"], rec["quantity"], rec["price"]) == (3, 2, 9.5)
    assert rec["consent"] is True and rec["request_id"] is None


def test_epoch_ms_and_missing_consent_are_accepted() -> None:
    line = dict(GOOD, ts=1_793_527_200_000)
    del line["consent"]
    rec = parse_event(json.dumps(line), WINDOW)
    assert rec["ts_ms"] == 1_793_527_200_000 and rec["consent"] is True


@pytest.mark.parametrize("kind", sorted(MALFORMED_KINDS))
def test_every_malformed_kind_is_rejected_with_its_reason(kind: str) -> None:
    line = malformed_line(kind, dict(GOOD), np.random.default_rng(0))
    with pytest.raises(Rejected) as verdict:
        parse_event(line, WINDOW)
    assert verdict.value.reason == MALFORMED_KINDS[kind]
    assert verdict.value.detail


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"ts": "2026-11-01T10:00:00"}, Reason.BAD_TIMESTAMP),  # no zone
        ({"position": -1}, Reason.NEGATIVE_VALUE),
        ({"quantity": 1.5}, Reason.WRONG_TYPE),
        ({"consent": "no"}, Reason.WRONG_TYPE),
        ({"user_id": "   "}, Reason.MISSING_FIELD),
        ({"event_type": 3}, Reason.WRONG_TYPE),
    ],
)
def test_more_rules(patch: dict, reason: Reason) -> None:
    with pytest.raises(Rejected) as verdict:
        parse_event(json.dumps(dict(GOOD, **patch)), WINDOW)
    assert verdict.value.reason == reason


def test_items_are_typed_or_rejected() -> None:
    item = {
        "item_id": "i1",
        "title": "Lamp",
        "category": "home",
        "brand": "B",
        "price": 3.0,
        "in_stock": False,
        "description": "d",
        "updated_at": "2026-11-01T00:00:00Z",
    }
    assert parse_item(json.dumps(item))["in_stock"] is False
    with pytest.raises(Rejected) as verdict:
        parse_item(json.dumps(dict(item, price=-1)))
    assert verdict.value.reason == Reason.NEGATIVE_VALUE


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"position": 3_000_000_000}, Reason.OUT_OF_RANGE),  # wrapped negative before
        ({"quantity": 4_294_967_297}, Reason.OUT_OF_RANGE),  # was stored as 1
        ({"quantity": 1e19}, Reason.OUT_OF_RANGE),
        ({"position": 1e20}, Reason.OUT_OF_RANGE),
        ({"position": 2**31}, Reason.OUT_OF_RANGE),
        ({"ts": "²"}, Reason.BAD_TIMESTAMP),
        ({"ts": "١٧٩٣٥٢٧٢٠٠٠٠٠"}, Reason.BAD_TIMESTAMP),  # Arabic-Indic digits
        ({"ts": "9" * 5000}, Reason.BAD_TIMESTAMP),
        ({"ts": 1_793_527_200_000.5}, Reason.BAD_TIMESTAMP),
        ({"ts": "1793527200000.5"}, Reason.BAD_TIMESTAMP),
        ({"user_id": "\ud800"}, Reason.BAD_ENCODING),
        ({"session_id": "s\udfff"}, Reason.BAD_ENCODING),
        ({"user_id": " u1"}, Reason.BAD_ID),
        ({"item_id": "i1\u00a0"}, Reason.BAD_ID),
        ({"user_id": "u\u200b1"}, Reason.BAD_ID),  # zero-width space
        ({"user_id": "\u202eu1"}, Reason.BAD_ID),  # right-to-left override
        ({"event_id": "e\u00851"}, Reason.BAD_ID),  # C1 control
        ({"event_id": 10**200}, Reason.BAD_ID),
    ],
)
def test_values_that_do_not_fit_silver_are_quarantined(patch: dict, reason: Reason) -> None:
    with pytest.raises(Rejected) as verdict:
        parse_event(json.dumps(dict(GOOD, **patch)), WINDOW)
    assert verdict.value.reason == reason
    assert verdict.value.detail.encode("utf-8")


@pytest.mark.parametrize(
    ("patch", "field", "value"),
    [
        ({"position": 2**31 - 1}, "position", 2**31 - 1),
        ({"quantity": 7.0}, "quantity", 7),
        ({"ts": "0001793527200000"}, "ts_ms", 1_793_527_200_000),
        ({"ts": 1.7935272e12}, "ts_ms", 1_793_527_200_000),
        ({"ts": "2026-11-01T10:00:00.001+00:00"}, "ts_ms", 1_793_527_200_001),
        ({"user_id": "ユーザー1"}, "user_id", "ユーザー1"),
        ({"item_id": 42}, "item_id", "42"),
    ],
)
def test_edge_values_that_fit_are_kept_exactly(patch: dict, field: str, value: object) -> None:
    assert parse_event(json.dumps(dict(GOOD, **patch)), WINDOW)[field] == value


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", Reason.EMPTY_LINE),
        (b" \t\r", Reason.EMPTY_LINE),
        (b'{"event_id": "\xff"}', Reason.BAD_ENCODING),
        (b'{"event_id": "\xed\xa0\x80"}', Reason.BAD_ENCODING),  # an encoded surrogate
        (b"{" + b" " * 2000 + b"}", Reason.LINE_TOO_LONG),
        ("\ud800", Reason.BAD_ENCODING),
        ("[" * 999, Reason.UNPARSEABLE),  # nesting deeper than the JSON parser goes
    ],
)
def test_lines_that_are_not_records(line: str | bytes, reason: Reason) -> None:
    with pytest.raises(Rejected) as verdict:
        parse_event(line, WINDOW, max_line_bytes=1000)
    assert verdict.value.reason == reason


def test_a_bom_and_line_endings_do_not_lose_an_event() -> None:
    for line in ("\ufeff" + json.dumps(GOOD), json.dumps(GOOD) + "\r"):
        assert parse_event(line.encode(), WINDOW)["event_id"] == "e1"


def test_catalog_text_must_be_utf8_and_times_storable() -> None:
    item = {"item_id": "i1", "updated_at": "2026-11-01T00:00:00Z"}
    assert parse_item(json.dumps(item))["brand"] is None
    for patch, reason in [
        ({"description": "d\udc00"}, Reason.BAD_ENCODING),
        ({"brand": "\ud83d"}, Reason.BAD_ENCODING),
        ({"updated_at": 10**20}, Reason.OUT_OF_RANGE),
        ({"price": 10**400}, Reason.OUT_OF_RANGE),
    ]:
        with pytest.raises(Rejected) as verdict:
            parse_item(json.dumps(dict(item, **patch)))
        assert verdict.value.reason == reason


def test_attribution_fields_are_typed_and_absent_ones_null() -> None:
    rec = parse_event(json.dumps(GOOD), WINDOW)
    assert (rec["rec_source"], rec["publish_id"], rec["model_version"]) == (None, None, None)
    line = dict(GOOD, rec_source="cdn", publish_id="20261101T000000Z-v7", model_version=7)
    rec = parse_event(json.dumps(line), WINDOW)
    assert (rec["rec_source"], rec["publish_id"], rec["model_version"]) == (
        "cdn",
        "20261101T000000Z-v7",
        "7",
    )


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"rec_source": "email"}, Reason.UNKNOWN_REC_SOURCE),
        ({"rec_source": "CDN"}, Reason.UNKNOWN_REC_SOURCE),
        ({"rec_source": 1}, Reason.UNKNOWN_REC_SOURCE),
        ({"rec_source": ["cdn"]}, Reason.WRONG_TYPE),
        ({"publish_id": " p1"}, Reason.BAD_ID),
        ({"model_version": "7\u200b"}, Reason.BAD_ID),
        ({"model_version": True}, Reason.WRONG_TYPE),
        ({"publish_id": ""}, Reason.MISSING_FIELD),
    ],
)
def test_bad_attribution_is_quarantined_with_a_reason(patch: dict, reason: Reason) -> None:
    line = json.dumps(dict(GOOD, **patch))
    with pytest.raises(Rejected) as verdict:
        parse_event(line, WINDOW)
    assert verdict.value.reason == reason
