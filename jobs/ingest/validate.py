"""Record-level validation of landing lines against the contracts.

Pure Python, no Spark: the silver job applies these functions to every bronze line in
Spark (``mapInPandas``), and tests exercise each rule directly. A line either becomes a
typed record or a rejection with a :class:`~jobs.contracts.Reason` and a short detail;
nothing is dropped silently, and nothing else is ever raised.

Every accepted value fits the silver column it is stored in, so the conversion to Arrow
and the Delta write cannot fail on it (and Spark's safe Arrow conversion turns any future
slip into an error instead of a wrapped number). The choices, in the order they apply:

- **Lines** arrive as bytes. Longer than ``max_line_bytes`` → ``line_too_long`` (not
  parsed); not UTF-8 → ``bad_encoding`` (bronze keeps the bytes as they were; the
  quarantine shows them as ``\\xNN`` so the row stays valid UTF-8 for Arrow readers);
  empty or only whitespace → ``empty_line``. A leading byte-order mark is dropped (it is
  not content); a trailing CR is whitespace to the JSON parser.
- **Integers** (``position``, ``quantity``: INT) must be whole, ≥ 0 and ≤ 2³¹−1; a larger
  value is ``out_of_range``, never wrapped. ``price`` (DOUBLE) must be finite.
- **Timestamps**: ISO-8601 with a zone, or epoch milliseconds as a whole number or a string
  of ASCII digits (``"²"`` or Arabic-Indic digits are not digits here); a fraction of a
  millisecond is a bad timestamp whether written as a number or as a string.
- **Strings** must encode as UTF-8: a JSON escape of a lone surrogate (``"\\ud800"``) is
  ``bad_encoding``, in every id and every catalog text field.
- **Attribution** (``rec_source``, ``publish_id``, ``model_version``) is optional; the
  latter two are ids, ``rec_source`` must be one of ``REC_SOURCES`` (else
  ``unknown_rec_source``).
- **Ids** are rejected, never altered: blanks at either end, control characters,
  zero-width/bidi/format characters (Unicode Cc, Cf) and line or paragraph separators are
  ``bad_id``; so is an id longer than ``MAX_ID_LENGTH`` characters.
"""

from __future__ import annotations

import json
import math
import sys
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from jobs.contracts import (
    ATTRIBUTION_FIELDS,
    EVENT_FIELDS,
    EVENT_TYPES,
    INT32_MAX,
    ITEM_FIELDS,
    MAX_ID_LENGTH,
    MAX_LINE_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    REC_SOURCES,
    REQUIRED_EVENT_FIELDS,
    Reason,
)

_EVENT_TYPES = frozenset(EVENT_TYPES)
_FIELDS = frozenset((*EVENT_FIELDS, *ATTRIBUTION_FIELDS, *ITEM_FIELDS, "consent", "updated_at"))
_REC_SOURCES = frozenset(REC_SOURCES)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BOM = "\ufeff"
# Characters an id must not hold: they are invisible or reorder text, so two ids that
# look the same would differ (control, format incl. zero-width and bidi, separators).
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
# More digits than any epoch-millisecond value Spark can store (int64 has 19).
_MAX_MS_DIGITS = 19


