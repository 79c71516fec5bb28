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
- :func:`ensure_best` and :func:`settle_best` keep the ``best`` alias (the bar of the
  gate) whenever the champion moves: without it the gate compares with the champion
  alone and a chain of promotions, each a little worse, ratchets the quality down.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs.model.registry import BEST, CHAMPION, alias_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

TAG_PROMOTED_AT = "recflow.promoted_at"
TAG_PROMOTED_BY = "recflow.promoted_by"
TAG_PROMOTED_REASON = "recflow.promoted_reason"
TAG_PROMOTED_FROM = "recflow.promoted_from"
MODEL_TAG_ANNOUNCED = "recflow.announced_version"
MODEL_TAG_ANNOUNCED_AT = "recflow.announced_at"
MODEL_TAG_ANNOUNCED_RUN = "recflow.announced_by_run"
# The version recflow last pointed `best` at: an alias that is gone while this is set
# disappeared (MLflow drops the aliases of a deleted version) rather than never existed.
MODEL_TAG_BEST = "recflow.best_version"
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

    A ``version`` that already is the champion is a success, not a move by someone else:
    the retry of a promotion whose caller died before recording it (the gate's decision
    tags) must not record a real promotion as refused. Its missing tags are written.
    """
    version = str(version)
    current = champion_version(client, name)
    if current == version and current != expected:
        tags = client.get_model_version(name, version).tags or {}
        if TAG_PROMOTED_AT in tags:
            before = tags.get(TAG_PROMOTED_FROM)
            return None if before in (None, "none") else before
        _tag_promotion(client, name, version, expected, by, reason, now)
        return expected
    if current != expected:
        raise ChampionMovedError(
            f"champion is {_v(current)}, not {_v(expected)} as compared: not moving it to "
            f"v{version} (someone else promoted in between; compare again)"
        )
    client.set_registered_model_alias(name, CHAMPION, version)
    _tag_promotion(client, name, version, current, by, reason, now)
    return current


def _tag_promotion(
    client: MlflowClient,
    name: str,
    version: str,
    previous: str | None,
    by: str,
    reason: str,
    now: float | None,
) -> None:
    stamp = time.time() if now is None else now
    for tag, value in (
        (TAG_PROMOTED_AT, f"{stamp:.3f}"),
        (TAG_PROMOTED_BY, by),
        (TAG_PROMOTED_REASON, reason[:4000]),
        (TAG_PROMOTED_FROM, previous or "none"),
    ):
        client.set_model_version_tag(name, version, tag, value)


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
    raw = tags.get(MODEL_TAG_ANNOUNCED_AT) or "0"
    at = _float(raw)
    if at is None or not math.isfinite(at):
        # A hand-edited date (e.g. ISO 8601) must not stop announcements and the trigger
        # for ever: treated as never announced, so the next announcement rewrites it.
        log.warning(
            "registered model %s: tag %s=%r is not epoch seconds; treated as not announced",
            name,
            MODEL_TAG_ANNOUNCED_AT,
            raw,
        )
        return None
    return Announcement(tags[MODEL_TAG_ANNOUNCED], at, tags.get(MODEL_TAG_ANNOUNCED_RUN, ""))


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
        # The gate and `recflow promote` keep `best` themselves; a move seen here did not.
        settle_best(client, name, None if announced is None else announced.version)
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


# -- the `best` alias ---------------------------------------------------------------------

TAG_GATE_METRIC = "recflow.gate.metric"


def set_best(client: MlflowClient, name: str, version: str, why: str) -> None:
    """Point ``best`` at ``version`` and remember it (to tell a lost alias from none)."""
    client.set_registered_model_alias(name, BEST, str(version))
    client.set_registered_model_tag(name, MODEL_TAG_BEST, str(version))
    log.info("%s: best → v%s (%s)", name, version, why)


def best_missing(client: MlflowClient, name: str, champion: str) -> str:
    """Why ``best`` is absent (logged: a warning when it disappeared)."""
    tags = client.get_registered_model(name).tags or {}
    lost = tags.get(MODEL_TAG_BEST)
    if lost:
        log.warning(
            "%s: the best alias (last set to v%s) is gone — MLflow drops the aliases of a"
            " deleted version; the gate's bar falls back to the champion v%s",
            name,
            lost,
            champion,
        )
        return f"best v{lost} disappeared"
    log.info("%s: no best alias (a registry from before it): migrated", name)
    return "migration: no best alias yet"


def ensure_best(client: MlflowClient, name: str) -> Any | None:
    """The ``best`` version, set to the champion first when it is absent (None: neither).

    Called before gating: a registry from before the alias, or one whose ``best``
    version was deleted, would otherwise hold a new version to the champion alone.
    """
    best = alias_version(client, name, BEST)
    if best is not None:
        return best
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return None
    set_best(client, name, str(champion.version), best_missing(client, name, champion.version))
    return champion


def recorded_metric(version: Any) -> float | None:
    """A version's NDCG on its own test slice, from its tags (None: not recorded)."""
    tags = version.tags or {}
    keys = [TAG_GATE_METRIC, *sorted(k for k in tags if k.startswith("test_ndcg_at_"))]
    for key in keys:
        value = _float(tags.get(key))
        if value is not None and math.isfinite(value):
            return value
    return None


def _compare(a: Any, b: Any) -> tuple[float, float] | None:
    """(a's, b's) NDCG, on one test slice when either's gate re-scored the other, else
    each on its own test slice; None when either is not recorded."""
    for x, y, flip in ((a, b, False), (b, a, True)):
        tags = x.tags or {}
        for role in ("champion", "best"):
            if tags.get(f"recflow.gate.{role}_version") == str(y.version):
                mx = _float(tags.get(TAG_GATE_METRIC))
                my = _float(tags.get(f"recflow.gate.{role}_ndcg"))
                if mx is not None and my is not None and math.isfinite(mx + my):
                    return (my, mx) if flip else (mx, my)
    ma, mb = recorded_metric(a), recorded_metric(b)
    return None if ma is None or mb is None else (ma, mb)


def settle_best(client: MlflowClient, name: str, previous: str | None = None) -> str | None:
    """After the champion moved outside the gate (``recflow promote``/``rollback-model``,
    a reviewer in the UI): ``best`` becomes the better of the champion and the incumbents
    (``best``, the ``previous`` champion) by their recorded test metric. Returns it.

    An incumbent without a recorded metric keeps ``best``; an absent ``best`` starts
    from the champion (logged, a warning when it disappeared), so a reviewer's move to a
    worse version never lowers the bar the next version is held to.
    """
    from mlflow.exceptions import MlflowException

    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return None
    current = alias_version(client, name, BEST)
    why = "" if current is not None else best_missing(client, name, champion.version)
    chosen = current or champion
    candidates = [champion]
    if previous and previous != "none":
        try:
            candidates.append(client.get_model_version(name, str(previous)))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
    for candidate in candidates:
        if str(candidate.version) == str(chosen.version):
            continue
        pair = _compare(candidate, chosen)
        if pair is not None and pair[0] > pair[1]:
            chosen = candidate
            why = "better recorded test metric"
    if current is None or str(current.version) != str(chosen.version):
        set_best(client, name, str(chosen.version), why or "champion moved")
    return str(chosen.version)
