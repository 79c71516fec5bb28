"""Erasing users from published lists: every retained publish, its stage and the CDN.

A person's list lives at ``recs/s/<slot>/u/<kk>/<key>.json`` in every slot (one per
recent publish, :mod:`jobs.publish.layout`), at ``recs/v/<publish_id>/u/…`` in publishes
made before slots, and their scores in each publish's private stage (keyed by the same
HMAC key), from which an upload can be re-run. Erasure deletes the object from every
slot and every publish, rewrites each stage without the key (so a re-run upload cannot
bring the object back), updates the manifest's shard digests and counts of each publish
whose users are where it says (so ``verify`` and a rollback still accept it) and asks
CloudFront to drop the cached paths. The popular list is an aggregate and stays as it is.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.config import Settings, secret_value
from jobs.publish import layout
from jobs.publish.steps import (
    PublishError,
    _hex_keys,
    _load_stage,
    _stage,
    publishes,
    read_manifest,
    slot_owner,
)
from jobs.publish.storage import ObjectStore

log = logging.getLogger(__name__)
MAX_INVALIDATION_PATHS = 1_000


@dataclass
class PublishErasure:
    objects_deleted: int = 0
    stage_rows_removed: int = 0
    manifests_rewritten: int = 0
    paths: list[str] = field(default_factory=list)  # what the CDN must forget


def user_keys(settings: Settings, user_ids: list[str]) -> dict[str, str]:
    """Each user's object key (the HMAC the CDN path uses)."""
    secret = settings.hmac_secret()
    return {u: layout.user_key(secret, u) for u in user_ids}


def erase_from_publishes(settings: Settings, store: ObjectStore, keys: list[str]) -> PublishErasure:
    """Delete the users' objects from every publish and stage; fix the manifests.

    Idempotent, also after a crash half-way: the manifest of every complete publish is
    checked against what its touched shards hold now (not only when this run deleted
    something), so a run killed between the deletes and the manifest leaves nothing a
    rerun does not repair.
    """
    out = PublishErasure()
    prefix = settings.publish_prefix
    wanted = set(keys)
    shards = {k[:2] for k in keys}
    found = publishes(settings, store)
    for slot in slots_in_use(settings, found, store):
        object_keys = [layout.slot_user_key(prefix, slot, k) for k in keys]
        present = [k for k in object_keys if store.md5(k) is not None]
        out.objects_deleted += store.delete(present) if present else 0
        out.paths.extend(f"/{k}" for k in object_keys)
    for publish in found:
        publish_id = publish["publish_id"]
        if publish["slot"] is None:  # a publish from before slots: its own users
            object_keys = [layout.user_object_key(prefix, publish_id, k) for k in keys]
            present = [k for k in object_keys if store.md5(k) is not None]
            out.objects_deleted += store.delete(present) if present else 0
            out.paths.extend(f"/{k}" for k in object_keys)
        elif slot_owner(store, prefix, publish["slot"]) != publish_id:
            continue  # its slot holds a newer publish: it cannot be verified or rolled back to
        if publish["complete"]:
            out.paths.append(f"/{layout.manifest_key(prefix, publish_id)}")
            if _fix_manifest(settings, store, publish_id, shards):
                out.manifests_rewritten += 1
    for publish_id in staged_ids(settings, store):
        out.stage_rows_removed += _erase_from_stage(settings, store, publish_id, wanted)
    return out


# The most slots RECFLOW_PUBLISH_SLOTS allows (jobs.config): any of them may hold lists.
MAX_SLOTS = 16


def slots_in_use(
    settings: Settings, found: list[dict[str, Any]], store: ObjectStore | None = None
) -> list[int]:
    """Every slot that may hold lists: the configured ones, any a listed publish names, and
    (with ``store``) any that has an owner marker. ``RECFLOW_PUBLISH_SLOTS`` (or the keep
    it defaults to) may have been lowered since a slot was last written, and the publish
    that owned it pruned: its users' objects are still served and must be found by an
    erasure (one small GET per possible slot)."""
    named = {p["slot"] for p in found if p["slot"] is not None}
    slots = set(range(settings.publish_slots)) | named
    if store is not None:
        prefix = settings.publish_prefix
        # Any marker, even an unreadable one: a slot is searched whenever it may be used.
        slots |= {n for n in range(MAX_SLOTS) if store.md5(layout.slot_owner_key(prefix, n))}
    return sorted(slots)


def staged_ids(settings: Settings, store: ObjectStore) -> list[str]:
    """Publish ids that have a stage (published, in flight or abandoned)."""
    prefix = settings.publish_prefix
    return sorted(
        {
            pid
            for key, _ in store.list(f"{prefix}_staging/")
            if (pid := layout.staged_id_of(key, prefix))
        }
    )


