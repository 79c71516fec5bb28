"""Publishing to the local bucket and to an S3-compatible server, through the real MLflow
registry: layout and schema, exclusions, idempotency, failure midway, rollback,
retention, the CDN stand-in's HTTP behaviour and S3 headers read back over HTTP."""

from __future__ import annotations

import gzip
import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import clustered_model, predict_without_recflow, register_champion

from jobs.config import Settings, load_settings
from jobs.model.artifact import RecModel
from jobs.model.control import control_mask, in_control
from jobs.publish import layout
from jobs.publish.cdn import serve_in_background
from jobs.publish.steps import (
    PublishError,
    current,
    flip_step,
    prune_step,
    publish_all,
    publishes,
    recs_for,
    rollback,
    score_step,
    upload_step,
    user_object_of,
    verify_step,
)
from jobs.publish.storage import LocalStore, ObjectStore, S3Store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)
# Publishing to S3 refuses the public development secret.
S3_SECRET = "s3-test-secret-0123456789abcdef"


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    """A registered champion and its first publish (hour 0, live), for each test alone."""
    settings = load_settings(data_root=tmp_path / "var", publish_k=10, publish_keep=2)
    model = clustered_model()
    version = register_champion(settings, model, tmp_path / "work")
    out_of_stock = {f"item-{i}": False for i in range(0, 90, 7)}
    world = {"settings": settings, "model": model, "version": version, "stock": out_of_stock}
    world["first"] = _publish(world, 0)
    return world


def _publish(world: dict[str, Any], hours: int, **kw: Any) -> dict[str, Any]:
    return publish_all(
        world["settings"],
        generated_at=T0 + timedelta(hours=hours),
        in_stock=world["stock"],
        **kw,
    )


def _objects(store_root: Path, publish_id: str) -> dict[str, dict[str, Any]]:
    """The publish's own objects and its users' (in the slot its manifest names)."""
    base = store_root / "recs" / "v" / publish_id
    manifest = layout.decode((base / "_manifest.json").read_bytes())
    users = store_root / layout.users_root("", publish_id, manifest)
    return {
        str(p.relative_to(store_root)): layout.decode(p.read_bytes())
        for folder in (base, users)
        for p in folder.rglob("*.json")
    }


def _user_object(settings: Settings, publish_id: str, key: str) -> str:
    return user_object_of(LocalStore(settings.publish_dir), "", publish_id, key)


def test_every_object_follows_the_layout_and_schema(world: dict[str, Any]) -> None:
    settings: Settings = world["settings"]
    model: RecModel = world["model"]
    pid = world["first"]["publish_id"]
    assert pid == f"20261129T060000Z-v{world['version']}"
    objects = _objects(settings.publish_dir, pid)
    users = {k: v for k, v in objects.items() if "/u/" in k}
    assert len(users) == len(model.user_ids)
    assert len(objects) == len(users) + 2  # + popular.json + _manifest.json
    secret = settings.publish_secret.get_secret_value()
    for key, body in users.items():
        kk, name = key.split("/")[-2:]
        assert len(name) == layout.KEY_HEX + 5 and name[:2] == kk
        # A control user's object is popular.json's body (with its privacy budget).
        # Nothing per publish (issue 17): an unchanged list keeps its bytes.
        assert set(body) - {"privacy"} == {
            "schema_version",
            "model",
            "source",
            "items",
            "group",
        }
        assert "privacy" not in body or body["group"] == "control"
        # The control group (jobs.model.control) is served the popular list.
        want = {"treatment": "als", "control": "popular"}[body["group"]]
        assert body["model"]["version"] == world["version"] and body["source"] == want
        assert [i["rank"] for i in body["items"]] == list(range(1, 11))
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
    for u in model.user_ids:  # the raw id is nowhere: not in keys, not in bodies
        key = _user_object(settings, pid, layout.user_key(secret, str(u)))
        assert key in users and str(u) not in key
        assert str(u) not in json.dumps(users[key])
    manifest = objects[layout.manifest_key("", pid)]
    assert manifest["counts"]["user_objects"] == len(model.user_ids)
    assert sum(s["objects"] for s in manifest["shards"].values()) == len(model.user_ids)
    assert manifest["model"]["run_id"] and manifest["delta_versions"]["gold_interactions"] == -1
    latest = current(settings)
    assert latest is not None and latest["publish_id"] == pid
    # The page CloudFront answers missing keys with (infra/terraform/cdn.tf), short-lived.
    page = settings.publish_dir / layout.not_found_key("")
    assert layout.decode(page.read_bytes()) == layout.NOT_FOUND_BODY
    assert layout.NOT_FOUND_BODY == {"error": "no such key", "status": 404}  # as `recflow cdn`
    assert "max-age=" in layout.headers_for(layout.not_found_key(""), 60)["Cache-Control"]
    assert "immutable" not in layout.headers_for(layout.not_found_key(""), 60)["Cache-Control"]


