"""The validator cannot raise: arbitrary JSON and bytes in every field give a typed record
that fits silver's schema, or a quarantine reason, and the frame handed back to Spark
always converts to Arrow.

The oracle is pyarrow itself, with the schema read from the table registry (not from the
validator): a record fits when pyarrow converts it safely into silver's column types.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import tables
from jobs.contracts import (
    ATTRIBUTION_FIELDS,
    EVENT_FIELDS,
    ITEM_FIELDS,
    MAX_TS_MS,
    MIN_TS_MS,
    REC_SOURCES,
    Reason,
)
from jobs.ingest import silver
from jobs.ingest.validate import Rejected, TimeWindow, parse_event, parse_item

WINDOW = TimeWindow(min_ms=788_918_400_000, max_ms=1_893_456_000_000)  # 1995 .. 2030
MS_PER_DAY = 86_400_000
ARROW = {
    "STRING": pa.string(),
    "INT": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
    "DATE": pa.date32(),
}


def arrow_schema(ddl: str, keep: set[str] | None = None) -> pa.Schema:
    """pyarrow schema of a DDL string, NOT NULL columns non-nullable."""
    fields = []
    for part, (name, kind) in zip(ddl.split(", "), tables.ddl_fields(ddl), strict=True):
        if keep is None or name in keep:
            fields.append(pa.field(name, ARROW[kind], nullable="NOT NULL" not in part))
    return pa.schema(fields)


EVENTS = arrow_schema(tables.TABLES["events"].ddl)
ITEMS = arrow_schema(tables.TABLES["items"].ddl)
LINEAGE = {"_batch_id", "_source_file", "_ingested_at"}

# Any character, lone surrogates included (Hypothesis leaves them out by default).
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
numbers = (
    st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**31 - 1, 2**31, 3_000_000_000, 4_294_967_297, 2**63, 10**400])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e19, 1e20, 2147483647.0, 2147483648.0, 1.5, -0.0, 1e308])
)
timestamps = (
    st.integers(min_value=WINDOW.min_ms - 10, max_value=WINDOW.max_ms + 10)
    | st.floats(min_value=7e11, max_value=2e12)
    | st.sampled_from(
        [
            "1793527200000",
            "²",
            "١٧٩٣٥٢٧٢٠٠٠٠٠",
            "9" * 5000,
            "0" * 5000 + "1793527200000",
            "1793527200000.5",
            1793527200000.5,
            "2026-11-01T10:00:00Z",
            "2026-11-01T10:00:00.0005+00:00",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-14:00",
            "２０２６-11-01T10:00:00Z",
        ]
    )
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
tricky_ids = st.sampled_from(["u\u200b1", " u1", "u1 ", "\u202eu1", "\ud800", 7, "x" * 129, ""])
good_ids = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=10)
iso = st.datetimes(
    min_value=datetime(1995, 1, 1), max_value=datetime(2029, 12, 31), timezones=st.just(UTC)
).map(datetime.isoformat)
maybe = st.none()
# Per field: values that pass, and anything at all. Most lines break at most one field, so
# accepted records are common and each rule is reached.
event_values = {
    "event_id": (good_ids, tricky_ids | any_text | json_values),
    "ts": (st.integers(WINDOW.min_ms, WINDOW.max_ms) | iso, timestamps | json_values),
    "user_id": (good_ids, tricky_ids | any_text | json_values),
    "item_id": (good_ids | st.integers(0, 10**6), tricky_ids | any_text | json_values),
    "event_type": (st.sampled_from(["view", "click", "purchase"]), json_values),
    "session_id": (maybe | good_ids, tricky_ids | json_values),
    "request_id": (maybe | good_ids, tricky_ids | json_values),
    "position": (maybe | st.integers(0, 2**31 - 1), numbers | json_values),
    "quantity": (maybe | st.integers(0, 100) | st.just(2**31 - 1), numbers | json_values),
    "price": (maybe | st.floats(0, 1e12) | st.just(10**300), numbers | json_values),
    "consent": (maybe | st.booleans(), json_values),
    # Attribution (issue 15): optional; the source from a closed set, the others ids.
    "rec_source": (maybe | st.sampled_from(REC_SOURCES), tricky_ids | any_text | json_values),
    "publish_id": (maybe | good_ids, tricky_ids | json_values),
    "model_version": (maybe | good_ids | st.integers(1, 10**6), tricky_ids | json_values),
}
assert set(event_values) == set(EVENT_FIELDS) | set(ATTRIBUTION_FIELDS)
item_values = {
    "item_id": (good_ids, tricky_ids | any_text | json_values),
    "title": (maybe | st.text(max_size=20), any_text | json_values),
    "category": (maybe | st.text(max_size=20), any_text | json_values),
    "brand": (maybe | st.text(max_size=20), any_text | json_values),
    "price": (maybe | st.floats(0, 1e12), numbers | json_values),
    "in_stock": (st.booleans(), json_values),
    "description": (maybe | st.text(max_size=40), any_text | json_values),
    "updated_at": (st.integers(MIN_TS_MS, MAX_TS_MS) | iso, timestamps | json_values),
}
assert set(item_values) == set(ITEM_FIELDS)


@st.composite
def records(draw: st.DrawFn, values: dict[str, tuple[st.SearchStrategy, ...]]) -> dict:
    """An object of the contract's fields: each present or not, valid or anything."""
    rec = {}
    for field, (good, anything) in values.items():
        roll = draw(st.integers(0, 19))
        if roll == 0:
            continue  # left out
        rec[field] = draw(anything if roll == 1 else good)
    return rec


