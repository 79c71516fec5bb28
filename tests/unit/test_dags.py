"""DAG integrity: every DAG file imports fast and cleanly, with retries and owners set."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), safe_mode=False)


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {
        "ingest",
        "train",
        "publish",
        "features",
        "maintenance",
        "champion_watch",
        "privacy",
        "monitor",
    }


def test_ingest_shape(dagbag) -> None:
    dag = dagbag.dags["ingest"]
    assert set(dag.task_ids) == {
        "load_bronze",
        "upsert_catalog",
        "refine_silver",
        "reload_late",
        "update_gold",
        "record_audit",
        "push_ingest_metrics",
    }
    assert dag.get_task("push_ingest_metrics").upstream_task_ids == {"record_audit"}
    assert dag.catchup is True
    assert dag.get_task("reload_late").upstream_task_ids == {"refine_silver"}
    assert dag.get_task("update_gold").upstream_task_ids == {"reload_late"}
    assert dag.get_task("refine_silver").upstream_task_ids == {"load_bronze", "upsert_catalog"}
    for t in dag.tasks:
        assert t.owner == "recflow" and t.retries >= 1 and t.execution_timeout
    outlets = {a.name for t in dag.tasks for a in t.outlets}
    assert outlets == {"recflow_silver_events", "recflow_gold_interactions"}


def test_train_shape(dagbag) -> None:
    dag = dagbag.dags["train"]
    assert set(dag.task_ids) == {
        "should_train",
        "train_model",
        "champion_changed",
        "announce_champion",
    }
    assert dag.get_task("train_model").upstream_task_ids == {"should_train"}
    assert dag.get_task("announce_champion").upstream_task_ids == {
        "champion_changed",
        "train_model",
    }
    assert dag.catchup is False and dag.max_active_runs == 1
    for t in dag.tasks:
        assert t.owner == "recflow" and t.retries >= 1 and t.execution_timeout
    # Scheduled on gold (the ingest DAG) OR drift (the monitor DAG); emits the one publish
    # follows.
    ingest_outlets = {a.name for t in dagbag.dags["ingest"].tasks for a in t.outlets}
    monitor_outlets = {a.name for t in dagbag.dags["monitor"].tasks for a in t.outlets}
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"
    assert {a.name for a in condition.objects} == {"recflow_gold_interactions", "recflow_drift"}
    assert {a.name for a in condition.objects} <= ingest_outlets | monitor_outlets
    assert {a.name for a in dag.get_task("announce_champion").outlets} == {"recflow_champion"}


def test_publish_shape(dagbag) -> None:
    dag = dagbag.dags["publish"]
    chain = ["score", "upload", "verify", "flip"]
    assert set(dag.task_ids) == set(chain) | {"invalidate", "prune", "build_bento"}
    for before, after in itertools.pairwise(chain):
        assert dag.get_task(after).upstream_task_ids == {before}
    assert dag.get_task("invalidate").upstream_task_ids == {"flip"}
    assert dag.get_task("prune").upstream_task_ids == {"flip"}
    assert dag.get_task("build_bento").upstream_task_ids == {"flip"}
    for t in dag.tasks:
        assert t.owner == "recflow" and t.retries >= 1 and t.execution_timeout
    # Follows the Asset the train DAG emits when the champion changes.
    train_outlets = {a.name for t in dagbag.dags["train"].tasks for a in t.outlets}
    assert {a.name for a in dag.timetable.asset_condition.objects} == train_outlets


def test_champion_watch_shape(dagbag) -> None:
    """Publishing follows the alias whoever moves it: a timed watcher emits the very
    Asset the train DAG emits (and publish is scheduled on)."""
    from datetime import timedelta

    dag = dagbag.dags["champion_watch"]
    assert dag.task_ids == ["announce_champion"]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.timetable.interval <= timedelta(minutes=15)
    # Airflow 3 pauses new DAGs: a paused watcher never publishes a reviewer's choice.
    assert dag.is_paused_upon_creation is False
    for t in dag.tasks:
        assert t.owner == "recflow" and t.retries >= 1 and t.execution_timeout
    emitted = {a.name for a in dag.get_task("announce_champion").outlets}
    train_emits = {a.name for a in dagbag.dags["train"].get_task("announce_champion").outlets}
    publish_on = {a.name for a in dagbag.dags["publish"].timetable.asset_condition.objects}
    assert emitted == train_emits == publish_on == {"recflow_champion"}


def test_monitor_shape(dagbag) -> None:
    dag = dagbag.dags["monitor"]
    assert set(dag.task_ids) >= {"compute_drift", "drift_alert", "announce_drift"}
    assert dag.get_task("drift_alert").upstream_task_ids == {"compute_drift"}
    assert dag.get_task("announce_drift").upstream_task_ids == {"compute_drift", "drift_alert"}
    # Feedback beside drift; the export runs after both whatever they did, and a leaf with
    # the default rule fails the run when any of them failed (Airflow judges by leaves).
    export = dag.get_task("export_metrics")
    assert export.upstream_task_ids == {"compute_drift", "feedback"}
    assert export.trigger_rule == "all_done"
    checked = dag.get_task("checked")
    assert checked.upstream_task_ids == {"compute_drift", "feedback", "export_metrics"}
    assert checked.trigger_rule == "all_success" and not checked.downstream_task_ids
    assert dag.catchup is False and dag.max_active_runs == 1
    for t in dag.tasks:
        assert t.owner == "recflow" and t.retries >= 1 and t.execution_timeout
    # Gold OR daily: an Asset condition and a cron beside it.
    timetable = dag.timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert {a.name for a in timetable.asset_condition.objects} == {"recflow_gold_interactions"}
    assert timetable.timetable.expression == "0 0 * * *"
    assert {a.name for a in dag.get_task("announce_drift").outlets} == {"recflow_drift"}


def test_features_shape(dagbag) -> None:
    dag = dagbag.dags["features"]
    assert set(dag.task_ids) == {"apply_definitions", "materialize_features"}
    assert dag.get_task("materialize_features").upstream_task_ids == {"apply_definitions"}
    for t in dag.tasks:
        assert t.owner == "recflow" and t.retries >= 1 and t.execution_timeout
    # Follows gold, like training: features change when gold does.
    assert {a.name for a in dag.timetable.asset_condition.objects} == {"recflow_gold_interactions"}


def test_maintenance_shape(dagbag) -> None:
    dag = dagbag.dags["maintenance"]
    assert set(dag.task_ids) == {"enforce_retention", "optimize_and_vacuum"}
    vacuum = dag.get_task("optimize_and_vacuum")
    # Retention first (VACUUM then removes the files of the days it deleted), and
    # compaction runs even when retention failed.
    assert vacuum.upstream_task_ids == {"enforce_retention"}
    assert vacuum.trigger_rule == "all_done"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md and "VACUUM" in dag.doc_md and "retention" in dag.doc_md
    for t in dag.tasks:
        assert t.owner == "recflow" and t.retries >= 1 and t.execution_timeout
        assert not t.outlets  # maintenance changes no data: nothing downstream follows it


def test_privacy_shape(dagbag) -> None:
    dag = dagbag.dags["privacy"]
    assert set(dag.task_ids) == {"erase", "load_access_log"}
    # The access log loads whether or not an erasure failed (it is not about those people).
    assert dag.get_task("load_access_log").trigger_rule == "all_done"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md and "VACUUM" in dag.doc_md and "deny list" in dag.doc_md
    for t in dag.tasks:
        assert t.owner == "recflow" and t.retries >= 1 and t.execution_timeout


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_file_has_no_heavy_top_level_imports(path: Path) -> None:
    """Parsing a DAG file must not import Spark, pandas, MLflow or the ETL modules."""
    code = (
        "import sys, time, runpy; import airflow.sdk; t = time.perf_counter();"
        f" runpy.run_path({str(path)!r}); took = time.perf_counter() - t;"
        " heavy = [m for m in ('pyspark', 'pandas', 'mlflow',"
        " 'jobs.ingest.silver', 'jobs.ingest.gold',"
        " 'great_expectations') if m in sys.modules]; print(took, heavy)"
    )
    out = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    took, heavy = out.split(" ", 1)
    assert heavy == "[]"
    assert float(took) < 2.0
