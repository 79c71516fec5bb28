"""Record-level validation of landing lines against the contracts.

Pure Python, no Spark: the silver job applies these functions to every bronze line in
Spark (``mapInPandas``), and tests exercise each rule directly. A line either becomes a
typed record or a rejection with a :class:`~jobs.contracts.Reason` and a short detail;
nothing is dropped silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime

from jobs.contracts import EVENT_TYPES, MAX_ID_LENGTH, REQUIRED_EVENT_FIELDS, Reason

_EVENT_TYPES = frozenset(EVENT_TYPES)


class Rejected(Exception):
    """A record breaks the contract; carries the quarantine reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class TimeWindow:
    """Plausible event times in epoch milliseconds, fixed by the batch being processed.

    The upper bound comes from the data interval (not the wall clock), so a backfill of
    last year judges its events exactly as the live run did.
    """

    min_ms: int
    max_ms: int


def _json(line: str) -> object:
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise Rejected(Reason.UNPARSEABLE, f"not JSON: {str(exc)[:80]}") from None


def _identifier(rec: dict, field: str, required: bool) -> str | None:
    value = rec.get(field)
    if value is None:
        if required:
            raise Rejected(Reason.MISSING_FIELD, f"{field} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Rejected(Reason.WRONG_TYPE, f"{field} must be a string, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise Rejected(Reason.MISSING_FIELD, f"{field} is empty")
    if len(text) > MAX_ID_LENGTH:
        raise Rejected(Reason.BAD_ID, f"{field} longer than {MAX_ID_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise Rejected(Reason.BAD_ID, f"{field} contains control characters")
    return text


def parse_timestamp_ms(value: object, field: str = "ts") -> int:
    """ISO-8601 with a zone, or epoch milliseconds, to epoch milliseconds."""
    if isinstance(value, bool):
        raise Rejected(Reason.BAD_TIMESTAMP, f"{field} is a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise Rejected(Reason.BAD_TIMESTAMP, f"{field} is not finite")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise Rejected(
                Reason.BAD_TIMESTAMP, f"{field} {value[:40]!r} is not ISO-8601"
            ) from None
        if parsed.tzinfo is None:
            raise Rejected(Reason.BAD_TIMESTAMP, f"{field} {value[:40]!r} has no time zone")
        return int(parsed.timestamp() * 1000)
    raise Rejected(Reason.BAD_TIMESTAMP, f"{field} has type {type(value).__name__}")


def _number(rec: dict, field: str, integer: bool) -> float | int | None:
    value = rec.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(Reason.WRONG_TYPE, f"{field} must be a number, got {value!r:.40}")
    if not math.isfinite(value):
        raise Rejected(Reason.WRONG_TYPE, f"{field} is not finite")
    if integer and value != int(value):
        raise Rejected(Reason.WRONG_TYPE, f"{field} must be a whole number, got {value}")
    if value < 0:
        raise Rejected(Reason.NEGATIVE_VALUE, f"{field} is negative ({value})")
    return int(value) if integer else float(value)


def parse_event(line: str, window: TimeWindow) -> dict[str, object]:
    """One landing line to a typed event record, or raise :class:`Rejected`."""
    rec = _json(line)
    if not isinstance(rec, dict):
        raise Rejected(Reason.NOT_AN_OBJECT, f"a JSON {type(rec).__name__}, not an object")
    for field in REQUIRED_EVENT_FIELDS:
        if rec.get(field) is None:
            raise Rejected(Reason.MISSING_FIELD, f"{field} is missing")
    event_type = rec["event_type"]
    if not isinstance(event_type, str):
        raise Rejected(Reason.WRONG_TYPE, "event_type must be a string")
    if event_type not in _EVENT_TYPES:
        raise Rejected(Reason.UNKNOWN_EVENT_TYPE, f"event_type {event_type[:40]!r}")
    ts_ms = parse_timestamp_ms(rec["ts"])
    if ts_ms < window.min_ms:
        raise Rejected(Reason.ANCIENT_TIMESTAMP, f"ts {ts_ms} before {window.min_ms}")
    if ts_ms > window.max_ms:
        raise Rejected(Reason.FUTURE_TIMESTAMP, f"ts {ts_ms} after {window.max_ms}")
    consent = rec.get("consent")
    if consent is not None and not isinstance(consent, bool):
        raise Rejected(Reason.WRONG_TYPE, "consent must be true or false")
    return {
        "event_id": _identifier(rec, "event_id", True),
        "ts_ms": ts_ms,
        "user_id": _identifier(rec, "user_id", True),
        "item_id": _identifier(rec, "item_id", True),
        "event_type": event_type,
        "session_id": _identifier(rec, "session_id", False),
        "request_id": _identifier(rec, "request_id", False),
        "position": _number(rec, "position", integer=True),
        "quantity": _number(rec, "quantity", integer=True),
        "price": _number(rec, "price", integer=False),
        "consent": True if consent is None else consent,
    }


def parse_item(line: str) -> dict[str, object]:
    """One catalog line to a typed item record, or raise :class:`Rejected`."""
    rec = _json(line)
    if not isinstance(rec, dict):
        raise Rejected(Reason.NOT_AN_OBJECT, f"a JSON {type(rec).__name__}, not an object")
    if rec.get("updated_at") is None:
        raise Rejected(Reason.MISSING_FIELD, "updated_at is missing")
    in_stock = rec.get("in_stock", True)
    if not isinstance(in_stock, bool):
        raise Rejected(Reason.WRONG_TYPE, "in_stock must be true or false")
    texts = {}
    for field in ("title", "category", "brand", "description"):
        value = rec.get(field)
        if value is not None and not isinstance(value, str):
            raise Rejected(Reason.WRONG_TYPE, f"{field} must be a string")
        texts[field] = value
    return {
        "item_id": _identifier(rec, "item_id", True),
        **texts,
        "price": _number(rec, "price", integer=False),
        "in_stock": in_stock,
        "updated_at_ms": parse_timestamp_ms(rec["updated_at"], "updated_at"),
    }