def test_lists_are_the_shared_ranking_without_seen_or_out_of_stock_items(
    world: dict[str, Any],
) -> None:
    settings, model = world["settings"], world["model"]
    gone = set(world["stock"])
    assert gone
    allowed = np.array([str(i) not in gone for i in model.item_ids])
    for row, user in enumerate(model.user_ids):
        _, body = recs_for(settings, str(user))
        got = [i["item_id"] for i in body["items"]]
        if in_control(str(user), settings):  # popularity, tested on its own below
            continue
        seen = {
            str(model.item_ids[j])
            for j in model.seen.indices[model.seen.indptr[row] :][
                : model.seen.indptr[row + 1] - model.seen.indptr[row]
            ]
        }
        assert not (set(got) & seen) and not (set(got) & gone)
        idx, _ = model.recommend_rows(np.array([row]), 10, allowed)
        assert got == model.ids(idx)[0]
    key, body = recs_for(settings, "somebody-we-never-saw")
    assert key.endswith("popular.json") and body["source"] == "popular"
    assert not {i["item_id"] for i in body["items"]} & gone


def test_keys_are_stable_for_a_user_and_distinct_between_users() -> None:
    a, b = layout.user_key("s", "user-1"), layout.user_key("s", "user-2")
    assert a == layout.user_key("s", "user-1") and a != b
    assert layout.user_key("other-secret", "user-1") != a


def test_rerunning_a_publish_uploads_nothing_and_changes_no_byte(world: dict[str, Any]) -> None:
    settings = world["settings"]
    pid = current(settings)["publish_id"]
    before = {p: p.read_bytes() for p in (settings.publish_dir / "recs").rglob("*.json")}
    # The live publish is not uploaded again: readers are on its slot, and bodies built
    # under other settings (a gzip level) would change under them with no flip.
    again = upload_step(pid, settings=settings.model_copy(update={"publish_gzip_level": 9}))
    assert again["already_live"] and again["uploaded"] == 0
    after = {p: p.read_bytes() for p in (settings.publish_dir / "recs").rglob("*.json")}
    assert after == before
    verify_step(pid, settings=settings)


