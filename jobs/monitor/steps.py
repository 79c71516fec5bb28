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
