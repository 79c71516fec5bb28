"""Features: after gold changes, apply the Feast definitions and materialize online.

Scheduled on the gold Asset the ingest DAG emits. `materialize_features` exports the
lake as of the end of the data that triggered the run and materializes incrementally up
to it. Each task is one call into `jobs.features.steps`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, task

from jobs.contracts import ASSET_GOLD_INTERACTIONS

GOLD_INTERACTIONS = Asset(name=ASSET_GOLD_INTERACTIONS)


def _data_end(context: dict[str, Any]) -> datetime:
    """End of the data this run covers, from the run, never from the clock.

    An asset-triggered run has no data interval of its own: the end is that of the
    ingest runs whose gold updates triggered it. A manual or test run falls back to its
    own data interval, then to the instant it was scheduled for.
    """
    ends = [
        event.source_dag_run.data_interval_end
        for events in (context.get("triggering_asset_events") or {}).values()
        for event in events
        if event.source_dag_run is not None and event.source_dag_run.data_interval_end
    ]
    if ends:
        return max(ends)
    return context.get("data_interval_end") or context["dag_run"].run_after


with DAG(
    dag_id="features",
    description="Feast apply, then incremental materialization of the online features.",
    doc_md=__doc__,
    schedule=[GOLD_INTERACTIONS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "recflow",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "execution_timeout": timedelta(minutes=30),
    },
    tags=["recflow", "features"],
) as dag:

    @task
    def apply_definitions() -> dict:
        from jobs.features.steps import apply_step

        return apply_step()

    @task
    def materialize_features(**context: Any) -> dict:
        from jobs.features.steps import materialize_step

        return materialize_step(_data_end(context))

    apply_definitions() >> materialize_features()