class FailingStore:
    """A real store that breaks after ``n`` PUTs, like a network gone mid-upload."""

    def __init__(self, inner: ObjectStore, n: int) -> None:
        self.inner, self.left = inner, n
        self.description = inner.description

    def put(self, key: str, data: bytes, headers: dict[str, str]) -> None:
        self.left -= 1
        if self.left < 0:
            raise ConnectionError("injected: connection reset during upload")
        self.inner.put(key, data, headers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failure_midway_leaves_latest_and_the_previous_publish_intact(
    world: dict[str, Any],
) -> None:
    settings = world["settings"]
    live = current(settings)["publish_id"]
    store = LocalStore(settings.publish_dir)
    scored = score_step(T0 + timedelta(hours=1), in_stock=world["stock"], settings=settings)
    pid = scored["publish_id"]
    with pytest.raises(ConnectionError, match="injected"):
        upload_step(pid, FailingStore(store, 40), settings=settings)
    assert current(settings)["publish_id"] == live
    verify_step(live, settings=settings)  # the live publish is whole
    with pytest.raises(PublishError, match="no manifest"):
        verify_step(pid, settings=settings)
    with pytest.raises(PublishError, match="no manifest"):
        rollback(settings, pid)  # an incomplete publish can never go live
    resumed = upload_step(pid, settings=settings)  # the retry uploads only what is missing
    assert resumed["skipped"] >= 30 and resumed["uploaded"] <= len(world["model"].user_ids) - 30
    assert verify_step(pid, settings=settings)["user_objects"] == len(world["model"].user_ids)


class CountingStore:
    """A real store that records every PUT's key."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.puts = inner, []
        self.description = inner.description

    def put(self, key: str, data: bytes, headers: dict[str, str]) -> None:
        self.puts.append(key)
        self.inner.put(key, data, headers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_unchanged_lists_are_not_put_again_and_changed_ones_are(world: dict[str, Any]) -> None:
    """Two slots: the third publish writes into the first's slot. The oracle is the slot's
    bytes before and after, compared object by object, not the uploader's own counts."""
    settings, model = world["settings"], world["model"]
    first = world["first"]["publish_id"]
    slot = world["first"]["upload"]["slot"]
    folder = settings.publish_dir / layout.slot_root("", slot)
    before = {p: p.read_bytes() for p in (folder / "u").rglob("*.json")}
    second = _publish(world, 1)
    assert second["upload"]["slot"] != slot and second["upload"]["skipped"] == 0
    # One more item out of stock: the lists that held it change, the others do not.
    world["stock"] = {**world["stock"], "item-1": False}
    store = CountingStore(LocalStore(settings.publish_dir))
    third = _publish(world, 2, store=store)
    assert third["upload"]["slot"] == slot
    after = {p: p.read_bytes() for p in (folder / "u").rglob("*.json")}
    assert set(after) == set(before)  # same users, same keys
    changed = {str(p.relative_to(settings.publish_dir)) for p in after if after[p] != before[p]}
    put_users = {k for k in store.puts if "/u/" in k}
    assert put_users == changed
    assert 0 < len(changed) < len(model.user_ids)
    assert third["upload"]["skipped"] == len(model.user_ids) - len(changed)
    assert third["upload"]["uploaded"] == len(changed)
    verify_step(third["publish_id"], settings=settings)
    # Readers of the live publish get the new lists; the first publish's slot is gone.
    assert current(settings)["slot"] == slot
    for user in model.user_ids[:20]:
        _, body = recs_for(settings, str(user))
        assert "item-1" not in {i["item_id"] for i in body["items"]}
    assert rollback(settings, second["publish_id"])["previous"] == third["publish_id"]
    assert first not in {p["publish_id"] for p in publishes(settings)}  # keep=2: pruned


def test_a_slot_is_never_written_while_live(world: dict[str, Any]) -> None:
    """Re-uploading an older publish whose slot the live one has taken is refused, and
    rolling back to it too: either would change what readers see without a flip."""
    settings = world["settings"] = world["settings"].model_copy(update={"publish_keep": 3})
    first = world["first"]["publish_id"]
    _publish(world, 1)
    third = _publish(world, 2)  # two slots: back in the first's slot, live
    live_bytes = {p: p.read_bytes() for p in (settings.publish_dir / "recs").rglob("*.json")}
    with pytest.raises(PublishError, match="now holds the live publish"):
        upload_step(first, settings=settings)
    with pytest.raises(PublishError, match="now holds"):
        rollback(settings, first)
    assert current(settings)["publish_id"] == third["publish_id"]
    assert {
        p: p.read_bytes() for p in (settings.publish_dir / "recs").rglob("*.json")
    } == live_bytes


def test_verification_catches_a_missing_or_altered_object(world: dict[str, Any]) -> None:
    settings = world["settings"]
    pid = current(settings)["publish_id"]
    manifest = layout.decode((settings.publish_dir / layout.manifest_key("", pid)).read_bytes())
    victim = next((settings.publish_dir / layout.users_root("", pid, manifest)).rglob("*.json"))
    original = victim.read_bytes()
    try:
        victim.write_bytes(gzip.compress(b'{"items": []}'))
        with pytest.raises(PublishError, match="shards differing"):
            verify_step(pid, settings=settings)
        victim.unlink()
        with pytest.raises(PublishError, match="does not match"):
            verify_step(pid, settings=settings)
    finally:
        victim.write_bytes(original)
    verify_step(pid, settings=settings)


def test_retention_and_rollback(world: dict[str, Any]) -> None:
    # Three slots: every kept publish (and an uploaded, unflipped one) keeps its objects.
    settings = world["settings"] = world["settings"].model_copy(update={"publish_slots": 3})
    first = current(settings)["publish_id"]  # hour 0, live
    hour1 = score_step(T0 + timedelta(hours=1), in_stock=world["stock"], settings=settings)
    upload_step(hour1["publish_id"], settings=settings)  # complete, never flipped
    store = LocalStore(settings.publish_dir)
    assert [k for k, _ in store.list(layout.staging_root("", first))]  # kept with its publish
    earlier = [p["publish_id"] for p in publishes(settings)]
    assert earlier[0] == first and len(earlier) == 2
    second = _publish(world, 2)
    assert second["pruned"] == [first]  # keep=2: the newest two stay
    assert [p["publish_id"] for p in publishes(settings)] == [earlier[1], second["publish_id"]]
    assert not [k for k, _ in store.list(layout.staging_root("", first))]

    assert rollback(settings, earlier[1])["previous"] == second["publish_id"]
    assert current(settings)["publish_id"] == earlier[1]
    # A newer publish uploaded but not flipped: pruning keeps the newest two *and* the
    # live one, even though it is now the oldest.
    third = score_step(T0 + timedelta(hours=3), in_stock=world["stock"], settings=settings)
    upload_step(third["publish_id"], settings=settings)
    assert prune_step(settings=settings) == []
    listed = publishes(settings)
    assert [p["live"] for p in listed] == [True, False, False]
    with pytest.raises(PublishError, match="no manifest"):
        rollback(settings, first)  # pruned
    with pytest.raises(layout.LayoutError):
        rollback(settings, "../../etc")


def test_cdn_serves_objects_like_the_cdn(world: dict[str, Any]) -> None:
    settings = world["settings"]
    server, base = serve_in_background(settings)
    try:
        live = current(settings)
        key = _user_object(
            settings, live["publish_id"], layout.user_key("recflow-dev-secret", "user-3")
        )
        with urllib.request.urlopen(
            urllib.request.Request(f"{base}/{key}", headers={"Accept-Encoding": "gzip"})
        ) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert r.headers["Content-Type"] == "application/json"
            # A slot's object changes between publishes: short lifetime, then revalidation.
            assert r.headers["Cache-Control"] == "public, max-age=60, must-revalidate"
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            etag = r.headers["ETag"]
            body = json.loads(gzip.decompress(r.read()))
        assert body["items"] and "publish_id" not in body
        with urllib.request.urlopen(f"{base}/recs/latest.json") as r:  # no gzip accepted
            assert "Content-Encoding" not in r.headers
            assert "max-age=60" in r.headers["Cache-Control"]
            assert json.loads(r.read())["publish_id"] == live["publish_id"]
        for path, status in (("/recs/v/nope.json", 404), ("/../../etc/passwd", 404)):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{base}{path}")
            assert err.value.code == status
        req = urllib.request.Request(f"{base}/{key}", headers={"If-None-Match": etag})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req)
        assert err.value.code == 304
        pre = urllib.request.Request(f"{base}/{key}", method="OPTIONS")
        with urllib.request.urlopen(pre) as r:
            assert r.status == 204 and "GET" in r.headers["Access-Control-Allow-Methods"]
    finally:
        server.shutdown()
        server.server_close()


