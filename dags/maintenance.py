"""Maintenance: OPTIMIZE and VACUUM every Delta table of the lake, once a day.

One task, one call into `jobs.ingest.steps`. VACUUM keeps `RECFLOW_VACUUM_RETENTION_HOURS`
(at least Delta's 168 h) of removed files, which gold's change feed and time travel to
pinned versions need; Delta's retention safety check stays on.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

with DAG(
    dag_id="maintenance",
    description="OPTIMIZE and VACUUM the lake's Delta tables.",
    doc_md=__doc__,
    # Off the hour: ingest runs start at :00, and OPTIMIZE rewriting files under a
    # running MERGE makes that MERGE fail (and wait for its retry).
    schedule="30 3 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "recflow",
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=2),
    },
    tags=["recflow", "lake"],
) as dag:

    @task
    def optimize_and_vacuum() -> dict:
        from jobs.ingest.steps import maintain_step

        return maintain_step()

    optimize_and_vacuum()
