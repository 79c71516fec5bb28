"""Who is champion and since when: the trigger's age rule, the champion watcher, and a
reviewer's `recflow promote` / `recflow rollback-model`, on a real SQLite registry."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from support import clustered_model
from typer.testing import CliRunner

from jobs.config import Settings, load_settings
from jobs.model.promotion import SEEN_IN_REGISTRY, announce, promote
from jobs.model.registry import BEST, CHAMPION, alias_version, setup
from jobs.train.trigger import Facts, decide_from, registry_facts

DAY = 86_400.0


@pytest.fixture
def registry(tmp_path: Path) -> tuple[Settings, Any]:
    settings = load_settings(data_root=tmp_path / "var")
    client = setup(settings)
    client.create_registered_model(settings.model_name)
    return settings, client


def _version(client: Any, name: str) -> str:
    return str(client.create_model_version(name, "file:///nowhere").version)


def test_a_reviewers_rollback_in_the_ui_is_not_too_old(registry: tuple[Settings, Any]) -> None:
    """v1 then v2 promoted by the gate; a week later a reviewer points champion back at
    v1 in the UI. Age by creation (the old rule) said "retrain and replace it"."""
    settings, client = registry
    name = settings.model_name
    v1, v2 = _version(client, name), _version(client, name)
    t0 = time.time()
    promote(client, name, v1, None, "gate", "first", now=t0)
    announce(client, name, "train/1", now=t0)
    promote(client, name, v2, v1, "gate", "better", now=t0 + DAY)
    announce(client, name, "train/2", now=t0 + DAY)
    client.set_registered_model_alias(name, CHAMPION, v1)  # what the MLflow UI does
    later = t0 + 8 * DAY  # v1 is 8 days old by creation and by its first promotion

    # Before the watcher has seen it: moved outside recflow, so new as far as we know.
    facts = registry_facts(client, settings, gold_version=9, now=later)
    assert facts.champion_version == v1 and facts.champion_since == later
    assert decide_from(facts, settings).train is False

    # The watcher announces it and dates it on the version.
    announced = announce(client, name, "champion_watch/a", now=later)
    assert announced and announced["model_version"] == v1 and announced["previous"] == v2
    tags = client.get_model_version(name, v1).tags
    assert float(tags["recflow.promoted_at"]) == pytest.approx(later, abs=0.01)
    assert tags["recflow.promoted_by"] == SEEN_IN_REGISTRY
    soon = registry_facts(client, settings, gold_version=9, now=later + 3600)
    assert soon.champion_since == pytest.approx(later, abs=0.01)
    decision = decide_from(soon, settings)
    assert decision.train is False and decision.model_age_hours == pytest.approx(1.0)
    # Its own week later, it is stale again.
    stale = registry_facts(client, settings, 9, now=later + 8 * DAY)
    assert decide_from(stale, settings).train is True


def _facts(**kw: Any) -> Facts:
    """Facts of a registry whose newest training finished, unless told otherwise."""
    base = {"gold_version": 9, "now": 100 * DAY, "trained_version": 8, "new_interactions": 10}
    kw.setdefault("last_finished_at", kw.get("last_attempt_at"))
    return Facts(**{**base, "champion_version": "3", "champion_since": 80 * DAY, **kw})


def test_a_stale_champion_gets_one_retraining_then_waits_for_new_data() -> None:
    settings = load_settings(max_model_age_hours=168, retrain_threshold=1000)
    never = decide_from(_facts(last_attempt_at=85 * DAY), settings)  # before it went stale
    assert never.train is True and "promoted 480 h ago" in never.reason
    # A training started after it went stale (87 days) and was rejected (or awaits a
    # reviewer): the old rule retrained on every gold update for ever.
    rejected = decide_from(_facts(last_attempt_at=95 * DAY), settings)
    assert rejected.train is False and "waiting for new data" in rejected.reason
    grown = decide_from(_facts(last_attempt_at=95 * DAY, new_interactions=1000), settings)
    assert grown.train is True and "threshold" in grown.reason


def _drift(
    window_end: float,
    run_id: str = "monitor/d1",
    alert: bool = True,
    model_version: str = "3",
    episode_start: float | None = None,
    computed_after: float = 600,
) -> dict[str, Any]:
    """The newest drift run, as jobs.monitor.monitor.newest_drift gives it; each run is
    computed ``computed_after`` seconds (wall clock) after its window ends (data time)."""
    metrics = ["category_mix:psi=0.4"] if alert else []
    episode = episode_start or window_end
    return {
        "run_id": run_id,
        "computed_at": window_end + computed_after,
        "window_end": window_end,
        "model_version": model_version,
        "alert": alert,
        "metrics": metrics,
        "episode_start": episode if alert else None,
        "episode_computed_at": episode + computed_after if alert else None,
        "reason": f"drift run {run_id} alerts on {metrics[0]}" if alert else "no alert",
    }


def test_no_training_within_the_minimum_interval() -> None:
    settings = load_settings(min_train_interval_hours=2)
    alert = _drift(window_end=100 * DAY - 600)
    soon = decide_from(_facts(last_attempt_at=100 * DAY - 3600, drift=alert), settings)
    assert soon.train is False and "min interval 2 h" in soon.reason
    later = decide_from(_facts(last_attempt_at=100 * DAY - 3 * 3600, drift=alert), settings)
    assert later.train is True and "category_mix:psi=0.4" in later.reason
    assert later.drift == alert


def test_a_drift_alert_trains_once() -> None:
    """An alert counts until a training starts after its window's end: no flag to clear,
    so workers that share nothing but the lake agree on it."""
    settings = load_settings(min_train_interval_hours=0, retrain_threshold=1000)
    alert = _drift(window_end=99 * DAY)
    fresh = decide_from(_facts(last_attempt_at=98 * DAY, drift=alert), settings)
    assert fresh.train is True and fresh.reason.startswith("drift: drift run monitor/d1")
    # The training that alert caused started after it: the same alert no longer trains.
    answered = decide_from(_facts(last_attempt_at=99 * DAY + 3600, drift=alert), settings)
    assert answered.train is False and answered.drift is None
    assert "threshold" in answered.reason and "not promoted" in answered.reason
    # Never trained before: any alert is unanswered.
    first = decide_from(_facts(last_attempt_at=None, drift=alert), settings)
    assert first.train is True and first.drift == alert


def test_a_rejected_challenger_gets_no_second_drift_training() -> None:
    """The same champion keeps alerting the next day (the gate rejected the challenger):
    one retraining per episode, as for a stale champion; new data or a new champion
    trains again. The old rule (an alert newer than the last start) looped daily."""
    settings = load_settings(min_train_interval_hours=0, retrain_threshold=1000)
    # Episode began with the run ending day 98; a training started day 98 + 1 h and
    # was rejected (champion still v3); the run ending day 99 alerts again.
    next_day = _drift(window_end=99 * DAY, run_id="monitor/d2", episode_start=98 * DAY)
    again = decide_from(_facts(last_attempt_at=98 * DAY + 3600, drift=next_day), settings)
    assert again.train is False and again.drift is None, again.reason
    assert "waiting for new data or a different champion" in again.reason
    grown = decide_from(
        _facts(last_attempt_at=98 * DAY + 3600, drift=next_day, new_interactions=1000), settings
    )
    assert grown.train is True and "threshold" in grown.reason
    # A new episode (the drift resolved in between, so episode_start is the new run's):
    # trains again.
    recurred = _drift(window_end=99 * DAY, run_id="monitor/d3")
    assert decide_from(_facts(last_attempt_at=98 * DAY + 3600, drift=recurred), settings).train


def test_a_crashed_training_does_not_answer_the_drift() -> None:
    """The drift's training died (out of memory, a lost executor): nothing was decided, so
    the alert still trains once the minimum interval has passed; a finished one answers."""
    settings = load_settings(min_train_interval_hours=2, retrain_threshold=1000)
    alert = _drift(window_end=99 * DAY)
    crashed = {"last_attempt_at": 99 * DAY + 3600, "last_finished_at": 98 * DAY}
    assert decide_from(_facts(**crashed, drift=alert), settings).train is True
    soon = decide_from(
        _facts(**{**crashed, "last_attempt_at": 100 * DAY - 600}, drift=alert), settings
    )
    assert soon.train is False and "min interval" in soon.reason
    finished = _facts(last_attempt_at=99 * DAY + 3600, drift=alert)
    assert decide_from(finished, settings).train is False
    # Three starts for the episode and none finished: a person's turn, not an hourly retry.
    stuck = decide_from(_facts(**crashed, drift=alert, drift_attempts=3), settings)
    assert stuck.train is False and "3 trainings started" in stuck.reason


def test_resolved_drift_does_not_train() -> None:
    """The newest run has no alert: an older alert is resolved and must not train (the old
    trigger read the newest run WITH an alert, however old)."""
    settings = load_settings(min_train_interval_hours=0, retrain_threshold=1000)
    ok = _drift(window_end=99 * DAY, run_id="monitor/d2", alert=False)
    decision = decide_from(_facts(last_attempt_at=90 * DAY, drift=ok), settings)
    assert decision.train is False and decision.drift is None
    assert "drift" not in decision.reason


def test_an_alert_about_a_replaced_champion_does_not_train() -> None:
    """The run read v2; v3 has been champion since: the alert says nothing about v3."""
    settings = load_settings(min_train_interval_hours=0, retrain_threshold=1000)
    old = _drift(window_end=99 * DAY, model_version="2")
    decision = decide_from(_facts(last_attempt_at=90 * DAY, drift=old), settings)
    assert decision.train is False and decision.drift is None
    assert "not the current champion v3" in decision.reason


def test_an_unreadable_drift_table_is_reported_and_is_not_drift() -> None:
    settings = load_settings(min_train_interval_hours=0, retrain_threshold=1000)
    problem = "drift table /lake/monitor/drift unreadable (AnalysisException: boom); ignored"
    facts = _facts(drift=None, drift_problem=problem, last_attempt_at=99 * DAY)
    decision = decide_from(facts, settings)
    assert decision.train is False and decision.drift is None
    assert decision.reason.endswith(f"; {problem}") and decision.drift_problem == problem


def test_the_watcher_announces_a_reviewers_choice_once(registry: tuple[Settings, Any]) -> None:
    from jobs.train.steps import announce_step

    settings, client = registry
    name = settings.model_name
    assert announce_step("champion_watch/0", settings) is None  # no champion yet
    v1, v2 = _version(client, name), _version(client, name)
    promote(client, name, v1, None, "gate", "first")
    assert announce_step("train/1", settings)["model_version"] == v1  # the train DAG's
    assert announce_step("champion_watch/1", settings) is None  # already announced
    client.set_registered_model_alias(name, CHAMPION, v2)  # a reviewer, in the UI
    first = announce_step("champion_watch/2", settings)
    assert first and first["model_version"] == v2 and first["previous"] == v1
    # A retry of the run that recorded it announces again (its Asset event may be lost);
    # any other run does not.
    assert announce_step("champion_watch/2", settings)["model_version"] == v2
    assert announce_step("champion_watch/3", settings) is None
    assert announce_step("train/9", settings) is None


def test_recflow_promote_and_rollback_model(
    registry: tuple[Settings, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from jobs.cli import app
    from jobs.model.registry import log_model
    from jobs.train.steps import announce_step

    settings, client = registry
    name = settings.model_name
    versions = []
    for seed in (1, 2):
        with mlflow.start_run():
            info = log_model(clustered_model(seed=seed), tmp_path / f"w{seed}", name)
        versions.append(str(info.registered_model_version))
    v1, v2 = versions
    promote(client, name, v1, None, "gate", "first")
    announce_step("train/1", settings)
    monkeypatch.setenv("RECFLOW_DATA_ROOT", str(settings.data_root))
    runner = CliRunner()

    done = runner.invoke(app, ["promote", v2, "--reason", "better on new users", "--by", "ana"])
    assert done.exit_code == 0, done.output
    assert f"v{v1} → v{v2}" in done.output and "champion_watch" in done.output
    tags = client.get_model_version(name, v2).tags
    assert tags["recflow.promoted_by"] == "ana"
    assert tags["recflow.promoted_reason"] == "better on new users"
    assert tags["recflow.promoted_from"] == v1
    assert announce_step("champion_watch/1", settings)["model_version"] == v2

    back = runner.invoke(app, ["rollback-model", "--reason", "CTR dropped", "--by", "ana"])
    assert back.exit_code == 0, back.output
    assert str(alias_version(client, name, CHAMPION).version) == v1
    assert client.get_model_version(name, v1).tags["recflow.promoted_reason"] == "CTR dropped"
    assert announce_step("champion_watch/2", settings)["model_version"] == v1

    missing = runner.invoke(app, ["promote", "99"])
    assert missing.exit_code == 1 and "no version 99" in missing.output


def test_an_unreadable_announcement_date_is_not_announced_not_a_crash(
    registry: tuple[Settings, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-edited recflow.announced_at (ISO 8601) made announce() and the trigger's
    registry_facts() raise for ever."""
    from jobs.model.promotion import MODEL_TAG_ANNOUNCED, MODEL_TAG_ANNOUNCED_AT

    settings, client = registry
    name = settings.model_name
    v1 = _version(client, name)
    promote(client, name, v1, None, "gate", "first")
    client.set_registered_model_tag(name, MODEL_TAG_ANNOUNCED, v1)
    client.set_registered_model_tag(name, MODEL_TAG_ANNOUNCED_AT, "2026-01-01T00:00")
    with caplog.at_level(logging.WARNING, logger="jobs.model.promotion"):
        facts = registry_facts(client, settings, gold_version=9)
    assert facts.champion_version == v1 and "not epoch seconds" in caplog.text
    found = announce(client, name, "champion_watch/1")  # treated as not announced
    assert found and found["model_version"] == v1 and found["previous"] is None
    tags = client.get_registered_model(name).tags
    assert float(tags[MODEL_TAG_ANNOUNCED_AT]) > 0  # rewritten readable
    assert announce(client, name, "champion_watch/2") is None