class Rejected(Exception):
    """A record breaks the contract; carries the quarantine reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    @property
    def field(self) -> str | None:
        """The contract field at fault, when one is (every field rule's detail starts with
        its name); None for a line that is not a record at all (encoding, JSON, length)."""
        head = self.detail.split(" ", 1)[0]
        return head if head in _FIELDS else None


@dataclass(frozen=True)
class TimeWindow:
    """Plausible event times in epoch milliseconds, fixed by the batch being processed.

    The upper bound comes from the data interval (not the wall clock), so a backfill of
    last year judges its events exactly as the live run did.
    """

    min_ms: int
    max_ms: int


def read_line(line: str | bytes, max_bytes: int = MAX_LINE_BYTES) -> str:
    """The text of one landing line: short enough, UTF-8, not blank; BOM dropped."""
    if isinstance(line, str):
        if len(line) > max_bytes:  # characters ≤ bytes: too long whatever the encoding
            raise Rejected(Reason.LINE_TOO_LONG, f"line over {max_bytes} bytes")
        try:
            size = len(line.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise Rejected(Reason.BAD_ENCODING, f"not UTF-8 at character {exc.start}") from None
        text = line
    else:
        size = len(line)
        if size <= max_bytes:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Rejected(Reason.BAD_ENCODING, f"not UTF-8 at byte {exc.start}") from None
    if size > max_bytes:
        raise Rejected(Reason.LINE_TOO_LONG, f"line of {size} bytes, over {max_bytes}")
    text = text.removeprefix(_BOM)
    if not text.strip():
        raise Rejected(Reason.EMPTY_LINE, "empty line" if not text else "whitespace only")
    return text


def shown(line: str | bytes) -> str:
    """A line as the quarantine stores it: its text, with bytes that are not UTF-8 (and
    lone surrogates) written as backslash escapes so the value is valid UTF-8."""
    if isinstance(line, bytes):
        return line.decode("utf-8", "backslashreplace")
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


def _json(line: str) -> object:
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad syntax and integer literals over Python's digit limit.
        raise Rejected(Reason.UNPARSEABLE, f"not JSON: {shown(str(exc))[:80]}") from None


def _utf8(text: str, field: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Rejected(
            Reason.BAD_ENCODING, f"{field} has a lone surrogate at character {exc.start}"
        ) from None
    return text


def _invisible(text: str) -> bool:
    if text.isascii():
        return any(c < " " or c == "\x7f" for c in text)
    return any(unicodedata.category(c) in _INVISIBLE for c in text)


def _identifier(rec: dict, field: str, required: bool) -> str | None:
    value = rec.get(field)
    if value is None:
        if required:
            raise Rejected(Reason.MISSING_FIELD, f"{field} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Rejected(Reason.WRONG_TYPE, f"{field} must be a string, got {type(value).__name__}")
    if isinstance(value, int) and abs(value) >= 10**MAX_ID_LENGTH:
        # Checked before str(): a huge integer would hit Python's digit limit there.
        raise Rejected(Reason.BAD_ID, f"{field} longer than {MAX_ID_LENGTH} characters")
    text = str(value)
    if not text.strip():
        raise Rejected(Reason.MISSING_FIELD, f"{field} is empty")
    if len(text) > MAX_ID_LENGTH:
        raise Rejected(Reason.BAD_ID, f"{field} longer than {MAX_ID_LENGTH} characters")
    _utf8(text, field)
    if text != text.strip():
        raise Rejected(Reason.BAD_ID, f"{field} has blanks at either end")
    if _invisible(text):
        raise Rejected(Reason.BAD_ID, f"{field} contains control or invisible characters")
    return text


def _text(rec: dict, field: str) -> str | None:
    value = rec.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(Reason.WRONG_TYPE, f"{field} must be a string, got {type(value).__name__}")
    return _utf8(value, field)


def parse_timestamp_ms(value: object, field: str = "ts") -> int:
    """ISO-8601 with a zone, or whole epoch milliseconds, to epoch milliseconds.

    The result is not range-checked (callers compare it with their window or with the
    range of Spark's TIMESTAMP) but is always a plain ``int``.
    """
    if isinstance(value, bool):
        raise Rejected(Reason.BAD_TIMESTAMP, f"{field} is a boolean")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Rejected(Reason.BAD_TIMESTAMP, f"{field} is not finite")
        if not value.is_integer():
            raise Rejected(Reason.BAD_TIMESTAMP, f"{field} has a fraction of a millisecond")
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            digits = text.lstrip("0") or "0"
            if len(digits) > _MAX_MS_DIGITS:
                raise Rejected(Reason.BAD_TIMESTAMP, f"{field} has {len(digits)} digits")
            return int(digits)
        return _iso_ms(value, text, field)
    raise Rejected(Reason.BAD_TIMESTAMP, f"{field} has type {type(value).__name__}")


def _iso_ms(value: str, text: str, field: str) -> int:
    quoted = shown(repr(value[:40]))
    if not text.isascii():  # fromisoformat's digits are ASCII; say so before it is asked
        raise Rejected(Reason.BAD_TIMESTAMP, f"{field} {quoted} is not ASCII")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Rejected(Reason.BAD_TIMESTAMP, f"{field} {quoted} is not ISO-8601") from None
    if parsed.tzinfo is None:
        raise Rejected(Reason.BAD_TIMESTAMP, f"{field} {quoted} has no time zone")
    # Integer arithmetic: a float of seconds times 1000 would lose a millisecond.
    return (parsed - _EPOCH) // timedelta(milliseconds=1)


def _brief(n: int) -> str:
    """An integer for a detail message: huge ones by size (never a float, never 4,300
    digits of text)."""
    if abs(n) < 10**20:
        return str(n)
    return f"of about {int(n.bit_length() * math.log10(2))} digits"


def _number(rec: dict, field: str, integer: bool) -> float | int | None:
    value = rec.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(Reason.WRONG_TYPE, f"{field} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected(Reason.WRONG_TYPE, f"{field} is not finite")
    if integer and isinstance(value, float) and not value.is_integer():
        raise Rejected(Reason.WRONG_TYPE, f"{field} must be a whole number, got {value}")
    if value < 0:
        raise Rejected(Reason.NEGATIVE_VALUE, f"{field} is negative")
    # int vs float comparisons are exact in Python, even for integers beyond a double.
    upper = INT32_MAX if integer else sys.float_info.max
    if value > upper:
        column = f"INT (max {INT32_MAX})" if integer else "DOUBLE"
        raise Rejected(Reason.OUT_OF_RANGE, f"{field} does not fit {column}")
    return int(value) if integer else float(value)


def parse_event(
    line: str | bytes, window: TimeWindow, max_line_bytes: int = MAX_LINE_BYTES
) -> dict[str, object]:
    """One landing line to a typed event record, or raise :class:`Rejected`."""
    rec = _json(read_line(line, max_line_bytes))
    if not isinstance(rec, dict):
        raise Rejected(Reason.NOT_AN_OBJECT, f"a JSON {type(rec).__name__}, not an object")
    for field in REQUIRED_EVENT_FIELDS:
        if rec.get(field) is None:
            raise Rejected(Reason.MISSING_FIELD, f"{field} is missing")
    event_type = rec["event_type"]
    if not isinstance(event_type, str):
        raise Rejected(Reason.WRONG_TYPE, "event_type must be a string")
    if event_type not in _EVENT_TYPES:
        raise Rejected(Reason.UNKNOWN_EVENT_TYPE, f"event_type {shown(repr(event_type[:40]))}")
    ts_ms = parse_timestamp_ms(rec["ts"])
    if ts_ms < window.min_ms:
        raise Rejected(Reason.ANCIENT_TIMESTAMP, f"ts {_brief(ts_ms)} before {window.min_ms}")
    if ts_ms > window.max_ms:
        raise Rejected(Reason.FUTURE_TIMESTAMP, f"ts {_brief(ts_ms)} after {window.max_ms}")
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
        **_attribution(rec),
    }


def _attribution(rec: dict) -> dict[str, str | None]:
    """The attribution fields: ids by the id rules, ``rec_source`` one of REC_SOURCES.

    A value is rejected, never mapped to NULL: a click claiming an unknown source would
    otherwise count as organic and quietly lower the recommendations' CTR.
    """
    out = {field: _identifier(rec, field, False) for field in ATTRIBUTION_FIELDS}
    source = out["rec_source"]
    if source is not None and source not in _REC_SOURCES:
        raise Rejected(
            Reason.UNKNOWN_REC_SOURCE,
            f"rec_source {shown(repr(source[:40]))} is not one of {', '.join(REC_SOURCES)}",
        )
    return out


def parse_item(line: str | bytes, max_line_bytes: int = MAX_LINE_BYTES) -> dict[str, object]:
    """One catalog line to a typed item record, or raise :class:`Rejected`."""
    rec = _json(read_line(line, max_line_bytes))
    if not isinstance(rec, dict):
        raise Rejected(Reason.NOT_AN_OBJECT, f"a JSON {type(rec).__name__}, not an object")
    if rec.get("updated_at") is None:
        raise Rejected(Reason.MISSING_FIELD, "updated_at is missing")
    in_stock = rec.get("in_stock", True)
    if not isinstance(in_stock, bool):
        raise Rejected(Reason.WRONG_TYPE, "in_stock must be true or false")
    texts = {field: _text(rec, field) for field in ("title", "category", "brand", "description")}
    item_id = _identifier(rec, "item_id", True)
    price = _number(rec, "price", integer=False)
    updated_ms = parse_timestamp_ms(rec["updated_at"], "updated_at")
    if not MIN_TS_MS <= updated_ms <= MAX_TS_MS:
        raise Rejected(Reason.OUT_OF_RANGE, "updated_at outside the years 1 to 9999")
    return {
        "item_id": item_id,
        **texts,
        "price": price,
        "in_stock": in_stock,
        "updated_at_ms": updated_ms,
    }
