"""`make demo`: the whole flow on embedded defaults, narrated step by step.

At this stage: generate a sample shop into the landing folder, run the doctor (Java,
Spark with Delta, a Delta round trip with time travel), then run the Airflow DAG
``ingest`` with ``dag.test`` once per generated day (daily intervals, so the demo takes
seven runs instead of 168) and print the audit counts; then, as the gold Asset would,
the ``features`` DAG (Feast apply + materialize) and the ``train`` DAG (metrics, the
registered version, its aliases); then, as the champion Asset would, the ``publish`` DAG,
and fetch one user's JSON over HTTP from the CDN stand-in. Last, the loop closed: one more
day of the shop in which users are shown the live lists and react to them, its ingest,
and the ``monitor`` DAG (drift against the champion's training window, and the CTR of
the recommended slots against the organic ones). Then real time: a local Kafka broker,
the stream worker, the collector and the champion's Bento; a known user clicks three items
of one category through the collector, and their next answer follows (both lists and
the time it took are printed).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

from jobs.config import Settings, get_settings


def _step(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def _show_progress_logs() -> None:
    """recflow's own INFO lines (what each step did) on stdout; libraries stay quiet."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("   · %(message)s"))
    logger = logging.getLogger("jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # Airflow re-emits library deprecation warnings as log records; not the demo's story.
    logging.getLogger("py.warnings").setLevel(logging.ERROR)


def main() -> int:
    from jobs.doctor import run_checks
    from jobs.sources.shop import generate

    _show_progress_logs()
    # Spark's own WARN lines (duplicated option keys, checkpointed RDDs) would bury the
    # story; an explicit RECFLOW_SPARK_LOG_LEVEL still wins.
    os.environ.setdefault("RECFLOW_SPARK_LOG_LEVEL", "ERROR")
    settings = get_settings()
    print(f"recflow demo — data root {settings.data_root}")

    _step("1. generate a sample shop")
    report = generate(
        settings,
        force=True,
        progress=True,
        malformed_fraction=0.01,
        duplicate_fraction=0.01,
    )
    types = report.events_by_type
    print(
        f"{report.users:,} users, {report.items:,} items, {len(report.days)} days "
        f"({report.days[0]} .. {report.days[-1]}), {report.files} hourly files"
    )
    print("events: " + ", ".join(f"{k} {v:,}" for k, v in sorted(types.items())))
    print(
        f"CTR {types['click'] / types['impression']:.2%}; "
        f"{report.events_per_second:,.0f} events/s; landing in {settings.landing_dir}"
    )

    _step("2. doctor: Java, Spark with Delta, Delta round trip")
    results = run_checks(
        settings,
        on_result=lambda c: print(
            f"[{'ok' if c.ok else 'FAIL':>4}] {c.name:<30} {c.seconds:5.1f} s  {c.detail}",
            flush=True,
        ),
    )
    if not all(c.ok for c in results):
        print("doctor found problems; see above", file=sys.stderr)
        return 1
    _step("3. ingest: the Airflow DAG `ingest`, one daily run per generated day")
    if not _ingest_with_airflow(settings, report.days):
        print("\ningest failed; see above.")
        return 1
    _step("4. features: the Airflow DAG `features` (Feast apply → materialize)")
    if not _features_with_airflow(settings):
        print("\nfeatures failed; see above.")
        return 1
    _step("5. train: the Airflow DAG `train` (trigger → ALS → MLflow → gate)")
    if not _train_with_airflow(settings):
        print("\ntraining failed; see above.")
        return 1
    _step("6. publish: the Airflow DAG `publish`, then a user's JSON from `recflow cdn`")
    if not _publish_with_airflow(settings):
        print("\npublishing failed; see above.")
        return 1
    _step("7. the loop: a day of users shown those lists, then the Airflow DAG `monitor`")
    if not _loop_with_airflow(settings):
        print("\nthe monitoring day failed; see above.")
        return 1
    _step("8. real time: three clicks through the collector, and the next answer")
    if not _real_time(settings):
        print("\nthe real-time step failed; see above.")
        return 1
    print(
        "\ndemo finished. Next: `make up` serves the champion's Bento on "
        f"http://{settings.serve_host}:{settings.serve_port} next to the CDN stand-in."
    )
    return 0


def _ingest_with_airflow(settings: Settings, days: list[str]) -> bool:
    """Run the ingest DAG with ``dag.test`` on a SQLite metadata DB under the data root."""
    import subprocess
    from pathlib import Path

    home = settings.data_root / "airflow"
    dags = Path(__file__).resolve().parents[1] / "dags"
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX": "glob",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "RECFLOW_INGEST_SCHEDULE": "@daily",
            "RECFLOW_DATA_ROOT": str(settings.data_root),
        }
    )
    get_settings.cache_clear()  # the DAG file reads the schedule set just above
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*httpx.*")
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    from jobs import tables
    from jobs.spark import get_spark

    dag = DagBag(dag_folder=str(dags)).dags["ingest"]
    ok = True
    for day in days:
        end = pendulum.parse(day).add(days=1)
        run = dag.test(logical_date=end)
        print(f"ingest run for {day}: {run.state}", flush=True)
        ok = ok and str(run.state) == "success"
    spark = get_spark(settings)
    # The batches of these days (a rerun of the demo on the same data root keeps the
    # audit rows of earlier runs: they are the lake's history, not this run's).
    audit = [
        r
        for r in tables.read_or_create(spark, settings, "ingest_audit")
        .orderBy("interval_start", "finished_at")
        .collect()
        if r.interval_start.date().isoformat() in days
    ]
    print(
        f"{'batch':<30} {'read':>7} {'quarant.':>8} {'no cons.':>8} {'withdr.':>7} "
        f"{'dups':>6} {'inserted':>8} balanced quality"
    )
    for r in audit:
        checks = r.quality or {}
        passed = sum(bool(v) for v in checks.values())
        print(
            f"{r.batch_id:<30} {r.read_lines:>7,} {r.quarantined:>8,} {r.non_consented:>8,} "
            f"{r.consent_withdrawn or 0:>7,} "
            f"{r.duplicates_in_batch + r.duplicates_existing:>6,} {r.silver_inserted:>8,} "
            f"{r.balanced!s:<8} {passed}/{len(checks)} suites clean"
        )
    reasons: dict[str, int] = {}
    for r in audit:
        for reason, n in (r.quarantined_by_reason or {}).items():
            reasons[reason] = reasons.get(reason, 0) + n
    print("quarantined by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    print(
        f"lake: {settings.lake_dir}  (gold interactions: "
        f"{tables.read_or_create(spark, settings, 'interactions').count():,} rows)"
    )
    if settings.quality_enabled:
        from jobs.ingest.quality import docs_index

        print(f"Data Docs (Great Expectations): file://{docs_index(settings)}")
    return ok


