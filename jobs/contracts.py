"""The data contracts of recflow, in one place.

Landing events and catalog items (see DESIGN.md), the reason codes a rejected record
is quarantined with, and the layout of landing files. The generator, the importers and
the ETL all read these names from here so that a contract changes in one place.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path

EVENT_TYPES: tuple[str, ...] = ("impression", "view", "click", "add_to_cart", "purchase")
REQUIRED_EVENT_FIELDS: tuple[str, ...] = ("event_id", "ts", "user_id", "item_id", "event_type")
OPTIONAL_EVENT_FIELDS: tuple[str, ...] = (
    "session_id",
    "request_id",
    "position",
    "quantity",
    "price",
    "consent",
)
EVENT_FIELDS: tuple[str, ...] = REQUIRED_EVENT_FIELDS + OPTIONAL_EVENT_FIELDS
ITEM_FIELDS: tuple[str, ...] = (
    "item_id",
    "title",
    "category",
    "brand",
    "price",
    "in_stock",
    "description",
    "updated_at",
)
MAX_ID_LENGTH = 128
# Longest landing line the validator parses (UTF-8 bytes); the default of the setting
# ``max_line_bytes``. A real event is well under 1 KiB: a megabyte is a broken producer.
MAX_LINE_BYTES = 1_048_576
# Silver's INT columns (position, quantity) and the range Spark's TIMESTAMP can hold.
INT32_MAX = 2**31 - 1
MIN_TS_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# K of a recommendation list when nobody says otherwise: offline metrics and the service.
DEFAULT_K = 10


class Reason(StrEnum):
    """Why a landing record was quarantined instead of reaching silver."""

    UNPARSEABLE = "unparseable"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    ANCIENT_TIMESTAMP = "ancient_timestamp"
    NEGATIVE_VALUE = "negative_value"
    # A number beyond the range of its silver column (INT, DOUBLE, TIMESTAMP).
    OUT_OF_RANGE = "out_of_range"
    # An id with blanks at either end, control, zero-width or bidi characters, or too long.
    BAD_ID = "bad_id"
    # Bytes that are not UTF-8, or a string holding a lone surrogate (``"\ud800"``).
    BAD_ENCODING = "bad_encoding"
    # A line longer than ``max_line_bytes``; not parsed at all.
    LINE_TOO_LONG = "line_too_long"
    # An empty or whitespace-only line: no record at all, kept so the counts balance.
    EMPTY_LINE = "empty_line"
    # ``rec_source`` is not one of REC_SOURCES (attribution, issue 15).
    UNKNOWN_REC_SOURCE = "unknown_rec_source"


class Redaction(StrEnum):
    """Why bronze holds a line without its content (value NULL, its SHA-256 kept).

    Such a line never reaches silver or the quarantine; the audit counts the first two as
    ``non_consented`` and the last as ``consent_withdrawn``.
    """

    # The event says ``"consent": false`` (or the string ``"false"``, any case).
    NOT_CONSENTED = "not_consented"
    # A consent value that is neither true, null nor absent (0, "no", {}…), or a line that
    # cannot be read as JSON but mentions such a consent: not a yes, so not kept.
    CONSENT_UNCLEAR = "consent_unclear"
    # The user withdrew consent (jobs.privacy.consent) before the event, or the event
    # belongs to the past their withdrawal erases.
    CONSENT_WITHDRAWN = "consent_withdrawn"


def hour_partition(ts: datetime) -> str:
    """Relative folder of one landing hour: ``dt=YYYY-MM-DD/hr=HH``."""
    return f"dt={ts:%Y-%m-%d}/hr={ts:%H}"


def events_file(events_dir: Path, hour: datetime, part: str) -> Path:
    """Path of one landing file of events for one hour."""
    return events_dir / hour_partition(hour) / f"{part}.jsonl"


# Airflow Assets (data-aware scheduling between the DAGs): names shared by producer and
# consumer DAG files, kept here so the DAG files hold no string twice.
ASSET_SILVER_EVENTS = "recflow_silver_events"
ASSET_GOLD_INTERACTIONS = "recflow_gold_interactions"
ASSET_CHAMPION = "recflow_champion"
# Emitted by the monitor DAG when a drift metric reaches its alert level; the train DAG
# is scheduled on gold OR this Asset.
ASSET_DRIFT = "recflow_drift"

# Attribution (issue 15): the optional event fields that tie an impression or a click to
# what produced it, and the values ``rec_source`` may take. ``cdn``: the user's published
# list; ``service``: an online answer (``request_id`` names it); an impression without
# ``rec_source`` is an organic slot, the baseline.
ATTRIBUTION_FIELDS: tuple[str, ...] = ("rec_source", "publish_id", "model_version")
REC_SOURCES: tuple[str, ...] = ("cdn", "service")
# Not part of EVENT_FIELDS: the generators and importers select their columns by that
# tuple, and these fields are optional (absent → NULL in silver).
