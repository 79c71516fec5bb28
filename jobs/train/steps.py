"""What the ``train`` DAG calls: the trigger's decision, then one training run.

Each step resolves its own settings when it runs and returns a small JSON-able dict
(XCom carries references, never data).
"""

from __future__ import annotations

import logging
from typing import Any

from jobs.config import Settings, get_settings

log = logging.getLogger(__name__)


def trigger_step(settings: Settings | None = None) -> dict[str, Any]:
    """The trigger's decision, as a dict (logged; the DAG short-circuits on ``train``)."""
    from jobs.model.registry import setup
    from jobs.spark import get_spark
    from jobs.train.trigger import decide

    settings = settings or get_settings()
    decision = decide(get_spark(settings), settings, setup(settings))
    log.info("training trigger: %s (train=%s)", decision.reason, decision.train)
    return decision.as_dict()


def train_step(decision: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Train, register and gate; answers a raised drift flag."""
    from jobs.train.training import train_model
    from jobs.train.trigger import clear_drift_flag

    settings = settings or get_settings()
    result = train_model(settings, reason=decision.get("reason", "manual"))
    if decision.get("drift"):
        clear_drift_flag(settings, result.run_id)
    log.info("registered %s v%s: %s", settings.model_name, result.version, result.gate.reason)
    return result.as_dict()
