"""What the ``train`` and ``champion_watch`` DAGs (and ``recflow``) call.

The trigger's decision, one training run, the champion announcement (the champion Asset
is due when the alias differs from the last announcement, whoever moved it), and a
reviewer's promotion or rollback by hand. Each step resolves its own settings when it
runs and returns a small JSON-able dict (XCom carries references, never data).
"""

from __future__ import annotations

import logging
from typing import Any

from jobs.config import Settings, get_settings

log = logging.getLogger(__name__)


def trigger_step(settings: Settings | None = None) -> dict[str, Any]:
    """The trigger's decision, as a dict (logged; the DAG short-circuits on ``train``)."""
    from jobs import lake_light
    from jobs.model.registry import setup
    from jobs.train.trigger import decide

    settings = settings or get_settings()
    spark = None
    if not lake_light.available(settings):
        from jobs.spark import get_spark

        spark = get_spark(settings)
    decision = decide(spark, settings, setup(settings))
    log.info("training trigger: %s (train=%s)", decision.reason, decision.train)
    return decision.as_dict()


def train_step(
    decision: dict[str, Any],
    settings: Settings | None = None,
    training_key: str | None = None,
) -> dict[str, Any]:
    """Train, register and gate.

    ``training_key`` (the DAG passes its run id) makes a retry reuse the version the
    first try registered. A drift alert needs no clearing: the trigger counts only alerts
    computed after the newest training started (jobs.train.trigger).
    """
    from jobs.train.training import train_model

    settings = settings or get_settings()
    result = train_model(
        settings, reason=decision.get("reason", "manual"), training_key=training_key
    )
    log.info("registered %s v%s: %s", settings.model_name, result.version, result.gate.reason)
    return result.as_dict()


def announce_step(run: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """The champion to announce (the Asset is due), or None when it has not moved.

    ``run`` is the Airflow run (a retry of the run that recorded it announces again).
    """
    from jobs.model.promotion import announce
    from jobs.model.registry import setup

    settings = settings or get_settings()
    found = announce(setup(settings), settings.model_name, run)
    if found is None:
        log.info("champion unchanged since the last announcement")
    else:
        log.info("champion is v%s (was %s): announcing", found["model_version"], found["previous"])
    return found


def promote_step(
    version: str | None,
    by: str,
    reason: str,
    settings: Settings | None = None,
    expected: str | None = None,
) -> dict[str, Any]:
    """Make ``version`` the champion by hand (``None``: the previous champion, a rollback).

    Compare-and-set against the champion read here, or ``expected`` when the caller
    looked at it earlier. A version the gate rejected may be promoted (the reviewer's
    call, recorded with their reason); one that does not exist or cannot rank (non-finite
    factors) raises LookupError or NonFiniteModelError; ChampionMovedError if the alias
    moved.
    """
    from mlflow.exceptions import MlflowException

    from jobs.model.promotion import TAG_PROMOTED_FROM, champion_version, promote, settle_best
    from jobs.model.registry import load_version, setup

    if version is not None and not (version.isascii() and version.isdigit()):
        # ASCII only: str.isdigit and int() also take other scripts' digits ("٣").
        raise LookupError(f"{version!r} is not a version number (1, 2, …)")
    settings = settings or get_settings()
    client = setup(settings)
    name = settings.model_name
    current = champion_version(client, name)
    if expected is not None and expected != current:
        from jobs.model.promotion import ChampionMovedError

        raise ChampionMovedError(f"champion is v{current}, not v{expected}: nothing moved")
    if version is None:
        if current is None:
            raise LookupError("no champion to roll back from")
        before = client.get_model_version(name, current).tags.get(TAG_PROMOTED_FROM)
        if not before or before == "none":
            raise LookupError(
                f"champion v{current} records no previous champion: "
                "name the version (recflow promote VERSION)"
            )
        version = before
    try:
        target = client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise LookupError(f"{name} has no version {version}") from None
    if str(target.version) == current:
        return {"model_version": current, "previous": current, "moved": False}
    # Refused before the alias moves: the version must load and rank (finite factors).
    load_version(settings, str(target.version)).check_finite()
    previous = promote(client, name, str(target.version), current, by=by, reason=reason)
    log.info("champion v%s → v%s by %s: %s", previous, target.version, by, reason)
    # The bar of the gate stays the better of the two: promoting (or rolling back to) a
    # worse version does not lower what the next version is held to.
    best = settle_best(client, name, previous)
    return {
        "model_version": str(target.version),
        "previous": previous,
        "moved": True,
        "best": best,
    }