def _scored(client: Any, name: str, ndcg: float) -> str:
    version = _version(client, name)
    client.set_model_version_tag(name, version, "test_ndcg_at_10", f"{ndcg:.5f}")
    return version


def test_a_reviewers_move_in_the_ui_keeps_best_the_better(
    registry: tuple[Settings, Any],
) -> None:
    """Review mode: the gate never moves champion nor best; a reviewer moves champion in
    the UI. The watcher sees it and keeps `best` the better by recorded test metric."""
    settings, client = registry
    name = settings.model_name
    v1, v2, v3 = (
        _scored(client, name, 0.40),
        _scored(client, name, 0.38),
        _scored(client, name, 0.5),
    )
    promote(client, name, v1, None, "gate", "first")  # a registry from before `best`
    announce(client, name, "train/1")
    client.set_registered_model_alias(name, CHAMPION, v2)  # a worse one, in the UI
    announce(client, name, "champion_watch/1")
    assert str(alias_version(client, name, BEST).version) == v1
    client.set_registered_model_alias(name, CHAMPION, v3)  # a better one
    announce(client, name, "champion_watch/2")
    assert str(alias_version(client, name, BEST).version) == v3


def test_recflow_promote_of_a_worse_version_keeps_the_bar(
    registry: tuple[Settings, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from jobs.cli import app
    from jobs.model.registry import log_model

    settings, client = registry
    name = settings.model_name
    versions = []
    for seed, ndcg in ((1, 0.40), (2, 0.30)):
        with mlflow.start_run():
            tags = {"test_ndcg_at_10": f"{ndcg:.5f}"}
            info = log_model(clustered_model(seed=seed), tmp_path / f"w{seed}", name, tags=tags)
        versions.append(str(info.registered_model_version))
    v1, v2 = versions
    promote(client, name, v1, None, "gate", "first")  # no `best` yet
    monkeypatch.setenv("RECFLOW_DATA_ROOT", str(settings.data_root))
    done = CliRunner().invoke(app, ["promote", v2, "--reason", "try it", "--by", "ana"])
    assert done.exit_code == 0, done.output
    assert str(alias_version(client, name, CHAMPION).version) == v2
    assert str(alias_version(client, name, BEST).version) == v1 and f"v{v1}" in done.output
    back = CliRunner().invoke(app, ["rollback-model", "--reason", "worse", "--by", "ana"])
    assert back.exit_code == 0, back.output
    assert str(alias_version(client, name, BEST).version) == v1


def test_a_backfilled_or_simulated_drift_is_judged_by_when_it_was_computed() -> None:
    """The window judged may lie long in the past (a backfill, a simulated shop): a
    training that started after that window's end but before the alert was computed did
    not answer it. Comparing training starts with window ends would never train."""
    settings = load_settings(min_train_interval_hours=0, retrain_threshold=1000)
    past = _drift(window_end=10 * DAY, computed_after=89 * DAY)  # computed on day 99
    before = decide_from(_facts(last_attempt_at=50 * DAY, drift=past), settings)
    assert before.train is True, before.reason
    after = decide_from(_facts(last_attempt_at=99 * DAY + 3600, drift=past), settings)
    assert after.train is False, after.reason
