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
