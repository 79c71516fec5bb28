"""Data-quality gates: Great Expectations suites for bronze, silver and gold.

Each layer has one suite, built here in code so that review happens in git, and run
through a checkpoint that stores the result. The Data Docs site under
``<data_root>/gx/uncommitted/data_docs/local_site/`` is rendered once per ingest run, not
per checkpoint (each render rebuilt the index from every stored result, seconds apiece):
the steps validate with ``render=False`` and the gold step, the run's last gated step,
calls :func:`render_docs`, which renders every stored result that has no page yet. A
critical failure renders before it raises, so the failing result is always there for a
person to open; a run that dies for another reason leaves its pages to the next run's
render. Expectations carry a severity:
a failed *critical* one raises :class:`QualityGateError` (the task fails and nothing
downstream sees the batch), a failed *warning* is recorded in the result, the audit row
and the Data Docs, and the batch goes on.

Where the gates sit, and why there:

- bronze, after landing: the raw batch has the ingestion metadata it needs, and its size
  is compared with the previous interval's (a sudden drop or spike is a warning);
- silver, on the candidate rows *before* they are merged: a batch that fails never
  reaches silver, so gold never sees it;
- silver changes, before gold applies them: whatever wrote silver (a backfill, a manual
  fix), gold only adds up rows that pass the silver suite's critical checks;
- gold, after the update: keys unique, counts positive, CTR a ratio. A failure here
  fails the task, so the gold Asset is not emitted and training does not start on it.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings
from jobs.contracts import EVENT_TYPES, MAX_ID_LENGTH

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DATASOURCE = "recflow_spark"
WARNING = "warning"
CRITICAL = "critical"


class QualityGateError(RuntimeError):
    """A critical data-quality expectation failed; the batch went no further."""

    def __init__(self, suite: str, failed: list[str], docs: Path) -> None:
        self.suite = suite
        self.failed = failed
        super().__init__(
            f"critical expectations failed in suite {suite!r}: {', '.join(failed)} "
            f"(details in the Data Docs: {docs})"
        )


def docs_index(settings: Settings) -> Path:
    """Where the rendered Data Docs site starts."""
    return settings.gx_dir / "uncommitted" / "data_docs" / "local_site" / "index.html"


@cache
def _context(project_root: str) -> Any:
    """One file-backed GX project per data root and process (creating it is slow)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ("great_expectations", "great_expectations.core", "py4j"):
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="file", project_root_dir=project_root)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def refresh_docs_index(settings: Settings) -> None:
    """Re-render the Data Docs index from the validation results that are left.

    Retention deletes old results and their pages; GX's index builder drops links to
    pages whose result is gone. Only the index is rendered: the identifier names no
    stored resource, so no page is rebuilt.
    """
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    context = _context(str(settings.data_root))
    context.build_data_docs(
        resource_identifiers=[ExpectationSuiteIdentifier(name="__recflow_index_only__")]
    )


def _batch_definition(context: Any, asset_name: str) -> Any:
    """Get or create a whole-dataframe batch definition (GX 1.x keeps them in the project)."""
    try:
        source = context.data_sources.get(DATASOURCE)
    except (KeyError, ValueError):
        source = context.data_sources.add_spark(name=DATASOURCE, persist=False)
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(name=asset_name)
    try:
        return asset.get_batch_definition(asset_name)
    except KeyError:
        return asset.add_batch_definition_whole_dataframe(asset_name)


def _page(site: Path, key: Any) -> Path:
    """Where the Data Docs page of validation result ``key`` is written (GX's layout:
    ``validations/<suite>/<run name>/<run time>/<batch>.html``)."""
    return site.joinpath("validations", *key.to_tuple()[:-1], f"{key.to_tuple()[-1]}.html")


