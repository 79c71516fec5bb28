"""Erasure end to end: seed people everywhere, erase some, prove nothing of them is left.

The stores are the real ones: Delta through Spark, Feast's SQLite and Redis online stores
and parquet snapshots, MLflow's registry, BentoML's model store, the local bucket and
moto's S3 server with CloudFront. Each test also checks that the people *not* erased
keep every row, object and model row they had: erasure must not lose valid data.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import clustered_model, register_champion

from jobs import tables
from jobs.answer_log import AnswerLog
from jobs.config import Settings, load_settings
from jobs.model.artifact import RecModel
from jobs.model.registry import load_version
from jobs.monitor.answers import load_answers
from jobs.privacy import erasure
from jobs.privacy.steps import erase_step, request_step
from jobs.publish import layout
from jobs.publish.erasure import erase_from_publishes, invalidate, still_published, user_keys
from jobs.publish.steps import publish_all, rollback, user_object_of, verify_step
from jobs.publish.storage import open_store
from jobs.subjects import deny_list_path, read_deny_list, subject_hasher

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
S3_SECRET = "s3-test-secret-0123456789abcdef"
GONE = ["user-3", "user-41"]


def _two_publishes(settings: Settings, model: RecModel) -> list[str]:
    stock = {f"item-{i}": False for i in range(0, 90, 11)}
    return [
        publish_all(settings, generated_at=T0 + timedelta(hours=h), in_stock=stock)["publish_id"]
        for h in (0, 1)
    ]


def _cloudfront(endpoint: str) -> tuple[Any, str]:
    import boto3

    client = boto3.client(
        "cloudfront",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    dist = client.create_distribution(
        DistributionConfig={
            "CallerReference": "recflow-erasure-test",
            "Comment": "",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "s3",
                        "DomainName": "recs-erase.s3.amazonaws.com",
                        "S3OriginConfig": {"OriginAccessIdentity": ""},
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "s3",
                "ViewerProtocolPolicy": "allow-all",
                "MinTTL": 0,
            },
        }
    )["Distribution"]["Id"]
    return client, dist


def test_published_lists_are_erased_from_every_publish_on_s3(
    s3_server: str, tmp_path: Path
) -> None:
    import boto3

    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", **creds).create_bucket(
        Bucket="recs-erase"
    )
    cloudfront, dist = _cloudfront(s3_server)
    settings = load_settings(
        data_root=tmp_path / "var",
        publish_target="s3",
        publish_bucket="recs-erase",
        publish_prefix="shop1",
        publish_k=10,
        publish_keep=3,
        s3_endpoint_url=s3_server,
        publish_secret=S3_SECRET,
        cloudfront_distribution_id=dist,
        cloudfront_endpoint_url=s3_server,
        **creds,
    )
    model = clustered_model()
    register_champion(settings, model, tmp_path / "work")
    older, newer = _two_publishes(settings, model)
    store = open_store(settings)
    keys = user_keys(settings, GONE)
    popular_before = {p: store.md5(layout.popular_key("shop1/", p)) for p in (older, newer)}
    kept = user_object_of(store, "shop1/", older, layout.user_key(S3_SECRET, "user-4"))
    kept_md5 = store.md5(kept)

    # An earlier run died after deleting one object of the older publish, before fixing
    # its manifest; and a score step died after removing a stage's metadata.
    store.delete([user_object_of(store, "shop1/", older, keys[GONE[0]])])
    store.delete([f"{layout.staging_root('shop1/', newer)}meta.json"])

    result = erase_from_publishes(settings, store, list(keys.values()))

    assert result.objects_deleted == 2 * len(GONE) - 1
    assert result.stage_rows_removed == len(GONE)  # the unreadable stage went whole
    assert [k for k, _ in store.list(layout.staging_root("shop1/", newer))] == []
    assert result.manifests_rewritten == 2
    assert still_published(settings, store, list(keys.values())) == []
    # Everyone else is untouched, popular.json too; both publishes still verify, so a
    # rollback to the older one works.
    assert store.md5(kept) == kept_md5
    assert {p: store.md5(layout.popular_key("shop1/", p)) for p in (older, newer)} == popular_before
    for pid in (older, newer):
        assert verify_step(pid, store, settings)["user_objects"] == len(model.user_ids) - 2
    assert rollback(settings, older, store)["publish_id"] == older
    # CloudFront is told to drop every erased path (and the rewritten manifests).
    invalidation = invalidate(settings, result.paths, "erase-test")
    assert invalidation
    paths = cloudfront.get_invalidation(DistributionId=dist, Id=invalidation)["Invalidation"][
        "InvalidationBatch"
    ]["Paths"]["Items"]
    for pid in (older, newer):
        for key in keys.values():
            assert f"/{user_object_of(store, 'shop1/', pid, key)}" in paths
        assert f"/{layout.manifest_key('shop1/', pid)}" in paths
    # Erasing again finds nothing and changes nothing.
    again = erase_from_publishes(settings, store, list(keys.values()))
    assert (again.objects_deleted, again.stage_rows_removed, again.manifests_rewritten) == (0, 0, 0)


def test_every_model_version_and_bentoml_copy_forgets_the_users(tmp_path: Path) -> None:
    from jobs.serve.bento_build import import_model

    settings = load_settings(data_root=tmp_path / "var")
    model = clustered_model()
    first = register_champion(settings, model, tmp_path / "w1")
    second = register_champion(settings, clustered_model(seed=9), tmp_path / "w2")
    import_model(settings, first)
    import_model(settings, second)
    assert len(erasure._bento_model_files(settings)) == 2
    before = erasure.models_remaining(settings, GONE)
    assert {"mlflow v1", "mlflow v2"} <= set(before)
    assert sum(w.startswith("bentoml ") for w in before) == 2
    assert sum(w.startswith("mlflow artifact models/m-") for w in before) == 2
    report = erasure.ErasureReport("test", {})
    erasure.erase_models(settings, GONE, report)

    assert erasure.models_remaining(settings, GONE) == []
    assert sum(report.removed["models"].values()) == 2 * len(GONE) + 2 * len(GONE)
    after = load_version(settings, first)
    assert len(after.user_ids) == len(model.user_ids) - len(GONE)
    # The others keep their exact rows and seen items; items are untouched.
    i, j = model.user_index["user-4"], after.user_index["user-4"]
    assert np.array_equal(model.user_factors[i], after.user_factors[j])
    assert np.array_equal(
        model.seen.indices[model.seen.indptr[i] : model.seen.indptr[i + 1]],
        after.seen.indices[after.seen.indptr[j] : after.seen.indptr[j + 1]],
    )
    assert np.array_equal(model.item_factors, after.item_factors)
    # No registered input example names a real user.
    for example in (tmp_path / "var" / "mlflow").rglob("*input_example.json"):
        assert "user-" not in example.read_text()


# -- the whole run on a real lake ----------------------------------------------------------------


def _settings(root: Path, **kw: Any) -> Settings:
    return load_settings(
        data_root=root,
        spark_master="local[2]",
        spark_shuffle_partitions=2,
        gen_users=150,
        gen_items=40,
        quality_enabled=False,
        publish_k=10,
        **kw,
    )


def _lake_users(spark: Any, settings: Settings) -> list[str]:
    df = tables.read_or_create(spark, settings, "interactions").select("user_id").distinct()
    return sorted(r[0] for r in df.collect())


def _model_of(users: list[str], items: list[str]) -> RecModel:
    from jobs.model.ranking import Seen

    rng = np.random.default_rng(3)
    return RecModel(
        user_ids=np.array(users),
        item_ids=np.array(items),
        user_factors=rng.normal(size=(len(users), 4)).astype(np.float32),
        item_factors=rng.normal(size=(len(items), 4)).astype(np.float32),
        popularity=rng.random(len(items)).astype(np.float32),
        seen=Seen.from_lists([[0, 1]] * len(users)),
        params={"rank": 4},
    )


def _strings_in(spark: Any, settings: Settings, name: str, needle: str) -> int:
    """Rows of a table with ``needle`` in any string column (the log must not name anyone)."""
    from pyspark.sql import functions as F

    df = tables.read_or_create(spark, settings, name)
    cols = [c for c, t in df.dtypes if t == "string"]
    hit = F.lit(False)
    for c in cols:
        hit = hit | F.coalesce(F.instr(F.col(c), needle) > 0, F.lit(False))
    return df.where(hit).count()


@pytest.mark.spark
@pytest.mark.long  # every store seeded (lake, MLflow, Feast, CDN, logs): ~2.5 min
def test_a_person_seeded_everywhere_is_erased_everywhere(spark: Any, tmp_path: Path) -> None:
    from jobs.features import definitions, export
    from jobs.ingest.steps import run_interval
    from jobs.serve.bento_build import import_model
    from jobs.sources.shop import generate

    settings = _settings(tmp_path / "var")
    generate(settings, days=1)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = start + timedelta(hours=6)
    users = None
    # A malformed line of one of the people lands too: it must leave quarantine and bronze.
    run_interval(start.isoformat(), (start + timedelta(hours=3)).isoformat(), settings=settings)
    users = _lake_users(spark, settings)
    gone = users[:2]
    hour = settings.events_dir / "dt=2026-11-01" / "hr=03"
    hour.mkdir(parents=True, exist_ok=True)
    (hour / "zz-broken.jsonl").write_text(
        '{"event_id": "broken-1", "user_id": "' + gone[0] + '", "item_id": \n'
        '{"event_id": "broken-2", "user_id": "someone-else", "item_id": \n'
    )
    run_interval((start + timedelta(hours=3)).isoformat(), end.isoformat(), settings=settings)
    users = _lake_users(spark, settings)
    assert set(gone) <= set(users)
    definitions.apply(settings)
    export.materialize(settings, end, spark)
    items = sorted(
        r[0] for r in tables.read_or_create(spark, settings, "items").select("item_id").collect()
    )
    version = register_champion(settings, _model_of(users, items), tmp_path / "w")
    import_model(settings, version)
    publish_all(settings, generated_at=T0, in_stock={})
    # The service's answer log, loaded into monitor/rec_answers (by subject hash).
    answer_log = AnswerLog.open(settings)
    hasher = subject_hasher(settings)
    answer_log.record("r1", hasher(users[-1]), "1", "als", "treatment", items[:3], ts=T0)
    # The erased person's line last: after the erasure a load re-reads it (its rows are
    # gone, so the table no longer says it was loaded) and must skip it.
    answer_log.record("r2", hasher(gone[0]), "1", "als", "treatment", items[:2], ts=T0)
    answer_log.close()
    assert load_answers(spark, settings)["inserted"] == 5
    assert erasure.verify(spark, settings, gone) != {}  # seeded in every store

    silver_before = tables.read_or_create(spark, settings, "events").count()
    gone_events = (
        tables.read_or_create(spark, settings, "events")
        .where(f"user_id IN ('{gone[0]}', '{gone[1]}')")
        .count()
    )
    others = [u for u in users if u not in gone][:5]
    interactions_before = (
        tables.read_or_create(spark, settings, "interactions")
        .where(f"user_id IN ({', '.join(repr(u) for u in others)})")
        .orderBy("user_id", "item_id")
        .collect()
    )

    assert request_step(gone, settings=settings) == {"requested": 2, "already_pending": 0}
    assert request_step([gone[0]], settings=settings) == {"requested": 0, "already_pending": 1}
    result = erase_step(settings)

    assert result["people"] == 2
    assert result["remaining"] == {}
    assert erasure.verify(spark, settings, gone) == {}
    removed = result["removed"]
    assert removed["lake"]["silver/events"] == gone_events
    assert removed["lake"]["bronze/bronze_events"] >= gone_events + 1
    assert removed["lake"]["silver/quarantine"] == 1
    assert removed["feast"]["online"] > 0 and removed["feast"]["offline snapshots"] > 0
    assert removed["published"]["user objects"] == 2
    assert removed["lake"]["monitor/rec_answers"] == 2
    answers_left = tables.read_or_create(spark, settings, "rec_answers")
    assert {r[0] for r in answers_left.select("subject").distinct().collect()} == {
        hasher(users[-1])
    }
    # The answer files lost the erased line too (blanked in place): a later load finds
    # nothing of them, and nothing else is re-read or counted bad.
    assert removed["landing"]["answer-log files (lines)"] == 1
    answer_bytes = b"".join(p.read_bytes() for p in settings.answers_dir.rglob("*.jsonl"))
    assert hasher(gone[0]).encode() not in answer_bytes
    assert hasher(users[-1]).encode() in answer_bytes
    reload = load_answers(spark, settings)
    assert (reload["inserted"], reload["denied_lines"], reload["bad_lines"]) == (0, 0, 0)
    assert tables.read_or_create(spark, settings, "rec_answers").count() == 3
    # Landing keeps every other line byte for byte, including the other person's broken one.
    assert removed["landing"]["event files (lines)"] >= gone_events + 1
    assert (hour / "zz-broken.jsonl").read_text() == (
        '{"event_id": "broken-2", "user_id": "someone-else", "item_id": \n'
    )
    # Nothing valid of anyone else is lost; gold stays exact against silver.
    events = tables.read_or_create(spark, settings, "events")
    assert events.count() == silver_before - gone_events
    interactions = tables.read_or_create(spark, settings, "interactions")
    assert (
        interactions.where(f"user_id IN ({', '.join(repr(u) for u in others)})")
        .orderBy("user_id", "item_id")
        .collect()
        == interactions_before
    )
    user_stats = tables.read_or_create(spark, settings, "user_stats")
    assert user_stats.agg({"n_events": "sum"}).first()[0] == events.count()
    assert (
        tables.read_or_create(spark, settings, "quarantine")
        .where("value LIKE '%someone-else%'")
        .count()
        == 1
    )
    # The log and the requests name people by subject hash only.
    log_rows = tables.read_or_create(spark, settings, "erasure_log")
    assert {r[0] for r in log_rows.select("subject").distinct().collect()} == {
        hasher(u) for u in gone
    }
    for u in gone:
        assert _strings_in(spark, settings, "erasure_log", u) == 0
        assert _strings_in(spark, settings, "erasure_requests", u) == 0
    assert {hasher(u) for u in gone} <= read_deny_list(deny_list_path(settings))
    requests = tables.read_or_create(spark, settings, "erasure_requests").collect()
    assert {(r["status"], r["user_id"]) for r in requests} == {("done", None)}
    # A second run has nothing to do, and the next feature export reads the rewritten
    # snapshots (Spark checks parquet files against their checksum sidecars).
    assert erase_step(settings)["people"] == 0
    export.materialize(settings, end + timedelta(hours=1), spark)
    assert erasure.verify(spark, settings, gone) == {}


@pytest.mark.spark
def test_feast_redis_online_rows_are_deleted(spark: Any, redis_port: int, tmp_path: Path) -> None:
    from jobs.features import definitions, export, online
    from jobs.ingest.steps import run_interval
    from jobs.sources.shop import generate

    settings = _settings(
        tmp_path / "var",
        feast_online_store="redis",
        feast_redis_connection=f"127.0.0.1:{redis_port}",
    )
    generate(settings, days=1)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = start + timedelta(hours=3)
    run_interval(start.isoformat(), end.isoformat(), settings=settings)
    definitions.apply(settings)
    export.materialize(settings, end, spark)
    users = _lake_users(spark, settings)
    gone, kept = users[:2], users[2:6]
    fs = definitions.store(settings)
    assert all(online.recent_items(fs, gone).values())
    assert erasure.feast_online_remaining(settings, gone) == 2

    assert erasure.erase_feast_online(settings, gone) == 2

    assert erasure.feast_online_remaining(settings, gone) == 0
    assert not any(online.recent_items(fs, gone).values())
    assert all(online.recent_items(fs, kept).values())
    assert json.dumps(online.user_stats(fs, gone), default=str).count("null") >= 0