def test_s3_end_to_end_with_headers_over_http_and_cloudfront(
    world: dict[str, Any], s3_server: str, tmp_path: Path
) -> None:
    import boto3

    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", **creds)
    s3.create_bucket(Bucket="recs-test")
    cloudfront = boto3.client(
        "cloudfront", endpoint_url=s3_server, region_name="us-east-1", **creds
    )
    dist = cloudfront.create_distribution(
        DistributionConfig={
            "CallerReference": "recflow-test",
            "Comment": "",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "s3",
                        "DomainName": "recs-test.s3.amazonaws.com",
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
    base = world["settings"]
    settings = load_settings(
        data_root=base.data_root,
        publish_target="s3",
        publish_bucket="recs-test",
        publish_prefix="shop1",
        publish_k=10,
        s3_endpoint_url=s3_server,
        publish_secret=S3_SECRET,
        cloudfront_distribution_id=dist,
        cloudfront_endpoint_url=s3_server,
        **creds,
    )
    result = publish_all(settings, generated_at=T0 + timedelta(hours=9), in_stock=world["stock"])
    pid = result["publish_id"]
    assert result["invalidation"]
    batch = cloudfront.get_invalidation(DistributionId=dist, Id=result["invalidation"])
    assert batch["Invalidation"]["InvalidationBatch"]["Paths"]["Items"] == [
        "/shop1/recs/latest.json"
    ]
    keys = [k for k, _ in S3Store(settings).list("shop1/recs/")]
    # + popular.json, the manifest, latest.json, the slot's _publish.json and 404.json
    assert len(keys) == len(world["model"].user_ids) + 5
    assert "shop1/recs/404.json" in keys
    key = user_object_of(S3Store(settings), "shop1/", pid, layout.user_key(S3_SECRET, "user-7"))

    # The bucket is private (a CDN reads it through origin access): fetch presigned.
    def url(key: str) -> str:
        return s3.generate_presigned_url("get_object", {"Bucket": "recs-test", "Key": key})

    with urllib.request.urlopen(url(key)) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["Cache-Control"] == "public, max-age=60, must-revalidate"
        body = json.loads(gzip.decompress(r.read()))
    assert body == recs_for(settings, "user-7")[1]
    model = world["model"]
    allowed = np.array([str(i) not in world["stock"] for i in model.item_ids])
    expected, _ = model.recommend_rows(np.array([7]), 10, allowed)  # the shared ranking
    assert [i["item_id"] for i in body["items"]] == model.ids(expected)[0]
    with urllib.request.urlopen(url("shop1/recs/latest.json")) as r:
        assert "max-age=60" in r.headers["Cache-Control"]
    with urllib.request.urlopen(url("shop1/recs/404.json")) as r:  # CloudFront's error page
        assert json.loads(gzip.decompress(r.read())) == layout.NOT_FOUND_BODY
    assert upload_step(pid, settings=settings)["uploaded"] == 0  # idempotent on S3 too


def test_staged_scores_are_private_and_hold_no_user_id(world: dict[str, Any]) -> None:
    """Scores between the DAG's tasks go through the store, keyed by HMAC, never served."""
    settings, model = world["settings"], world["model"]
    scored = score_step(T0 + timedelta(hours=5), in_stock=world["stock"], settings=settings)
    store = LocalStore(settings.publish_dir)
    root = layout.staging_root("", scored["publish_id"])
    assert {k for k, _ in store.list(root)} == {f"{root}scores.npz", f"{root}meta.json"}
    with np.load(settings.publish_dir / root / "scores.npz", allow_pickle=False) as staged:
        assert set(staged.files) == {
            "keys",
            "item_ids",
            "idx",
            "scores",
            "pop_idx",
            "pop_scores",
            "control",
        }
        keys = [row.tobytes().hex() for row in staged["keys"]]
    secret = settings.publish_secret.get_secret_value()
    assert keys == [layout.user_key(secret, str(u)) for u in model.user_ids]
    meta = (settings.publish_dir / root / "meta.json").read_text()
    assert not any(str(u) in meta for u in model.user_ids)
    server, base = serve_in_background(settings)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/{root}meta.json")
        assert err.value.code == 404  # only recs/ is served, as the bucket policy says
    finally:
        server.shutdown()
        server.server_close()
    upload_step(scored["publish_id"], settings=settings)
    verify_step(scored["publish_id"], settings=settings)
    flip_step(scored["publish_id"], settings=settings)
    again = upload_step(scored["publish_id"], settings=settings)  # a cleared task, re-run
    assert again["uploaded"] == 0


@pytest.mark.parametrize("damage", ["truncated", "not_a_zip", "mixed", "meta", "no_scores"])
def test_a_damaged_stage_is_refused_with_a_clear_error(world: dict[str, Any], damage: str) -> None:
    settings = world["settings"]
    scored = score_step(T0 + timedelta(hours=6), in_stock=world["stock"], settings=settings)
    folder = settings.publish_dir / layout.staging_root("", scored["publish_id"])
    scores, meta = folder / "scores.npz", folder / "meta.json"
    if damage == "truncated":
        scores.write_bytes(scores.read_bytes()[:500])
    elif damage == "not_a_zip":
        scores.write_bytes(b"\x93NUMPY garbage")
    elif damage == "mixed":  # a retry that died between the scores and their metadata
        again = score_step(
            T0 + timedelta(hours=6), in_stock={}, settings=settings, version=world["version"]
        )
        assert again["publish_id"] == scored["publish_id"]
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "scores_sha256": "0" * 64}))
    elif damage == "meta":
        meta.write_text("{not json")
    else:
        scores.unlink()
    with pytest.raises(PublishError, match="re-run the score step"):
        upload_step(scored["publish_id"], settings=settings)
    assert current(settings)["publish_id"] == world["first"]["publish_id"]