def render_docs(settings: Settings) -> int:
    """Render the Data Docs pages of every stored validation result that has none yet,
    their suites' pages and the index, in one build; returns how many results.

    One build per run instead of one per checkpoint: GX rebuilds the index from every
    stored result at each build, so its cost grows with the results retention keeps.
    Nothing pending (a rerun that validated nothing), nothing rendered.
    """
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    context = _context(str(settings.data_root))
    site = docs_index(settings).parent
    pending = [
        key
        for key in context.validation_results_store.list_keys()
        if not _page(site, key).is_file()
    ]
    if not pending:
        return 0
    suites = {key.expectation_suite_identifier.name for key in pending}
    context.build_data_docs(
        resource_identifiers=[
            *pending,
            *(ExpectationSuiteIdentifier(name=name) for name in sorted(suites)),
        ]
    )
    return len(pending)


def run_suite(
    settings: Settings,
    name: str,
    frame: DataFrame,
    expectations: list[Any],
    render: bool = True,
) -> dict[str, Any]:
    """Validate ``frame`` against ``expectations`` as suite ``name`` and store the result.

    Data Docs are rendered at once when ``render`` (a one-off check) or when a critical
    expectation failed (the page explains the failure); the ingest steps pass
    ``render=False`` and call :func:`render_docs` once at the end of the run.
    Returns ``{"success": bool, "failed": {expectation: severity}}``; raises
    :class:`QualityGateError` when any critical expectation failed.
    """
    import great_expectations as gx

    context = _context(str(settings.data_root))
    suite = gx.ExpectationSuite(name=name, expectations=expectations)
    suite = context.suites.add_or_update(suite)
    validation = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=_batch_definition(context, name), suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[validation],
            actions=[],
            # Counts and percentages, never sample values: an unexpected value can be a
            # user id, and results and Data Docs are kept for weeks outside every erasure.
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 0},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    failed: dict[str, str] = {}
    for result in run.run_results.values():
        for check in result.results:
            if not check.success:
                config = check.expectation_config
                label = _label(config)
                severity = getattr(config, "severity", CRITICAL)
                failed[label] = str(getattr(severity, "value", severity))
    critical = [label for label, severity in failed.items() if severity == CRITICAL]
    if critical or render:
        render_docs(settings)
    if critical:
        raise QualityGateError(name, critical, docs_index(settings))
    return {"success": run.success, "failed": failed}


def _label(config: Any) -> str:
    kwargs = config.kwargs
    target = kwargs.get("column") or ",".join(kwargs.get("column_list") or [])
    return f"{config.type}({target})" if target else config.type


# -- suites ---------------------------------------------------------------------------


def _previous(spark: SparkSession, settings: Settings, interval: tables.Interval, col: str) -> int:
    """``col`` of the previous interval's successful audit row (None-safe: -1 if none)."""
    from pyspark.sql import functions as F

    audit = tables.read_or_create(spark, settings, "ingest_audit")
    row = (
        audit.where(
            (F.col("interval_end") == F.lit(interval.start.replace(tzinfo=None)))
            & (F.col("status") == "ok")
        )
        .orderBy(F.col("finished_at").desc())
        .select(col)
        .first()
    )
    return -1 if row is None or row[0] is None else int(row[0])


def _row_count_change(previous: int, ratio: float) -> list[Any]:
    """Warn when a batch is far smaller or larger than the previous interval's."""
    import great_expectations.expectations as gxe

    if previous <= 0:
        return []
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=math.floor(previous / ratio),
            max_value=math.ceil(previous * ratio),
            severity=WARNING,
            meta={"why": f"row count within {ratio}x of the previous interval ({previous})"},
        )
    ]


def bronze_expectations(batch_id: str, previous_rows: int, ratio: float) -> list[Any]:
    import great_expectations.expectations as gxe

    columns = tables.TABLES["bronze_events"].columns
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("_source_file", "_batch_id", "_ingested_at", "_dt")
        ),
        # A line is kept whole, or redacted with a reason and its hash (jobs.ingest.bronze).
        gxe.ExpectColumnValuesToNotBeNull(
            column="value", row_condition="_redacted IS NULL", condition_parser="spark"
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="_line_sha256", row_condition="_redacted IS NOT NULL", condition_parser="spark"
        ),
        gxe.ExpectColumnValuesToBeInSet(column="_batch_id", value_set=[batch_id]),
        *_row_count_change(previous_rows, ratio),
    ]


