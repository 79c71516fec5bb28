"""Erasing users from published lists: every retained publish, its stage and the CDN.

A person's list lives at ``recs/v/<publish_id>/u/<kk>/<key>.json`` in every publish kept
(``RECFLOW_PUBLISH_KEEP``), and their scores in each publish's private stage (keyed by
the same HMAC key), from which an upload can be re-run. Erasure deletes the object from
every publish, rewrites each stage without the key (so a re-run upload cannot bring the
object back), updates the manifest's shard digests and counts (so ``verify`` and a
rollback still accept the publish) and asks CloudFront to drop the cached paths. The
popular list is an aggregate and stays as it is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.config import Settings, secret_value
from jobs.publish import layout
from jobs.publish.steps import (
    _hex_keys,
    _load_stage,
    _stage,
    publishes,
    read_manifest,
)
from jobs.publish.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class PublishErasure:
    objects_deleted: int = 0
    stage_rows_removed: int = 0
    manifests_rewritten: int = 0
    paths: list[str] = field(default_factory=list)  # what the CDN must forget
    per_publish: dict[str, int] = field(default_factory=dict)


def user_keys(settings: Settings, user_ids: list[str]) -> dict[str, str]:
    """Each user's object key (the HMAC the CDN path uses)."""
    secret = settings.hmac_secret()
    return {u: layout.user_key(secret, u) for u in user_ids}


def erase_from_publishes(settings: Settings, store: ObjectStore, keys: list[str]) -> PublishErasure:
    """Delete the users' objects from every publish and stage; fix the manifests."""
    out = PublishErasure()
    prefix = settings.publish_prefix
    wanted = set(keys)
    for publish in publishes(settings, store):
        publish_id = publish["publish_id"]
        root = layout.publish_root(prefix, publish_id)
        object_keys = [layout.user_object_key(prefix, publish_id, k) for k in keys]
        present = [k for k in object_keys if store.md5(k) is not None]
        removed = store.delete(present) if present else 0
        out.objects_deleted += removed
        out.per_publish[publish_id] = removed
        out.paths.extend(f"/{k}" for k in object_keys)
        if publish["complete"] and present:
            _rewrite_manifest(
                settings, store, publish_id, root, {k.rsplit("/", 2)[-2] for k in present}
            )
            out.manifests_rewritten += 1
            out.paths.append(f"/{layout.manifest_key(prefix, publish_id)}")
    for publish_id in staged_ids(settings, store):
        out.stage_rows_removed += _erase_from_stage(settings, store, publish_id, wanted)
    return out


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
    """Restage a publish's scores without the keys; 0 when there is no stage or no such key."""
    root = layout.staging_root(settings.publish_prefix, publish_id)
    if store.get(f"{root}meta.json") is None:
        return 0
    meta, arrays = _load_stage(settings, store, publish_id)
    staged = _hex_keys(arrays["keys"])
    keep = np.fromiter((k not in keys for k in staged), dtype=bool, count=len(staged))
    removed = int((~keep).sum())
    if removed:
        for name in ("keys", "idx", "scores"):
            arrays[name] = arrays[name][keep]
        _stage(settings, store, publish_id, meta, arrays)
    return removed


def _rewrite_manifest(
    settings: Settings, store: ObjectStore, publish_id: str, root: str, shards: set[str]
) -> None:
    """Recompute the digests of the shards that lost objects, and the counts."""
    prefix = settings.publish_prefix
    manifest = read_manifest(store, prefix, publish_id)
    digests = layout.ShardDigest()
    for shard in sorted(shards):
        for key, md5 in store.list(f"{root}u/{shard}/"):
            digests.add(key, md5)
    recomputed = digests.as_dict()
    for shard in shards:
        if shard in recomputed:
            manifest["shards"][shard] = recomputed[shard]
        else:
            manifest["shards"].pop(shard, None)
    total = sum(s["objects"] for s in manifest["shards"].values())
    erased = manifest["counts"]["user_objects"] - total
    manifest["counts"]["user_objects"] = total
    manifest["counts"]["objects"] = total + 1
    manifest.setdefault("erasures", {"objects": 0})
    manifest["erasures"]["objects"] += erased
    manifest["erasures"]["last_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    key = layout.manifest_key(prefix, publish_id)
    store.put(key, layout.encode(manifest), layout.headers_for(key, settings.publish_cache_seconds))


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
    # CloudFront takes up to 3,000 paths per invalidation (wildcards apart); bigger erasures
    # are split, and every part is created before any id is returned.
    ids = []
    for start in range(0, len(paths), 3000):
        part = sorted(set(paths))[start : start + 3000]
        answer = client.create_invalidation(
            DistributionId=settings.cloudfront_distribution_id,
            InvalidationBatch={
                "Paths": {"Quantity": len(part), "Items": part},
                "CallerReference": f"{reference}-{start}",
            },
        )
        ids.append(answer["Invalidation"]["Id"])
    return ",".join(ids)


def still_published(settings: Settings, store: ObjectStore, keys: list[str]) -> list[str]:
    """Object keys of these users that some publish (or stage) still holds: for verification."""
    found: list[str] = []
    prefix = settings.publish_prefix
    wanted = set(keys)
    for publish in publishes(settings, store):
        publish_id = publish["publish_id"]
        for k in keys:
            key = layout.user_object_key(prefix, publish_id, k)
            if store.md5(key) is not None:
                found.append(key)
    for publish_id in staged_ids(settings, store):
        root = layout.staging_root(prefix, publish_id)
        if store.get(f"{root}meta.json") is not None:
            _, arrays = _load_stage(settings, store, publish_id)
            staged = set(_hex_keys(arrays["keys"])) & wanted
            found.extend(f"{root}scores.npz#{k}" for k in sorted(staged))
    return found


def summary(result: PublishErasure) -> dict[str, Any]:
    return {
        "objects_deleted": result.objects_deleted,
        "stage_rows_removed": result.stage_rows_removed,
        "manifests_rewritten": result.manifests_rewritten,
    }
