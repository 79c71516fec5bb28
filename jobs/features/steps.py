"""What the ``features`` DAG calls: apply the Feast definitions, then materialize.

Each step resolves its own settings when it runs and returns a small JSON-able dict.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobs.config import Settings, get_settings


def apply_step(settings: Settings | None = None) -> dict[str, Any]:
    """``feast apply`` of recflow's definitions (idempotent)."""
    from jobs.features.definitions import apply

    settings = settings or get_settings()
    apply(settings)
    return {"project": settings.feast_project}


def materialize_step(end: datetime, settings: Settings | None = None) -> dict[str, Any]:
    """Export the lake as of ``end`` (the run's data end) and materialize up to it."""
    from jobs.features.export import materialize

    return materialize(settings or get_settings(), end=end)