def _run_dag(dag_id: str) -> Any:
    """One ``dag.test()`` run, as the Asset it is scheduled on would start it; the run,
    or None when it failed (the task states are printed either way)."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    dags = Path(__file__).resolve().parents[1] / "dags"
    run = DagBag(dag_folder=str(dags)).dags[dag_id].test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print(f"{dag_id} run: {run.state}  tasks: {states}", flush=True)
    return run if str(run.state) == "success" else None


def _train_with_airflow(settings: Settings) -> bool:
    """Run the train DAG once (as the gold Asset would) and show what the registry holds."""
    from jobs.model.registry import CHALLENGER, CHAMPION, alias_version, setup
    from jobs.train.training import metrics_table

    run = _run_dag("train")
    if run is None:
        return False
    client = setup(settings)
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    if not versions:
        print("the trigger did not ask for training; nothing registered")
        return True
    newest = max(versions, key=lambda v: int(v.version))
    metrics = client.get_run(newest.run_id).data.metrics
    print("\n" + metrics_table(metrics, settings.eval_k))
    aliases = {
        alias: getattr(alias_version(client, settings.model_name, alias), "version", None)
        for alias in (CHALLENGER, CHAMPION)
    }
    print(
        f"\nregistered {settings.model_name} version {newest.version} "
        f"(run {newest.run_id}); aliases: {aliases}"
    )
    print(f"gate: {newest.tags.get('recflow.gate', '')}")
    k = settings.eval_k
    if f"cold_ndcg_at_{k}" in metrics:
        params = client.get_run(newest.run_id).data.params
        print(
            f"new items by their text (item-cold split, {metrics['cold_eval_items']:.0f} items"
            f" held out of training): NDCG@{k} {metrics[f'cold_ndcg_at_{k}']:.4f} against"
            f" random {metrics[f'cold_random_ndcg_at_{k}']:.4f}; the model carries"
            f" {params.get('cold_items', 0)} catalog items without interactions"
        )
    params = client.get_run(newest.run_id).data.params
    if "als_hybrid_weight" in params and "content_model" in params:
        weight = float(params["als_hybrid_weight"])
        alone = metrics.get(f"test_als_ndcg_at_{k}")
        print(
            f"hybrid: content weight {weight:g} picked on the validation slice"
            + (
                f"; test NDCG@{k} {metrics[f'test_ndcg_at_{k}']:.4f} against ALS alone {alone:.4f}"
                if weight > 0 and alone is not None
                else " (ALS alone: content did not clearly help here)"
            )
        )
    print(
        "MLflow UI: .venv/bin/mlflow ui --backend-store-uri "
        f"{settings.tracking_uri_shown} --port 5000  (then http://127.0.0.1:5000)"
    )
    return True


def _features_with_airflow(settings: Settings) -> bool:
    """Run the features DAG once (as the gold Asset would) and read a user back online."""

    from jobs.features import definitions, online

    run = _run_dag("features")
    if run is None:
        return False
    done = next(ti for ti in run.get_task_instances() if ti.task_id == "materialize_features")
    result = done.xcom_pull(task_ids="materialize_features") or {}
    for view, info in sorted(result.get("views", {}).items()):
        print(f"  {view:<20} {info.get('materialized', 0):>6,} rows materialized")
    fs = definitions.store(settings)
    user = "u000000"
    print(f"online read: {user} recent items {online.recent_items(fs, [user])[user][:5]}")
    print(f"Feast registry and SQLite online store: {settings.feast_dir}")
    return True


def _publish_with_airflow(settings: Settings) -> bool:
    """Run the publish DAG once and fetch a user's list like a browser would."""
    import gzip
    import json
    import urllib.request

    from jobs.model.registry import CHAMPION, alias_version, load_version, setup
    from jobs.publish import layout
    from jobs.publish.cdn import serve_in_background
    from jobs.publish.steps import current, publishes

    if alias_version(setup(settings), settings.model_name, CHAMPION) is None:
        print("no champion (the gate kept popularity): nothing to publish")
        return True
    run = _run_dag("publish")
    if run is None:
        return False
    live = current(settings)
    assert live is not None
    manifest = next(p for p in publishes(settings) if p["live"])
    print(
        f"live publish {live['publish_id']}: model v{live['model']['version']}, "
        f"{manifest['users']:,} users, bucket {settings.publish_dir}"
    )
    champion = alias_version(setup(settings), settings.model_name, CHAMPION)
    user = str(load_version(settings, champion.version).user_ids[0])
    key = layout.user_key(settings.hmac_secret(), user)
    path = live["users"].format(kk=key[:2], key=key)
    server, base = serve_in_background(settings)
    try:
        request = urllib.request.Request(f"{base}/{path}", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request) as answer:
            headers = {h: answer.headers[h] for h in ("Content-Encoding", "Cache-Control")}
            body = json.loads(gzip.decompress(answer.read()))
    finally:
        server.shutdown()
        server.server_close()
    print(f"GET {base}/{path}  (user {user}; {headers})")
    head = json.dumps({k: v for k, v in body.items() if k != "items"}, indent=2)
    items = ",\n    ".join(json.dumps(i) for i in body["items"][:5])
    print(f'{head[:-2]},\n  "items": [\n    {items},\n    … ({len(body["items"])} in all)\n  ]\n}}')
    print(
        "serve it yourself: .venv/bin/recflow cdn  "
        f"(http://{settings.cdn_host}:{settings.cdn_port}/recs/latest.json); "
        f"a user's object: .venv/bin/recflow recs {user}"
    )
    return True


