"""The published object layout: keys, bodies and HTTP headers (DESIGN.md, "Published").

One publish is an immutable prefix for what is per publish, and a slot for its users::

    recs/s/<slot>/u/<kk>/<key>.json         one user's list (key = HMAC of the user id)
    recs/s/<slot>/_publish.json             which publish the slot holds (its owner)
    recs/v/<publish_id>/popular.json        for anyone without a personal list
    recs/v/<publish_id>/catalog.json        title, category, price, stock of the items
    recs/v/<publish_id>/_manifest.json      counts, per-shard checksums, slot, model, Delta versions
    recs/latest.json                        the live publish; written last

A user's body carries nothing per publish (no publish id, no timestamp), so a list that
did not change has the same bytes in the next publish. There are ``RECFLOW_PUBLISH_SLOTS``
slots (default 2); a publish writes into a slot that is not live, PUTs only the objects
whose bytes differ from what that slot already holds, deletes the users it no longer has,
and the flip of ``latest.json`` switches readers from one slot to the other at once
(issue 17). Publishes made before slots keep their users under
``recs/v/<publish_id>/u/`` and are still read, verified, erased and pruned as such.

The uploader, the verifier, ``recflow cdn`` and ``recflow recs`` all take keys, bodies
and headers from here, so the bucket and the stand-in CDN cannot disagree. Bodies are
gzip-compressed once, deterministically (no timestamp in the gzip header), so a re-run of
the same publish produces byte-identical objects and MD5s.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from datetime import UTC, datetime
from typing import Any

import orjson

from jobs.subjects import USER_KEY_HEX
from jobs.subjects import user_key as user_key  # re-exported: the publisher's name for it

SCHEMA_VERSION = 1
# The key of a user's object is their capability key, shared with the online service.
KEY_HEX = USER_KEY_HEX
IMMUTABLE = "public, max-age=31536000, immutable"
# Slots are numbered; a bound keeps a manifest's "slot" from naming arbitrary folders.
MAX_SLOTS = 16
# Exactly what publish_id_for makes (an MLflow version is a positive integer); used with
# fullmatch, since "$" would also accept a trailing newline, and [0-9], since \d also
# matches other scripts' digits ("٢٠٢٦…"). Ids read back from a bucket listing are checked
# against it before any key or path is built from them: a stray key such as
# "recs/v/../x" or "recs/v/20261129T060000Z-v1.bak/x" is not recflow's to delete.
PUBLISH_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-v[1-9][0-9]{0,18}", re.ASCII)


class LayoutError(ValueError):
    """A publish id or key that does not follow the layout."""


def publish_id_for(generated_at: datetime, model_version: str | int) -> str:
    """Sortable id: the publish's timestamp, then the model version it serves."""
    stamp = generated_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-v{model_version}"


def is_publish_id(publish_id: object) -> bool:
    """True for an id :func:`publish_id_for` could have made, and nothing else."""
    return isinstance(publish_id, str) and PUBLISH_ID.fullmatch(publish_id) is not None


def check_publish_id(publish_id: str) -> str:
    """``publish_id`` unchanged, or LayoutError: every key of a publish is built through here."""
    if not is_publish_id(publish_id):
        raise LayoutError(
            f"{publish_id!r} is not a publish id (like 20261129T110000Z-v3); "
            "see `recflow publishes`"
        )
    return publish_id


def publish_root(prefix: str, publish_id: str) -> str:
    return f"{prefix}recs/v/{check_publish_id(publish_id)}/"


def staging_root(prefix: str, publish_id: str) -> str:
    """Private working objects of one publish, outside ``recs/`` (the CDN serves only that)."""
    return f"{prefix}_staging/{check_publish_id(publish_id)}/"


def served_prefix(prefix: str) -> str:
    """Everything the CDN may serve lives under this key prefix."""
    return f"{prefix}recs/"


def user_object_key(prefix: str, publish_id: str, key: str) -> str:
    """A user's object in a publish made before slots (``recs/v/<publish_id>/u/…``)."""
    return f"{publish_root(prefix, publish_id)}u/{key[:2]}/{key}.json"


def slot_root(prefix: str, slot: int) -> str:
    """The folder of one slot: the user objects of whichever publish owns it."""
    if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < MAX_SLOTS:
        raise LayoutError(f"{slot!r} is not a slot number (0 to {MAX_SLOTS - 1})")
    return f"{prefix}recs/s/{slot}/"


def slot_user_key(prefix: str, slot: int, key: str) -> str:
    return f"{slot_root(prefix, slot)}u/{key[:2]}/{key}.json"


def slot_owner_key(prefix: str, slot: int) -> str:
    return f"{slot_root(prefix, slot)}_publish.json"


def users_root(prefix: str, publish_id: str, manifest: dict[str, Any] | None) -> str:
    """Where a publish's user objects live: its slot, or its own prefix (before slots)."""
    slot = (manifest or {}).get("slot")
    if slot is None:
        return f"{publish_root(prefix, publish_id)}u/"
    return f"{slot_root(prefix, slot)}u/"


def popular_key(prefix: str, publish_id: str) -> str:
    return f"{publish_root(prefix, publish_id)}popular.json"


def catalog_key(prefix: str, publish_id: str) -> str:
    """The cards of the items a publish's lists name (:mod:`jobs.publish.catalog`)."""
    return f"{publish_root(prefix, publish_id)}catalog.json"


