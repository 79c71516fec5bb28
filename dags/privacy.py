"""Privacy: process erasure requests (daily, and on demand), and load the data access log.

`recflow forget-user ID…` records requests; this DAG erases each person from the lake,
Feast, every retained publish (with a CloudFront invalidation), every model artifact and
BentoML copy, after adding them to the service's deny list, then searches every store for
them and fails if anything remains (the requests then stay pending and the retry or the
next run takes them again). Trigger it from the UI (or `airflow dags trigger privacy`) to
erase now rather than at the next daily run. Rows deleted from Delta tables leave disk at
the maintenance DAG's VACUUM after `RECFLOW_VACUUM_RETENTION_HOURS`: README, "Erasure".
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

with DAG(
    dag_id="privacy",
    description="Erase people who asked (verified), and load the data access log.",
    doc_md=__doc__,
    schedule="15 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "recflow",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
    },
    tags=["recflow", "privacy"],
) as dag:

    @task
    def erase(run_id=None) -> dict:
        from jobs.privacy.steps import erase_step

        return erase_step(run_id=f"erasure-{run_id}" if run_id else None)

    @task(trigger_rule="all_done")
    def load_access_log() -> dict:
        from jobs.privacy.steps import access_log_step

        return access_log_step()

    erase() >> load_access_log()