def _loop_with_airflow(settings: Settings) -> bool:
    """One reacting day through ingest and monitor: what a newcomer's next day looks like."""
    import pendulum
    from pyspark.sql import functions as F

    from jobs import tables
    from jobs.monitor.monitor import read_drift, report_path
    from jobs.publish.steps import current
    from jobs.sources.shop import generate
    from jobs.spark import get_spark

    if current(settings) is None:
        print("nothing published: no lists to show the shop's users")
        return True
    report = generate(settings, days=1, append=True, react=True, progress=True)
    day = report.days[-1]
    events = sum(report.events_by_type.values())
    print(f"{day}: {events:,} events; the recommended slots show the live publish's lists")
    if not _ingest_with_airflow(settings, [day]):
        return False
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    dags = Path(__file__).resolve().parents[1] / "dags"
    run = (
        DagBag(dag_folder=str(dags))
        .dags["monitor"]
        .test(logical_date=pendulum.parse(day).add(days=1))
    )
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print(f"monitor run: {run.state}  tasks: {states}", flush=True)
    if str(run.state) != "success":
        return False
    spark = get_spark(settings)
    drift_run = f"monitor/{run.run_id}"  # as dags/monitor.py names its drift runs
    drift = read_drift(spark, settings, drift_run)
    for row in drift.sort_values(["metric", "statistic"]).itertuples():
        value = "n/a" if row.value != row.value else f"{row.value:.3f}"  # NaN: not computable
        print(f"  drift {row.metric:<20} {row.statistic:<5} {value:>7}  {row.level}")
    by_source = (
        tables.read_or_create(spark, settings, "rec_performance")
        .where(F.col("day") == day)
        .where(F.col("ab_group").isNull() | (F.col("ab_group") == "treatment"))
        .groupBy("rec_source")
        .agg(F.sum("impressions").alias("shown"), F.sum("clicks").alias("clicked"))
        .orderBy("rec_source")
        .collect()
    )
    for row in by_source:
        ctr = row["clicked"] / row["shown"] if row["shown"] else float("nan")
        print(f"  {row['rec_source']:<8} {row['shown']:>7,} shown, CTR {ctr:.2%}")
    print(f"drift report: file://{report_path(settings, drift_run)}")
    return True