def manifest_key(prefix: str, publish_id: str) -> str:
    return f"{publish_root(prefix, publish_id)}_manifest.json"


def latest_key(prefix: str) -> str:
    return f"{prefix}recs/latest.json"


# The body CloudFront answers for a key the bucket does not hold (infra/terraform/cdn.tf
# maps S3's 403 and 404 to it with status 404), as `recflow cdn` answers its own 404s.
NOT_FOUND_BODY = {"error": "no such key", "status": 404}


def not_found_key(prefix: str) -> str:
    return f"{prefix}recs/404.json"


def publish_id_of(key: str, prefix: str) -> str | None:
    """The publish id a listed key belongs to, or None when it is not a publish's key.

    Only ids that follow the layout count: whatever else lies under ``recs/v/`` (a
    hand-made folder, ``..``, a backup copy) was not written by recflow, and neither
    listing nor pruning may touch it.
    """
    return _listed_id(key, f"{prefix}recs/v/")


def staged_id_of(key: str, prefix: str) -> str | None:
    """The publish id a listed staging key belongs to, or None (as :func:`publish_id_of`)."""
    return _listed_id(key, f"{prefix}_staging/")


def _listed_id(key: str, root: str) -> str | None:
    rest = key.removeprefix(root)
    if rest == key or "/" not in rest:
        return None
    found = rest.split("/", 1)[0]
    return found if is_publish_id(found) else None


def headers_for(key: str, cache_seconds: int) -> dict[str, str]:
    """HTTP headers of an object: immutable for versioned keys, short for the pointer."""
    # latest.json and the slots' objects change from one publish to the next: a short
    # lifetime, then revalidation (an unchanged list keeps its ETag and answers 304).
    cache = (
        f"public, max-age={cache_seconds}, must-revalidate"
        if key.endswith(("recs/latest.json", "recs/404.json")) or "recs/s/" in key
        else IMMUTABLE
    )
    return {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Cache-Control": cache,
    }


# gzip level of every object. Measured on 50-item lists (issue 17): level 6 costs ~1.6x
# the time of level 3 for ~2 % fewer bytes; PUTs, not bytes, are what a publish pays for.
GZIP_LEVEL = 3


def encode(body: dict[str, Any], level: int = GZIP_LEVEL) -> bytes:
    """Compact JSON (orjson: ~6x faster than ``json``), gzip-compressed with a fixed header
    so equal bodies give equal bytes."""
    try:
        raw = orjson.dumps(body)
    except TypeError:
        # orjson refuses integers beyond 64 bits (and some types json takes); what
        # publishing writes never holds them, other callers' bodies may (ASCII-escaped).
        import json

        raw = json.dumps(body, separators=(",", ":")).encode()
    return gzip_bytes(raw, level)


def gzip_bytes(raw: bytes, level: int = GZIP_LEVEL) -> bytes:
    """The gzip member of ``raw`` with mtime 0 and no file name: deterministic bytes."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)
    return packer.compress(raw) + packer.flush()


def decode(data: bytes) -> dict[str, Any]:
    return orjson.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def md5_hex(data: bytes) -> str:
    """The checksum S3 reports as ETag for a single-part PUT."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def user_body(
    meta: dict[str, Any], source: str, item_ids: list[str], scores: list[float]
) -> dict[str, Any]:
    """One user's list as clients read it: no user id, and nothing that changes with every
    publish (no publish id, no timestamp: ``latest.json`` names those), so an unchanged list
    has unchanged bytes and its PUT is skipped."""
    body = recs_body(meta, source, item_ids, scores)
    for field in PER_PUBLISH:
        body.pop(field)
    return body


# Fields of popular.json that a user's object leaves out (they change with every publish).
PER_PUBLISH = ("publish_id", "generated_at")


def recs_body(
    meta: dict[str, Any], source: str, item_ids: list[str], scores: list[float]
) -> dict[str, Any]:
    """One list as clients read it: no user id anywhere, ranks from 1.

    ``scores`` should already be Python floats rounded to 6 decimals (the uploader
    rounds a whole block at once with numpy; per-item rounding dominated the cost).
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "publish_id": meta["publish_id"],
        "model": meta["model"],
        "generated_at": meta["generated_at"],
        "source": source,
        "items": [
            {"item_id": item, "rank": rank, "score": score}
            for rank, (item, score) in enumerate(zip(item_ids, scores, strict=True), start=1)
        ],
    }


class ShardDigest:
    """Per-shard (``kk``) object count and SHA-256 over ``key md5`` lines in key order.

    The uploader feeds objects in key order; the verifier feeds what the bucket lists (S3
    lists in key order), so equal digests mean every object is there with its bytes.
    """

    def __init__(self) -> None:
        self._shards: dict[str, tuple[int, Any]] = {}

    def add(self, key: str, md5: str) -> None:
        shard = key.rsplit("/", 2)[-2]
        count, digest = self._shards.get(shard, (0, hashlib.sha256()))
        digest.update(f"{key.rsplit('/', 1)[-1]} {md5}\n".encode())
        self._shards[shard] = (count + 1, digest)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {
            shard: {"objects": count, "sha256": digest.hexdigest()}
            for shard, (count, digest) in sorted(self._shards.items())
        }
