"""Maintenance, once a day: enforce retention, then OPTIMIZE and VACUUM the lake.

Two tasks, each one call into the package. `enforce_retention` (`jobs.privacy.retention`)
deletes what each store holds past its `RECFLOW_RETENTION_*` limit, counted back from the
run's data interval end (the README's "Retention" table). `optimize_and_vacuum`
(`jobs.ingest.steps`) runs after it, even when retention failed: VACUUM keeps
`RECFLOW_VACUUM_RETENTION_HOURS` (at least Delta's 168 h) of removed files, which gold's
change feed and time travel to pinned versions need, then removes the files of the days
retention deleted; Delta's retention safety check stays on.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

with DAG(
    dag_id="maintenance",
    description="Enforce retention, then OPTIMIZE and VACUUM the lake's Delta tables.",
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
    def enforce_retention(data_interval_end=None) -> dict:
        from jobs.privacy.retention import retention_step

        return retention_step(now=data_interval_end.isoformat() if data_interval_end else None)

    # all_done: compaction and VACUUM are due whether or not retention got through.
    @task(trigger_rule="all_done")
    def optimize_and_vacuum() -> dict:
        from jobs.ingest.steps import maintain_step

        return maintain_step()

    enforce_retention() >> optimize_and_vacuum()
