"""Publish: when the champion changes, score every user and publish their JSON.

Scheduled on the champion Asset the train DAG emits. score → upload → verify → flip,
then prune, invalidate and build the Bento of the published model. `recs/latest.json` moves only
after every object of the publish is uploaded and verified, so a failed run leaves
clients on the previous publish. The publish id comes from the run's date and the model
version, so a retried task works on the same publish (and re-uploads only what is
missing). Scores move between tasks through the object store (a private staging prefix),
never a worker's disk. Each task is one call into `jobs.publish.steps`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, task

from jobs.contracts import ASSET_CHAMPION

CHAMPION = Asset(name=ASSET_CHAMPION)

with DAG(
    dag_id="publish",
    description="Precomputed recommendations per user → S3/CDN, flipped atomically.",
    doc_md=__doc__,
    schedule=[CHAMPION],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "recflow",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "execution_timeout": timedelta(hours=1),
    },
    tags=["recflow", "serving"],
) as dag:

    @task
    def score(dag_run=None) -> dict:
        from jobs.publish.steps import score_step

        return score_step(generated_at=dag_run.run_after)

    @task
    def upload(scored: dict) -> dict:
        from jobs.publish.steps import upload_step

        return upload_step(scored["publish_id"])

    @task
    def verify(uploaded: dict) -> dict:
        from jobs.publish.steps import verify_step

        return verify_step(uploaded["publish_id"])

    @task
    def flip(verified: dict) -> dict:
        from jobs.publish.steps import flip_step

        return flip_step(verified["publish_id"])

    @task
    def invalidate(flipped: dict, run_id=None) -> str | None:
        from jobs.publish.steps import invalidate_step

        return invalidate_step(f"{flipped['publish_id']}-{run_id}")

    @task
    def prune() -> list[str]:
        from jobs.publish.steps import prune_step

        return prune_step()

    @task
    def build_bento(flipped: dict) -> dict:
        from jobs.publish.steps import build_bento_step

        return build_bento_step(flipped["model_version"])

    flipped = flip(verify(upload(score())))
    invalidate(flipped)
    flipped >> prune()
    build_bento(flipped)
