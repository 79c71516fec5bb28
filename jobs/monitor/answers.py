"""The service's answer log as a Delta table: one row per answered item.

Reads: the answer log files ``<answers_dir>/dt=*/*.jsonl`` written by
:mod:`jobs.answer_log` (the online service), and the deny list. Writes:
``monitor/rec_answers`` (``ts, dt, request_id, subject, model_version, source, ab_group,
item_id, rank`` and the line's place ``_source_file, _offset, _end``; ``ab_group`` is the
line's ``group``, a reserved word in SQL).

Loading is :func:`jobs.linelog_load.load_lines`, the access log's loader: complete lines only,
each file read from where the table left it, a MERGE on (file, offset, rank) so a rerun
adds nothing twice, bad lines counted and skipped. An answer without items (nothing in
stock) is a valid line that adds no row. Lines of people on the deny list are skipped:
their rows were erased (:mod:`jobs.privacy.erasure`), and without this a later load
would read them back from the files.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.answer_log import FIELDS, answers_dir
from jobs.config import Settings
from jobs.contracts import MAX_ID_LENGTH
from jobs.linelog_load import load_lines, loaded_offsets
from jobs.model.control import CONTROL, TREATMENT
from jobs.subjects import deny_list_path, read_deny_list

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

TABLE = "rec_answers"
_TEXT = ("request_id", "subject", "source", "group")
_GROUPS = frozenset({CONTROL, TREATMENT})


def _id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def parse_line(line: bytes) -> list[dict[str, Any]] | None:
    """The rows of one answer line (one per item), or None when it is not an answer."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != set(FIELDS):
        return None
    if not all(_id(data[f]) for f in _TEXT) or data["group"] not in _GROUPS:
        return None
    if data["model_version"] is not None and not isinstance(data["model_version"], str):
        return None
    try:
        ts = datetime.fromisoformat(data["ts"])
    except (TypeError, ValueError):
        return None
    if ts.tzinfo is None or not isinstance(data["items"], list):
        return None
    rows = []
    for item in data["items"]:
        if not isinstance(item, dict) or not _id(item.get("item_id")):
            return None
        rank = item.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 10_000:
            return None
        rows.append(
            {
                "ts": ts.astimezone(UTC),
                "request_id": data["request_id"],
                "subject": data["subject"],
                "model_version": data["model_version"],
                "source": data["source"],
                "ab_group": data["group"],
                "item_id": item["item_id"],
                "rank": rank,
            }
        )
    return rows


def row_fields() -> pa.Schema:
    """The Arrow types of :func:`parse_line`'s rows (the loader adds the line's place)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("ts", pa.timestamp("us", tz="UTC")),
            ("request_id", pa.string()),
            ("subject", pa.string()),
            ("model_version", pa.string()),
            ("source", pa.string()),
            ("ab_group", pa.string()),
            ("item_id", pa.string()),
            ("rank", pa.int32()),
        ]
    )


def load_answers(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Append the answer log's new complete lines to ``rec_answers``; returns counts."""
    denied = read_deny_list(deny_list_path(settings))
    skipped = 0

    def rows(line: bytes) -> list[dict[str, Any]] | None:
        nonlocal skipped
        parsed = parse_line(line)
        if parsed and parsed[0]["subject"] in denied:
            skipped += 1
            return []
        return parsed

    result = load_lines(
        spark,
        settings,
        TABLE,
        answers_dir(settings),
        rows,
        row_fields(),
        key=("rank",),
        offsets=loaded_offsets,
    )
    # An erasure that ran while this load was between reading the deny list and its MERGE
    # found none of these rows (not loaded yet) and is done; a load that died right after
    # its MERGE left such rows too, and the next one resumes past their lines. So after
    # every load, the rows of anyone on the (re-read) deny list go: a scan of one column,
    # and a DELETE only when one is found.
    denied_now = sorted(read_deny_list(deny_list_path(settings)))
    if denied_now and result["files"]:
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        location = tables.path(settings, TABLE)
        held = F.col("subject").isin(denied_now)
        if spark.read.format("delta").load(location).where(held).limit(1).count():
            DeltaTable.forPath(spark, location).delete(held)
            log.info("deleted the answer rows of people erased while they were loaded")
    return {**result, "denied_lines": skipped}


def answers_step(settings: Settings | None = None, spark: SparkSession | None = None) -> dict:
    """The monitor DAG's task: load what the service answered since the last load."""
    from jobs.config import get_settings

    settings = settings or get_settings()
    if spark is None:
        from jobs.spark import get_spark

        spark = get_spark(settings)
    return load_answers(spark, settings)
