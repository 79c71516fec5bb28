"""Ingest: one run per data interval, landing → bronze → silver → gold → audit.

Each task is one call into `jobs.ingest.steps` and passes small dicts via XCom; the
lake is the only place data moves through. The last task pushes the run's freshness and
quarantine figures to the Pushgateway (`jobs.monitor.export`, its own group). The
schedule, first interval and optional end are the only settings read when the file is
parsed (`RECFLOW_INGEST_SCHEDULE`, `_START`, `_END`); everything else is read when a
task runs. Emits the silver and gold Assets that the `features` and `train` DAGs follow.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from jobs.config import ingest_schedule
from jobs.contracts import ASSET_GOLD_INTERACTIONS, ASSET_SILVER_EVENTS

SILVER_EVENTS = Asset(name=ASSET_SILVER_EVENTS)
GOLD_INTERACTIONS = Asset(name=ASSET_GOLD_INTERACTIONS)

_schedule = ingest_schedule()

with DAG(
    dag_id="ingest",
    description="Landing files of one interval into the Delta lake (bronze, silver, gold).",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable(_schedule.ingest_schedule, timezone="UTC"),
    start_date=pendulum.parse(_schedule.ingest_start),
    end_date=pendulum.parse(_schedule.ingest_end) if _schedule.ingest_end else None,
    catchup=True,
    max_active_runs=1,
    default_args={
        "owner": "recflow",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "execution_timeout": timedelta(minutes=30),
    },
    tags=["recflow", "lake"],
) as dag:

    @task
    def load_bronze(data_interval_start=None, data_interval_end=None) -> dict:
        from jobs.ingest.steps import bronze_step

        return bronze_step(data_interval_start.isoformat(), data_interval_end.isoformat())

    @task
    def upsert_catalog() -> dict:
        from jobs.ingest.steps import catalog_step

        return catalog_step()

    @task(outlets=[SILVER_EVENTS])
    def refine_silver(bronze: dict, data_interval_start=None, data_interval_end=None) -> dict:
        from jobs.ingest.steps import silver_step

        return silver_step(
            data_interval_start.isoformat(), data_interval_end.isoformat(), skip=bronze["skip"]
        )

    @task(outlets=[SILVER_EVENTS])
    def reload_late(data_interval_start=None, data_interval_end=None, run_id=None) -> dict:
        from jobs.ingest.steps import late_step

        return late_step(
            data_interval_start.isoformat(), data_interval_end.isoformat(), run_id=run_id
        )

    @task(outlets=[GOLD_INTERACTIONS])
    def update_gold() -> dict:
        from jobs.ingest.steps import gold_step

        return gold_step()

    @task
    def record_audit(
        bronze: dict,
        silver: dict,
        gold: dict,
        data_interval_start=None,
        data_interval_end=None,
        run_id=None,
    ) -> dict:
        from jobs.ingest.steps import audit_step

        # The DAG run's id keys the audit row: a retry of this task replaces it.
        return audit_step(
            data_interval_start.isoformat(),
            data_interval_end.isoformat(),
            bronze,
            silver,
            gold,
            run_id=run_id,
        )

    @task
    def push_ingest_metrics() -> dict:
        from jobs.monitor.steps import ingest_push_step

        # Hourly freshness and quarantine for the alerts; never fails the run (see there).
        return ingest_push_step()

    bronze = load_bronze()
    silver = refine_silver(bronze)
    upsert_catalog() >> silver
    gold = update_gold()
    silver >> reload_late() >> gold
    record_audit(bronze, silver, gold) >> push_ingest_metrics()
