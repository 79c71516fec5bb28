"""What the ``monitor`` DAG calls: one drift run per Airflow run.

Each step resolves its own settings when it runs and returns a small JSON-able dict (XCom
carries references, never data). Reads and writes: see :mod:`jobs.monitor.monitor`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from jobs.config import Settings, get_settings

log = logging.getLogger(__name__)


def drift_step(
    run_id: str, logical_date: datetime | str, settings: Settings | None = None
) -> dict[str, Any]:
    """The drift run for the window ending at ``logical_date`` (a rerun replaces its rows).

    No champion (or no events) is not an error: the result says why nothing was recorded.
    """
    from jobs.model.registry import setup
    from jobs.monitor.monitor import run_drift
    from jobs.spark import get_spark

    settings = settings or get_settings()
    if isinstance(logical_date, str):
        logical_date = datetime.fromisoformat(logical_date)
    result = run_drift(get_spark(settings), settings, setup(settings), run_id, logical_date)
    log.info("drift: %s", result.reason if not result.recorded else result.as_dict())
    return result.as_dict()


def feedback_days(end: datetime, window_hours: float) -> list[str]:
    """The days whose attribution can still change at ``end``: the day ``end`` falls in
    and every day a purchase can reach back to (an impression's click may come a window
    after it and the purchase another window after the click: two windows).

    A daily run at 00:00 computes the day that just ended (and re-reads the one before,
    whose late purchases landed since); a run on gold mid-day also computes today so far.
    Each day is replaced whole, so recomputing one is idempotent.
    """
    from datetime import UTC, timedelta

    end = end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=UTC)
    last = (end - timedelta(microseconds=1)).date()
    first = (end - timedelta(hours=2 * window_hours)).date() - timedelta(days=1)
    return [str(first + timedelta(days=n)) for n in range((last - first).days + 1)]


def feedback_step(end: datetime | str, settings: Settings | None = None) -> dict[str, Any]:
    """What users did with the recommendations up to ``end``: load the service's answer
    log, then recompute ``rec_performance`` and ``lift`` for :func:`feedback_days`."""
    from jobs.monitor.answers import answers_step
    from jobs.monitor.attribution import performance_step
    from jobs.monitor.lift import lift_step
    from jobs.spark import get_spark

    settings = settings or get_settings()
    if isinstance(end, str):
        end = datetime.fromisoformat(end)
    spark = get_spark(settings)
    answers = answers_step(settings, spark=spark)
    days = feedback_days(end, settings.attribution_window_hours)
    performance = {d: performance_step(settings, d, spark=spark) for d in days}
    lift = {d: lift_step(settings, d, spark=spark) for d in days}
    log.info("feedback for %s: answers %s", days, answers)
    return {"days": days, "answers": answers, "performance": performance, "lift": lift}


def export_step(settings: Settings | None = None) -> dict[str, Any]:
    """The batch gauges pushed to the Pushgateway (see :mod:`jobs.monitor.export`)."""
    from jobs.monitor.export import export_step as export

    return export(settings or get_settings())


def ingest_push_step(settings: Settings | None = None) -> dict[str, Any]:
    """The ingest DAG's last task: its freshness and quarantine figures to the Pushgateway
    (see :func:`jobs.monitor.export.ingest_push_step`; never fails the ingest run)."""
    from jobs.monitor.export import ingest_push_step as push

    return push(settings or get_settings())
