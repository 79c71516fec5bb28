"""Moving the ``champion`` alias safely, dating it, and remembering what was announced.

Reads and writes the MLflow registry only: the ``champion`` alias, version tags (who
promoted a version, when and why) and two registered-model tags (the version the
champion Asset was last emitted for, and by which Airflow run).

- :func:`promote` is a compare-and-set: it re-reads the alias right before moving it and
  refuses (:class:`ChampionMovedError`) when it is no longer the version the caller
  compared against. MLflow has no conditional alias update, so a window of one round
  trip remains; it replaces the window of a whole training run (an hour or more) in
  which two overlapping runs each compared against the champion they read at the start.
- :func:`champion_since` dates the current champion by its promotion, not its creation:
  a reviewer who rolls back to an older version starts its clock again.
- :func:`announce` decides whether the champion Asset is due (the alias differs from the
  last announcement, whoever moved it: the gate, ``recflow promote``, the MLflow UI) and
  records it. A reviewer's UI change carries no promotion tags: the first announcement
  of it dates it (``recflow.promoted_at``), so the trigger's age rule sees it as new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs.model.registry import CHAMPION, alias_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

TAG_PROMOTED_AT = "recflow.promoted_at"
TAG_PROMOTED_BY = "recflow.promoted_by"
TAG_PROMOTED_REASON = "recflow.promoted_reason"
TAG_PROMOTED_FROM = "recflow.promoted_from"
MODEL_TAG_ANNOUNCED = "recflow.announced_version"
MODEL_TAG_ANNOUNCED_AT = "recflow.announced_at"
MODEL_TAG_ANNOUNCED_RUN = "recflow.announced_by_run"
SEEN_IN_REGISTRY = "the registry (alias set outside recflow, e.g. the MLflow UI)"


class ChampionMovedError(RuntimeError):
    """The champion alias is not the version the caller compared against any more."""


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The champion's version number, or None when there is none (errors propagate)."""
    found = alias_version(client, name, CHAMPION)
    return None if found is None else str(found.version)


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    expected: str | None,
    by: str,
    reason: str,
    now: float | None = None,
) -> str | None:
    """Make ``version`` the champion if the champion is still ``expected``; tag who/when/why.

    Returns the previous champion. The alias moves first and the tags follow: should the
    tags fail, the version is champion without a date, and the next announcement dates
    it (never the reverse, a version claiming a promotion that did not happen).
    """
    current = champion_version(client, name)
    if current != expected:
        raise ChampionMovedError(
            f"champion is {_v(current)}, not {_v(expected)} as compared: not moving it to "
            f"v{version} (someone else promoted in between; compare again)"
        )
    client.set_registered_model_alias(name, CHAMPION, str(version))
    stamp = time.time() if now is None else now
    for tag, value in (
        (TAG_PROMOTED_AT, f"{stamp:.3f}"),
        (TAG_PROMOTED_BY, by),
        (TAG_PROMOTED_REASON, reason[:4000]),
        (TAG_PROMOTED_FROM, current or "none"),
    ):
        client.set_model_version_tag(name, str(version), tag, value)
    return current


def _v(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


@dataclass(frozen=True)
class Announcement:
    """The last champion the champion Asset was emitted for."""

    version: str
    at: float
    run: str


def last_announcement(client: MlflowClient, name: str) -> Announcement | None:
    """What the registered model's tags say was announced last (None: never)."""
    tags = client.get_registered_model(name).tags or {}
    if MODEL_TAG_ANNOUNCED not in tags:
        return None
    return Announcement(
        tags[MODEL_TAG_ANNOUNCED],
        float(tags.get(MODEL_TAG_ANNOUNCED_AT, 0) or 0),
        tags.get(MODEL_TAG_ANNOUNCED_RUN, ""),
    )


def champion_since(version: Any, announced: Announcement | None, now: float | None = None) -> float:
    """When ``version`` (a ModelVersion, the champion) became champion, epoch seconds.

    Its ``recflow.promoted_at`` tag when that is the latest news; its creation when it
    was never promoted through recflow. A champion that is not the announced one and
    whose tag predates that announcement was moved outside recflow (a reviewer's rollback
    in the UI) and not announced yet: it became champion just now as far as anyone can
    tell.
    """
    now = time.time() if now is None else now
    created = version.creation_timestamp / 1000.0
    promoted = _float(version.tags.get(TAG_PROMOTED_AT)) if version.tags else None
    since = max(created, promoted or 0.0)
    moved_outside = announced is not None and announced.version != str(version.version)
    if moved_outside and since <= announced.at:
        return now
    return since


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        # A hand-edited tag that is not a number: dated by creation instead of failing
        # every trigger; the reviewer sees the tag as they wrote it.
        return None


def announce(
    client: MlflowClient, name: str, run: str, now: float | None = None
) -> dict[str, Any] | None:
    """The champion to announce (and record it announced), or None when nothing moved.

    ``run`` identifies the caller (the Airflow run): a retry of the run that recorded the
    announcement gets it again, so a task that failed after recording still emits the
    Asset on its retry. A champion moved outside recflow is dated here (see the module).
    """
    now = time.time() if now is None else now
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return None
    version = str(champion.version)
    announced = last_announcement(client, name)
    if announced is not None and announced.version == version and announced.run != run:
        return None
    since = champion_since(champion, announced, now)
    promoted = _float((champion.tags or {}).get(TAG_PROMOTED_AT))
    if promoted is None or since > promoted:
        # Moved outside recflow (no tag, or a tag from an earlier reign): date it now.
        client.set_model_version_tag(name, version, TAG_PROMOTED_AT, f"{since:.3f}")
        client.set_model_version_tag(name, version, TAG_PROMOTED_BY, SEEN_IN_REGISTRY)
    if announced is None or announced.version != version:
        client.set_registered_model_tag(name, MODEL_TAG_ANNOUNCED, version)
        client.set_registered_model_tag(name, MODEL_TAG_ANNOUNCED_AT, f"{now:.3f}")
        client.set_registered_model_tag(name, MODEL_TAG_ANNOUNCED_RUN, run)
    return {
        "model_version": version,
        "run_id": champion.run_id,
        "previous": None if announced is None else announced.version,
        "promoted_at": since,
        "promoted_by": (champion.tags or {}).get(TAG_PROMOTED_BY, SEEN_IN_REGISTRY),
    }