@st.composite
def lines(draw: st.DrawFn, values: dict[str, tuple[st.SearchStrategy, ...]]) -> str | bytes:
    """A JSON line of a record, as text or bytes (escaped or raw, CR or BOM added), or
    arbitrary bytes."""
    rec = draw(records(values))
    text = json.dumps(rec, ensure_ascii=draw(st.booleans()), allow_nan=True)
    text = draw(st.sampled_from(["", "\ufeff"])) + text + draw(st.sampled_from(["", "\r", " "]))
    form = draw(st.sampled_from(["str", "bytes", "bytes", "random"]))
    if form == "str":
        return text
    if form == "bytes":
        # surrogatepass: a lone surrogate becomes bytes that are not valid UTF-8.
        return text.encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=40))


def assert_rejection_or_fits(parse, line: str | bytes, schema: pa.Schema, row) -> None:
    try:
        rec = parse(line)
    except Rejected as bad:
        assert isinstance(bad.reason, Reason)
        assert isinstance(bad.detail, str) and bad.detail
        return
    table = pa.Table.from_pylist([row(rec)], schema=schema)  # raises if a value does not fit
    assert table.num_rows == 1


def event_row(rec: dict) -> dict:
    """A parsed event in silver's columns (the lineage ones left out)."""
    assert isinstance(rec["ts_ms"], int) and WINDOW.min_ms <= rec["ts_ms"] <= WINDOW.max_ms
    return {
        **{k: rec[k] for k in EVENTS.names if k in rec},
        "ts": rec["ts_ms"] * 1000,
        "event_date": rec["ts_ms"] // MS_PER_DAY,
    }


def item_row(rec: dict) -> dict:
    return {**{k: rec[k] for k in ITEMS.names if k in rec}, "updated_at": rec["updated_at_ms"]}


SILVER_EVENTS = pa.schema([f for f in EVENTS if f.name not in LINEAGE])
SILVER_ITEMS = pa.schema(
    [
        pa.field("updated_at", pa.timestamp("ms"), nullable=False) if f.name == "updated_at" else f
        for f in ITEMS
        if f.name not in LINEAGE | {"_source_file"}
    ]
)
slow_ok = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])


@slow_ok
@given(lines(event_values))
def test_any_event_line_is_a_silver_row_or_a_reason(line: str | bytes) -> None:
    assert_rejection_or_fits(lambda raw: parse_event(raw, WINDOW), line, SILVER_EVENTS, event_row)


@slow_ok
@given(lines(item_values))
def test_any_catalog_line_is_a_silver_item_or_a_reason(line: str | bytes) -> None:
    assert_rejection_or_fits(parse_item, line, SILVER_ITEMS, item_row)


@slow_ok
@given(st.lists(lines(event_values), max_size=6))
def test_the_frame_back_to_spark_always_converts(batch: list[str | bytes]) -> None:
    """Whatever a batch holds (only bad lines, no optional field set, nothing at all), the
    pandas frame converts safely to the Arrow schema mapInPandas declares."""
    raw = [x if isinstance(x, bytes) else x.encode("utf-8", "surrogatepass") for x in batch]
    fn = silver._parser(lambda line: parse_event(line, WINDOW), silver.EVENT_FIELDS)
    frame = pd.DataFrame(
        {
            "value": pd.Series(raw, dtype=object),
            "_source_file": pd.Series(["f"] * len(raw), dtype=object),
            "_batch_id": pd.Series(["b"] * len(raw), dtype=object),
            "_ingested_at": pd.Series([pd.Timestamp("2026-11-01")] * len(raw)),
            "_dt": pd.Series([pd.Timestamp("2026-11-01").date()] * len(raw), dtype=object),
            # As Arrow hands it over when bronze redacted no line of the batch: all None.
            "_redacted": pd.Series([None] * len(raw), dtype=object),
        }
    )
    (out,) = list(fn(iter([frame])))
    schema = arrow_schema(silver.PARSED_EVENTS)
    table = pa.Table.from_pandas(out, schema=schema, safe=True, preserve_index=False)
    assert table.num_rows == len(raw)
    accepted = table.filter(pa.compute.is_null(table["reason"])).num_rows
    assert accepted + table.filter(pa.compute.is_valid(table["reason"])).num_rows == len(raw)


@slow_ok
@given(
    st.dictionaries(
        st.sampled_from(ATTRIBUTION_FIELDS),
        st.none() | st.text(max_size=12) | st.integers(-5, 10**6) | st.booleans(),
    )
)
def test_attribution_is_kept_exactly_or_quarantined_with_a_reason(attr: dict) -> None:
    """An otherwise valid event keeps a valid attribution value as it is (absent → None),
    and a bad one rejects the line with a reason naming the field."""
    base = {"event_id": "e", "ts": "2026-11-01T00:00:00Z", "user_id": "u", "item_id": "i"}
    line = json.dumps({**base, "event_type": "click", **attr})
    try:
        rec = parse_event(line, WINDOW)
    except Rejected as bad:
        assert bad.reason in {
            Reason.UNKNOWN_REC_SOURCE,
            Reason.BAD_ID,
            Reason.WRONG_TYPE,
            Reason.MISSING_FIELD,
            Reason.BAD_ENCODING,
        }
        assert any(field in bad.detail for field in ATTRIBUTION_FIELDS)
        return
    for field in ATTRIBUTION_FIELDS:
        value = attr.get(field)
        assert rec[field] == (None if value is None else str(value))
    assert rec["rec_source"] in (None, *REC_SOURCES)