def test_prune_skips_stray_folders_and_drops_abandoned_stages(world: dict[str, Any]) -> None:
    settings = world["settings"]
    store = LocalStore(settings.publish_dir)
    stray = "recs/v/0-manual-test/x.json"
    store.put(stray, b"{}", {})
    abandoned = score_step(T0 - timedelta(hours=3), in_stock=world["stock"], settings=settings)
    in_flight = score_step(T0 + timedelta(hours=8), in_stock=world["stock"], settings=settings)
    for hours in (1, 2):
        _publish(world, hours)  # keep=2: hour 0 is pruned along the way
    assert world["first"]["publish_id"] not in {p["publish_id"] for p in publishes(settings)}
    assert store.get(stray) == b"{}"  # not recflow's: neither listed nor deleted

    def staged(publish_id: str) -> bool:
        return bool(list(store.list(layout.staging_root("", publish_id))))

    assert not staged(abandoned["publish_id"])  # older than anything kept: given up
    assert not staged(world["first"]["publish_id"])  # pruned with its publish
    assert staged(in_flight["publish_id"])  # newer than the kept ones: may be in flight


def test_the_registered_pyfunc_loads_where_recflow_is_not_installed(
    world: dict[str, Any], tmp_path: Path
) -> None:
    settings, model = world["settings"], world["model"]
    known, unknown = predict_without_recflow(
        settings.tracking_uri,
        f"models:/{settings.model_name}/{world['version']}",
        {"user_id": ["user-3", "a-stranger"], "k": [5, 4]},
        tmp_path,
    )
    assert known["source"] == "als" and unknown["source"] == "popular"
    expected, _ = model.recommend_rows(np.array([3]), 5)  # the shared ranking
    assert known["item_ids"] == model.ids(expected)[0] and len(unknown["item_ids"]) == 4