def _erase_from_stage(
    settings: Settings, store: ObjectStore, publish_id: str, keys: set[str]
) -> int:
    """Restage a publish's scores without the keys; rows removed (0: no stage, no such key).

    A stage that cannot be read (scores without metadata after a crash in ``_stage``, or
    damaged) is deleted whole: it cannot be searched, so it cannot be kept, and the score
    step rebuilds a stage on demand.
    """
    root = layout.staging_root(settings.publish_prefix, publish_id)
    if store.get(f"{root}meta.json") is None:
        return _drop_unreadable(store, root, "scores without metadata")
    try:
        meta, arrays = _load_stage(settings, store, publish_id)
    except PublishError as exc:
        return _drop_unreadable(store, root, str(exc))
    staged = _hex_keys(arrays["keys"])
    keep = np.fromiter((k not in keys for k in staged), dtype=bool, count=len(staged))
    removed = int((~keep).sum())
    if removed:
        # Every per-user array, the control group's flags (issue 15) included.
        for name in ("keys", "idx", "scores", "control"):
            if name in arrays:
                arrays[name] = arrays[name][keep]
        _stage(settings, store, publish_id, meta, arrays)
    return removed


def _drop_unreadable(store: ObjectStore, root: str, why: str) -> int:
    leftovers = [key for key, _ in store.list(root) if key.startswith(root)]
    if leftovers:
        log.warning("stage %s cannot be searched (%s): deleted", root, why)
        store.delete(leftovers)
    return 0


def _fix_manifest(
    settings: Settings, store: ObjectStore, publish_id: str, shards: set[str]
) -> bool:
    """Bring the digests of ``shards`` and the counts in line with the bucket; True if changed."""
    prefix = settings.publish_prefix
    manifest = read_manifest(store, prefix, publish_id)
    users = layout.users_root(prefix, publish_id, manifest)
    digests = layout.ShardDigest()
    for shard in sorted(shards):
        for key, md5 in store.list(f"{users}{shard}/"):
            digests.add(key, md5)
    recomputed = digests.as_dict()
    before = {shard: manifest["shards"].get(shard) for shard in shards}
    after = {shard: recomputed.get(shard) for shard in shards}
    if before == after:
        return False
    for shard, value in after.items():
        if value is None:
            manifest["shards"].pop(shard, None)
        else:
            manifest["shards"][shard] = value
    total = sum(s["objects"] for s in manifest["shards"].values())
    erased = manifest["counts"]["user_objects"] - total
    manifest["counts"]["user_objects"] = total
    manifest["counts"]["objects"] = total + 1
    manifest.setdefault("erasures", {"objects": 0})
    manifest["erasures"]["objects"] += erased
    manifest["erasures"]["last_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    key = layout.manifest_key(prefix, publish_id)
    store.put(key, layout.encode(manifest), layout.headers_for(key, settings.publish_cache_seconds))
    return True


def invalidate(settings: Settings, paths: list[str], reference: str) -> str | None:
    """One CloudFront invalidation for the erased paths (None when no distribution is set)."""
    if not settings.cloudfront_distribution_id or not paths:
        return None
    import boto3

    client = boto3.client(
        "cloudfront",
        endpoint_url=secret_value(settings.cloudfront_endpoint_url),
        region_name=settings.aws_region,
        aws_access_key_id=secret_value(settings.aws_access_key_id),
        aws_secret_access_key=secret_value(settings.aws_secret_access_key),
    )
    paths = sorted(set(paths))
    if len(paths) > MAX_INVALIDATION_PATHS:
        # CloudFront allows 3,000 file paths in progress per distribution (and bills each):
        # a big erasure invalidates each publish's user objects by one wildcard instead.
        wild = {p.rsplit("/u/", 1)[0] + "/u/*" for p in paths if "/u/" in p}
        paths = sorted(wild | {p for p in paths if "/u/" not in p})
    # The reference names the run and the paths: a retry with the same paths is the same
    # invalidation (CloudFront answers it again), one with other paths a new one.
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
    answer = client.create_invalidation(
        DistributionId=settings.cloudfront_distribution_id,
        InvalidationBatch={
            "Paths": {"Quantity": len(paths), "Items": paths},
            "CallerReference": f"{reference}-{digest}"[:128],
        },
    )
    return str(answer["Invalidation"]["Id"])


def still_published(settings: Settings, store: ObjectStore, keys: list[str]) -> list[str]:
    """Where these users' lists remain (publish and stage ids with counts, never the keys:
    a key is what the CDN and the service accept as proof, so it must not reach a log)."""
    found: list[str] = []
    prefix = settings.publish_prefix
    wanted = set(keys)
    listed = publishes(settings, store)
    for slot in slots_in_use(settings, listed, store):
        n = sum(store.md5(layout.slot_user_key(prefix, slot, k)) is not None for k in keys)
        if n:
            found.append(f"slot {slot}: {n} objects")
    for publish in listed:
        publish_id = publish["publish_id"]
        n = sum(store.md5(layout.user_object_key(prefix, publish_id, k)) is not None for k in keys)
        if n:
            found.append(f"publish {publish_id}: {n} objects")
    for publish_id in staged_ids(settings, store):
        root = layout.staging_root(prefix, publish_id)
        if store.get(f"{root}meta.json") is None:
            found.append(f"stage {publish_id}: scores without metadata (unsearchable)")
            continue
        try:
            _, arrays = _load_stage(settings, store, publish_id)
        except PublishError:
            found.append(f"stage {publish_id}: unreadable (unsearchable)")
            continue
        n = len(set(_hex_keys(arrays["keys"])) & wanted)
        if n:
            found.append(f"stage {publish_id}: {n} rows")
    return found