def _real_time(settings: Settings) -> bool:
    """A known user's answer before and after three clicks posted to the collector."""
    import time
    import uuid
    from datetime import UTC, datetime

    import httpx

    from jobs import tables
    from jobs.model import control
    from jobs.model.registry import CHAMPION, alias_version, load_version, setup
    from jobs.publish import layout
    from jobs.spark import get_spark
    from jobs.stream.live import live_stack

    champion = alias_version(setup(settings), settings.model_name, CHAMPION)
    if champion is None:
        print("no champion: nothing to follow")
        return True
    model = load_version(settings, champion.version)
    user = next(str(u) for u in model.user_ids if not control.in_control(str(u), settings))
    row = model.user_index[user]
    seen = {
        str(model.item_ids[j])
        for j in model.seen.indices[model.seen.indptr[row] : model.seen.indptr[row + 1]]
    }
    items = tables.read_or_create(get_spark(settings), settings, "items").select(
        "item_id", "category", "in_stock"
    )
    catalog = {r["item_id"]: (r["category"], r["in_stock"]) for r in items.collect()}
    category = {i: c for i, (c, _) in catalog.items()}
    request = {"user_id": user, "user_key": layout.user_key(settings.hmac_secret(), user), "k": 8}
    with live_stack(settings) as live, httpx.Client(timeout=10) as client:
        print(
            f"kafka {live.settings.kafka_bootstrap}, collector {live.collector_url}/events, "
            f"service {live.service_url}, stream worker → Feast user_recent_items"
        )
        before = client.post(f"{live.service_url}/recommend", json=request).json()
        shown = [category.get(i["item_id"]) for i in before["items"]]
        # The category the list shows least, and three of its items the user never had.
        choice = min(sorted({c for c, _ in catalog.values() if c}), key=shown.count)
        clicks = [
            i
            for i in sorted(catalog)
            if catalog[i] == (choice, True) and i in model.item_index and i not in seen
        ][:3]
        session = uuid.uuid4().hex[:12]
        events = [
            {
                "event_id": uuid.uuid4().hex,
                "ts": datetime.now(UTC).isoformat(),
                "user_id": user,
                "item_id": item,
                "event_type": "click",
                "session_id": session,
            }
            for item in clicks
        ]
        started = time.perf_counter()
        posted = client.post(f"{live.collector_url}/events", json=events)
        posted.raise_for_status()
        after = before
        # Until the answer follows the clicks: a session answer with another list (on a
        # rerun the store still holds the last run's clicks, so `before` may already be
        # a session answer).
        while time.perf_counter() - started < 30 and (
            after["source"] != "als_session" or after["items"] == before["items"]
        ):
            time.sleep(0.02)
            after = client.post(f"{live.service_url}/recommend", json=request).json()
        took = time.perf_counter() - started

    def show(answer: dict[str, Any]) -> str:
        return "\n".join(
            f"    {i['rank']:>2}. {i['item_id']:<10} {category.get(i['item_id']) or '?'}"
            for i in answer["items"]
        )

    print(f"user {user}, before (source {before['source']}):\n{show(before)}")
    print(f"clicks on 3 items of {choice!r}: {', '.join(clicks)}")
    if after["source"] != "als_session" or after["items"] == before["items"]:
        print("the answer did not follow within 30 s (see data_root/live/serve.log)")
        return False
    print(
        f"{took * 1000:.0f} ms later (source {after['source']}, recent items from "
        f"{after['recent_source']}):\n{show(after)}"
    )
    share = sum(category.get(i["item_id"]) == choice for i in after["items"])
    print(f"{choice!r}: {shown.count(choice)} of {len(shown)} before, {share} after")
    return True


if __name__ == "__main__":
    sys.exit(main())
