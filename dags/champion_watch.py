"""Champion watch: publishing follows the `champion` alias, whoever moves it.

The gate moves the alias in the train DAG, but a reviewer may move it in the MLflow UI
or with `recflow promote` / `recflow rollback-model`. Every few minutes this DAG reads
the alias and, when it differs from the last announced version, emits the champion Asset
(the one the train DAG emits, which schedules `publish`). The last announcement is kept
on the registered model's tags, so the train DAG and this one never announce a version
twice; a change made in the UI is dated here (the trigger's age rule counts from it).
The one task is one call into `jobs.train.steps`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, task

from jobs.contracts import ASSET_CHAMPION

CHAMPION = Asset(name=ASSET_CHAMPION)

with DAG(
    dag_id="champion_watch",
    description="Emits the champion Asset when the MLflow champion alias moves.",
    doc_md=__doc__,
    schedule=timedelta(minutes=5),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # Airflow 3 pauses a new DAG by default: a paused watcher would never publish a
    # reviewer's choice. The others run on Assets or are unpaused by the operator.
    is_paused_upon_creation=False,
    default_args={
        "owner": "recflow",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "execution_timeout": timedelta(minutes=5),
    },
    tags=["recflow", "model"],
) as dag:

    @task(outlets=[CHAMPION])
    def announce_champion(run_id=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from jobs.train.steps import announce_step

        announced = announce_step(f"champion_watch/{run_id}")
        if announced is None:
            # Skipped, not succeeded: a skipped task emits no Asset event.
            raise AirflowSkipException("champion unchanged since the last announcement")
        return announced

    announce_champion()