# -- hardening: listing-derived ids, stray keys, the default secret ----------------------------


def test_prune_never_leaves_its_publishes_whatever_lies_in_the_bucket(
    world: dict[str, Any],
) -> None:
    """The reported bug: a stray key under recs/v/ made prune delete the data root. Only
    ids that publish_id_for makes are pruned; nothing else under recs/v/ is touched, and
    nothing outside the store ever is."""
    settings = world["settings"]
    root, bucket = settings.data_root, settings.publish_dir
    precious = [root / "lake" / "gold" / "part-0.parquet", root / "mlflow" / "mlflow.db.bak"]
    precious += [root / "feast" / "registry.db.bak", root / "bentoml" / "models" / "m.yaml"]
    for path in precious:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep")
    first = world["first"]["publish_id"]
    v = bucket / "recs" / "v"
    strays = [
        v / "20261128T000000Z-v1.bak" / "_manifest.json",  # someone's backup copy
        v / "20261128T010000Z-v1\n" / "x.json",  # "$" matched before a newline
        v / "20261128T020000Z-..",  # the old pattern took ".." for a version
    ]
    for path in strays:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((bucket / "recs" / "v" / first / "_manifest.json").read_bytes())
    (v / "20261128T030000Z-v1").symlink_to(root, target_is_directory=True)
    # A symlink inside a real publish: pruning removes the link, never what it points at.
    (v / first / "u" / "zz").mkdir(parents=True)
    (v / first / "u" / "zz" / "link.json").symlink_to(precious[0])

    for hours in (1, 2):
        _publish(world, hours)  # keep=2: the first publish is pruned

    assert all(path.read_text() == "keep" for path in precious)
    assert all(path.exists() for path in strays)
    assert (v / "20261128T030000Z-v1").is_symlink()
    listed = [p["publish_id"] for p in publishes(settings)]
    assert first not in listed and len(listed) == 2
    assert not list(LocalStore(bucket).list(layout.publish_root("", first)))