def silver_expectations(
    window: tuple[datetime, datetime] | None = None,
    previous_rows: int = -1,
    ratio: float = 10.0,
) -> list[Any]:
    """The silver events contract. ``window`` (freshness: the batch's newest event should
    fall in it) and the row-count change apply to one interval's batch, not to backfills."""
    import great_expectations.expectations as gxe

    required = ("event_id", "ts", "event_date", "user_id", "item_id", "event_type")
    out: list[Any] = [
        *(gxe.ExpectColumnToExist(column=c) for c in required),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in required),
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="position", min_value=0, severity=WARNING),
        *(
            gxe.ExpectColumnValueLengthsToBeBetween(column=c, min_value=1, max_value=MAX_ID_LENGTH)
            for c in ("event_id", "user_id", "item_id")
        ),
    ]
    if window is not None:
        out.append(
            gxe.ExpectColumnMaxToBeBetween(
                column="ts",
                min_value=window[0],
                max_value=window[1],
                severity=WARNING,
                meta={"why": "freshness: the newest event belongs to the interval"},
            )
        )
    return out + _row_count_change(previous_rows, ratio)


def gold_expectations(table: str) -> list[Any]:
    import great_expectations.expectations as gxe

    if table == "interactions":
        return [
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "item_id")),
            gxe.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="weight", min_value=0),
            gxe.ExpectColumnValuesToNotBeNull(column="last_ts", severity=WARNING),
        ]
    if table == "item_stats":
        return [
            gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            gxe.ExpectColumnValuesToBeBetween(column="ctr", min_value=0, max_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="impressions", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="purchases", min_value=0),
        ]
    if table == "user_stats":
        return [
            gxe.ExpectColumnValuesToBeUnique(column="user_id"),
            gxe.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
        ]
    raise KeyError(table)


GOLD_SUITES = ("interactions", "item_stats", "user_stats")


# -- the gates the ingest steps call ----------------------------------------------------


def check_bronze(
    spark: SparkSession, settings: Settings, interval: tables.Interval, render: bool = True
) -> dict[str, bool]:
    """Validate the interval's bronze batch (after landing)."""
    from pyspark.sql import functions as F

    day = f"{interval.start:%Y-%m-%d}"
    batch = tables.read_or_create(spark, settings, "bronze_events").where(
        (F.col("_dt") == F.lit(day).cast("date")) & (F.col("_batch_id") == interval.batch_id)
    )
    previous = _previous(spark, settings, interval, "read_lines")
    expectations = bronze_expectations(interval.batch_id, previous, settings.quality_row_ratio)
    result = run_suite(settings, "bronze_events", batch, expectations, render=render)
    return {"bronze_events": result["success"]}


def gate_silver(
    spark: SparkSession,
    settings: Settings,
    frame: DataFrame,
    interval: tables.Interval,
    render: bool = True,
) -> dict[str, bool]:
    """Validate one batch's silver candidates before they are merged."""
    freshness = timedelta(hours=settings.quality_freshness_hours)
    window = (
        interval.start.replace(tzinfo=None) - freshness,
        interval.end.replace(tzinfo=None) + timedelta(hours=settings.max_future_skew_hours),
    )
    previous = _previous(spark, settings, interval, "silver_inserted")
    expectations = silver_expectations(window, previous, settings.quality_row_ratio)
    result = run_suite(settings, "silver_events", frame, expectations, render=render)
    return {"silver_events": result["success"]}


def gate_changes(settings: Settings, inserted: DataFrame, render: bool = True) -> dict[str, bool]:
    """Validate silver rows gold is about to apply (whoever wrote them)."""
    result = run_suite(settings, "silver_changes", inserted, silver_expectations(), render=render)
    return {"silver_changes": result["success"]}


def check_gold(spark: SparkSession, settings: Settings, render: bool = True) -> dict[str, bool]:
    """Validate the gold tables after an update."""
    out: dict[str, bool] = {}
    for table in GOLD_SUITES:
        frame = tables.read_or_create(spark, settings, table)
        name = f"gold_{table}"
        result = run_suite(settings, name, frame, gold_expectations(table), render=False)
        out[name] = result["success"]
    if render:
        render_docs(settings)
    return out
