"""Ingest DAG: one run per data interval, landing → bronze → silver → gold → audit.

Orchestration only: each task is one call into ``jobs.ingest`` and passes small dicts via
XCom. The schedule and first interval come from recflow's settings (the one thing read at
parse time); everything else is read when a task runs.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from jobs.config import get_settings
from jobs.contracts import ASSET_GOLD_INTERACTIONS, ASSET_SILVER_EVENTS

SILVER_EVENTS = Asset(name=ASSET_SILVER_EVENTS)
GOLD_INTERACTIONS = Asset(name=ASSET_GOLD_INTERACTIONS)

_settings = get_settings()

with DAG(
    dag_id="ingest",
    description="Landing files of one interval into the Delta lake (bronze, silver, gold).",
    schedule=CronDataIntervalTimetable(_settings.ingest_schedule, timezone="UTC"),
    start_date=pendulum.parse(_settings.ingest_start),
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
        from jobs.ingest import bronze_step

        return bronze_step(data_interval_start.isoformat(), data_interval_end.isoformat())

    @task
    def upsert_catalog() -> dict:
        from jobs.ingest import catalog_step

        return catalog_step()

    @task(outlets=[SILVER_EVENTS])
    def refine_silver(bronze: dict, data_interval_start=None, data_interval_end=None) -> dict:
        from jobs.ingest import silver_step

        return silver_step(
            data_interval_start.isoformat(), data_interval_end.isoformat(), skip=bronze["skip"]
        )

    @task(outlets=[GOLD_INTERACTIONS])
    def update_gold() -> dict:
        from jobs.ingest import gold_step

        return gold_step()

    @task
    def record_audit(
        bronze: dict, silver: dict, gold: dict, data_interval_start=None, data_interval_end=None
    ) -> dict:
        from jobs.ingest import audit_step

        return audit_step(
            data_interval_start.isoformat(), data_interval_end.isoformat(), bronze, silver, gold
        )

    bronze = load_bronze()
    catalog = upsert_catalog()
    silver = refine_silver(bronze)
    catalog >> silver
    gold = update_gold()
    silver >> gold
    record_audit(bronze, silver, gold)
