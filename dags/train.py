"""Train DAG: runs when gold changes, trains only when the trigger says so.

Scheduled on the gold Asset the ingest DAG emits or the drift Asset the monitor DAG emits.
`should_train` short-circuits the run when there is not enough new data (and no
unanswered drift alert in the drift table, no missing or stale model); the reason
is in its log and XCom. A new champion emits the champion Asset, which the publish DAG
follows; `champion_watch` emits the same Asset for a champion set anywhere else (and for
this DAG's, should `announce_champion` never run), and the two share one record of the
last announcement, so a version is announced once. `train_model` passes its run id as
the training key: a retried task reuses the version its first try registered. Each task
is one call into `jobs.train.steps`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, task

from jobs.contracts import ASSET_CHAMPION, ASSET_DRIFT, ASSET_GOLD_INTERACTIONS

GOLD_INTERACTIONS = Asset(name=ASSET_GOLD_INTERACTIONS)
CHAMPION = Asset(name=ASSET_CHAMPION)
DRIFT = Asset(name=ASSET_DRIFT)

with DAG(
    dag_id="train",
    description="Threshold-triggered Spark ALS training, tracked and gated in MLflow.",
    doc_md=__doc__,
    # Gold changed OR the monitor DAG saw drift at alert level (the trigger reads it).
    schedule=GOLD_INTERACTIONS | DRIFT,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "recflow",
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
    },
    tags=["recflow", "model"],
) as dag:

    @task.short_circuit
    def should_train() -> dict | bool:
        from jobs.train.steps import trigger_step

        decision = trigger_step()
        return decision if decision["train"] else False

    @task
    def train_model(decision: dict, run_id=None) -> dict:
        from jobs.train.steps import train_step

        return train_step(decision, training_key=f"train/{run_id}")

    @task.short_circuit
    def champion_changed(result: dict) -> bool:
        return bool(result["champion"])

    @task(outlets=[CHAMPION])
    def announce_champion(result: dict, run_id=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from jobs.train.steps import announce_step

        announced = announce_step(f"train/{run_id}")
        if announced is None:
            # champion_watch announced it first (or the alias moved on): no second event.
            raise AirflowSkipException("champion already announced")
        return announced

    trained = train_model(should_train())
    champion_changed(trained) >> announce_champion(trained)