@pytest.mark.parametrize("key", ["recs/v/../x", "recs/v/..", "recs/./x", "recs//x", "a\\b"])
def test_the_local_store_refuses_keys_no_bucket_would_hold_as_plain_names(
    world: dict[str, Any], key: str
) -> None:
    from jobs.publish.storage import UnsafeKeyError

    store = LocalStore(world["settings"].publish_dir)
    before = sorted(k for k, _ in store.list(""))
    for call in (
        lambda: store.put(key, b"{}", {}),
        lambda: store.delete([key]),
        lambda: store.get(key),
    ):
        with pytest.raises(UnsafeKeyError):
            call()
    assert sorted(k for k, _ in store.list("")) == before


def _s3_settings(base: Settings, s3_server: str, bucket: str, **kw: Any) -> Settings:
    return load_settings(
        data_root=base.data_root,
        publish_target="s3",
        publish_bucket=bucket,
        publish_k=10,
        s3_endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        **kw,
    )


def test_prune_on_s3_leaves_stray_keys_alone(world: dict[str, Any], s3_server: str) -> None:
    settings = _s3_settings(
        world["settings"], s3_server, "recs-stray", publish_keep=1, publish_secret=S3_SECRET
    )
    store = S3Store(settings)
    store.client.create_bucket(Bucket="recs-stray")
    strays = [
        "recs/v/..",
        "recs/v/../x",
        "recs/v/20261128T000000Z-v1.bak/_manifest.json",
        "recs/v/20261128T010000Z-../_manifest.json",
        "recs/v/./y",
        "lake/gold/part-0.parquet",
    ]
    for key in strays:
        store.put(key, b"{}", {})
    first, second = (
        publish_all(
            settings, generated_at=T0 + timedelta(hours=h), in_stock=world["stock"], store=store
        )
        for h in (3, 4)
    )
    assert second["pruned"] == [first["publish_id"]]
    left = {k for k, _ in store.list("")}
    assert set(strays) <= left
    assert not [k for k in left if k.startswith(layout.publish_root("", first["publish_id"]))]


