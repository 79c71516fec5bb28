"""Monitor DAG: drift of the lake against the champion's training window, daily and on gold.

Runs when gold changes (the ingest DAG's Asset) or daily at 00:00 UTC, whichever comes
first. `feedback` loads the service's answer log and recomputes what users did with the
recommendations (`monitor/rec_performance`) and the control group's lift (`monitor/lift`)
for the days the attribution window still reaches. `compute_drift` follows it, whatever
it did (the inputs' drift does not need it; the champion's CTR against its trailing days
reads its table), writes one row per metric x statistic to the `monitor/drift` Delta
table and an HTML report (a rerun replaces the run's rows); `drift_alert` short-circuits
unless a metric is at alert level; `announce_drift` then emits the drift Asset the train
DAG is scheduled on, and the training trigger reads the table to decide.
`export_metrics` runs last, whatever the others did, and pushes the batch gauges (drift
values, CTR by source, freshness) to the Pushgateway when one is configured. Each task is
one call into `jobs.monitor` (or none).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, task

from jobs.contracts import ASSET_DRIFT, ASSET_GOLD_INTERACTIONS

GOLD_INTERACTIONS = Asset(name=ASSET_GOLD_INTERACTIONS)
DRIFT = Asset(name=ASSET_DRIFT)

with DAG(
    dag_id="monitor",
    description="Drift (PSI, KS), recommendation performance and lift; emits the drift Asset.",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 0 * * *", timezone="UTC"), assets=[GOLD_INTERACTIONS]
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "recflow",
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=1),
    },
    tags=["recflow", "monitor"],
) as dag:
    # all_done: a failed feedback costs the CTR row (its table is stale), not the drift of
    # the inputs.
    @task(trigger_rule="all_done")
    def compute_drift(run_id=None, dag_run=None) -> dict:
        from jobs.monitor.steps import drift_step

        # Asset-triggered runs have no logical date: their run_after is as fixed (a
        # retry or a clear of this run reads the same window).
        end = dag_run.logical_date or dag_run.run_after
        return drift_step(f"monitor/{run_id}", end.isoformat())

    @task.short_circuit
    def drift_alert(result: dict) -> bool:
        return bool(result["alerts"])

    @task(outlets=[DRIFT])
    def announce_drift(result: dict) -> dict:
        return {"run_id": result["run_id"], "alerts": result["alerts"]}

    @task
    def feedback(dag_run=None) -> dict:
        from jobs.monitor.steps import feedback_step

        end = dag_run.logical_date or dag_run.run_after
        return feedback_step(end.isoformat())

    # all_done: the gauges of whichever branch finished are worth pushing even when the
    # other failed. `checked` (no work, never sent to a worker) then fails the run when any
    # of them did: Airflow judges a run by its leaves, and export_metrics succeeds.
    @task(trigger_rule="all_done")
    def export_metrics() -> dict:
        from jobs.monitor.steps import export_step

        return export_step()

    attributed = feedback()
    drifted = compute_drift()
    attributed >> drifted
    drift_alert(drifted) >> announce_drift(drifted)
    branches = [drifted, attributed]
    exported = export_metrics()
    branches >> exported
    [*branches, exported] >> EmptyOperator(task_id="checked")