def test_publishing_to_s3_refuses_the_development_secret(
    world: dict[str, Any], s3_server: str
) -> None:
    from jobs.config import ConfigError

    settings = _s3_settings(world["settings"], s3_server, "recs-devsecret")
    store = S3Store(settings)
    store.client.create_bucket(Bucket="recs-devsecret")
    with pytest.raises(ConfigError, match="RECFLOW_PUBLISH_SECRET"):
        publish_all(settings, generated_at=T0 + timedelta(hours=5), in_stock=world["stock"])
    assert list(store.list("")) == []  # refused before anything was staged
    with pytest.raises(ConfigError, match="RECFLOW_PUBLISH_SECRET"):
        recs_for(settings, "user-1", store)


def test_control_users_get_the_popular_list_and_everyone_else_their_own(tmp_path: Path) -> None:
    """The published object of a control user is popular.json's list, marked control; a
    treatment user's is their personal list; the group is the service's decision too."""
    settings = load_settings(data_root=tmp_path / "var", publish_k=10, control_share=0.3)
    model = clustered_model()
    register_champion(settings, model, tmp_path / "work")
    publish_all(settings, generated_at=T0, in_stock={})
    _, popular = recs_for(settings, "somebody-we-never-saw")
    mask = control_mask([str(u) for u in model.user_ids], settings)
    assert 0 < mask.sum() < len(mask)  # both groups present (30 % of 120 users)
    for row, (user, control) in enumerate(zip(model.user_ids, mask, strict=True)):
        key, body = recs_for(settings, str(user))
        assert "/u/" in key
        if control:
            assert body["group"] == "control" and body["source"] == "popular"
            assert body["items"] == popular["items"]
        else:
            assert body["group"] == "treatment" and body["source"] == "als"
            idx, _ = model.recommend_rows(np.array([row]), 10, None)
            assert [i["item_id"] for i in body["items"]] == model.ids(idx)[0]


def _strip_control_flags(settings: Settings, publish_id: str) -> None:
    """Make the stage look like one from before the control group (no ``control`` array)."""
    import hashlib

    root = settings.publish_dir / layout.staging_root("", publish_id)
    with np.load(root / "scores.npz", allow_pickle=False) as staged:
        arrays = {k: staged[k] for k in staged.files if k != "control"}
    np.savez(root / "scores.npz", **arrays)
    meta = json.loads((root / "meta.json").read_text())
    meta["scores_sha256"] = hashlib.sha256((root / "scores.npz").read_bytes()).hexdigest()
    (root / "meta.json").write_text(json.dumps(meta))


def test_a_stage_without_control_flags_gets_them_at_upload(tmp_path: Path) -> None:
    """A stage from before the control group, uploaded with control_share > 0: control users
    still get the popular list (before the fix everyone was treatment), and a stage whose
    keys no longer match the model's users is refused with a clear error."""
    settings = load_settings(data_root=tmp_path / "var", publish_k=10, control_share=0.3)
    model = clustered_model()
    register_champion(settings, model, tmp_path / "work")
    scored = score_step(T0, in_stock={}, settings=settings)
    _strip_control_flags(settings, scored["publish_id"])
    upload_step(scored["publish_id"], settings=settings)
    mask = control_mask([str(u) for u in model.user_ids], settings)
    assert 0 < mask.sum() < len(mask)
    store = LocalStore(settings.publish_dir)
    secret = settings.publish_secret.get_secret_value()
    for user, control in zip(model.user_ids, mask, strict=True):
        key = _user_object(settings, scored["publish_id"], layout.user_key(secret, str(user)))
        body = json.loads(gzip.decompress(store.get(key)))
        assert body["group"] == ("control" if control else "treatment"), user

    other = load_settings(
        data_root=tmp_path / "var",
        publish_k=10,
        control_share=0.3,
        publish_secret="another-secret-0123456789abcdef",
    )
    again = score_step(T0 + timedelta(hours=1), in_stock={}, settings=settings)
    _strip_control_flags(settings, again["publish_id"])
    with pytest.raises(PublishError, match="stage the publish again"):
        upload_step(again["publish_id"], settings=other)
