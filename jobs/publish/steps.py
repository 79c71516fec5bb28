"""Publishing: score every known user, upload one JSON each, verify, flip ``latest.json``.

Reads the champion from the MLflow registry and item stock from silver ``items``; writes
the objects of :mod:`jobs.publish.layout` to the configured store (:mod:`jobs.publish.storage`).

The steps are separate so the ``publish`` DAG can retry each one, and each is safe to
re-run:

1. ``score_step`` ranks every user (seen and out-of-stock items excluded) and stages the
   result in the object store under ``<prefix>_staging/<publish_id>/`` — private, outside
   ``recs/`` and so never served by the CDN, and holding HMAC keys rather than user ids —
   so the next task may run on another worker (XCom carries only the id);
2. ``upload_step`` turns the staged lists into gzip JSON objects in a slot that is not
   live (:mod:`jobs.publish.layout`), PUTting only objects whose bytes differ from what the
   slot holds (an unchanged list, or a re-run after a failure, costs no PUT) and deleting
   the slot's users this publish lacks; then ``popular.json`` and the manifest under the
   publish's own immutable prefix;
3. ``verify_step`` checks that the slot still belongs to the publish, lists it and checks
   every shard's object count and checksum against the manifest;
4. ``flip_step`` rewrites ``recs/latest.json`` — the pointer to the publish and its slot —
   after which clients see the new publish; nothing before this step is visible to them
   (they read the other slot);
5. ``prune_step`` deletes publishes beyond the newest ``RECFLOW_PUBLISH_KEEP`` (never the
   live one), ``invalidate_step`` asks CloudFront to drop its copy of ``latest.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import zipfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.config import Settings, get_settings, secret_value
from jobs.model.ranking import round_scores
from jobs.model.registry import TAG_GOLD_VERSION
from jobs.publish import bodies, catalog, layout
from jobs.publish.storage import ObjectStore, open_store

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pyspark.sql import SparkSession

    from jobs.model.artifact import RecModel

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """A publish that cannot go on (no champion, nothing staged, failed verification)."""


# -- 1. score ------------------------------------------------------------------------------


def read_stock(
    settings: Settings, spark: SparkSession
) -> tuple[dict[str, bool] | None, list[dict[str, Any]], int]:
    """``item_id -> in_stock`` from silver ``items``, its rows for the published catalog
    (:mod:`jobs.publish.catalog`) and the Delta version read (-1: no table)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from jobs import tables

    location = tables.path(settings, "items")
    if not DeltaTable.isDeltaTable(spark, location):
        return None, [], -1
    version = tables.version(spark, settings, "items")
    rows = [
        r.asDict()
        for r in spark.read.format("delta")
        .option("versionAsOf", version)
        .load(location)
        # Cut to what a card shows in Spark: a silver title may be a megabyte long.
        .select(
            "item_id",
            F.substring("title", 1, catalog.MAX_TEXT + 1).alias("title"),
            F.substring("category", 1, catalog.MAX_TEXT + 1).alias("category"),
            "price",
            "in_stock",
        )
        .collect()
    ]
    return {r["item_id"]: r["in_stock"] is not False for r in rows}, rows, version


def score_step(
    generated_at: datetime | None = None,
    version: str | int | None = None,
    in_stock: Mapping[str, bool] | None = None,
    spark: SparkSession | None = None,
    progress: bool = False,
    settings: Settings | None = None,
    store: ObjectStore | None = None,
    catalog_rows: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Rank every user of the champion (or ``version``) and stage the lists.

    Stock (and the catalog's rows) come from ``in_stock`` (and ``catalog_rows``) when
    given, else from the lake (Spark); a publish given stock but no rows has no catalog.
    The publish id is derived from ``generated_at`` (the DAG passes its run's date, so a
    retried run reuses the id) and the model version.
    """
    from jobs.model.registry import load_version

    settings = settings or get_settings()
    # Before the model and Spark are loaded: a refused secret is a configuration error
    # the operator fixes, not something a retry of this task can get past.
    settings.hmac_secret()
    t0 = time.perf_counter()
    found = _model_version(settings, version)
    model = load_version(settings, found.version)
    items_version = -1
    if in_stock is None:
        if spark is None:
            from jobs.spark import get_spark

            spark = get_spark(settings)
        in_stock, catalog_rows, items_version = read_stock(settings, spark)
    generated_at = (generated_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    publish_id = layout.publish_id_for(generated_at, found.version)
    scores, score_seconds = _rank_everyone(settings, model, in_stock, progress)
    meta = {
        "publish_id": publish_id,
        "generated_at": generated_at.isoformat().replace("+00:00", "Z"),
        "model": {
            "name": settings.model_name,
            "version": str(found.version),
            "run_id": found.run_id,
        },
        "k": settings.publish_k,
        "delta_versions": {
            "gold_interactions": int(found.tags.get(TAG_GOLD_VERSION, -1)),
            "silver_items": items_version,
        },
        "users": len(model.user_ids),
        "items_in_stock": scores.pop("items_in_stock"),
        # The differential-privacy budget the popular list was released under (in the
        # manifest and in popular.json, so a reader can see what was spent).
        "popular_privacy": model.public_budget,
    }
    card_bytes = None
    if catalog_rows is not None and len(model.item_ids) <= settings.publish_catalog_max_items:
        cards = catalog.cards(catalog_rows, [str(i) for i in model.item_ids], in_stock)
        card_bytes = layout.encode(catalog.catalog_body(meta, cards), settings.publish_gzip_level)
        meta["catalog_items"] = len(cards)
    elif catalog_rows is not None:
        log.info(
            "no catalog object: %d items is above RECFLOW_PUBLISH_CATALOG_MAX_ITEMS (%d)",
            len(model.item_ids),
            settings.publish_catalog_max_items,
        )
    _stage(settings, store or open_store(settings), publish_id, meta, scores, card_bytes)
    users_per_s = len(model.user_ids) / max(score_seconds, 1e-9)
    log.info(
        "scored %d users in %.2f s (%.0f users/s) for publish %s",
        len(model.user_ids),
        score_seconds,
        users_per_s,
        publish_id,
    )
    return {
        **meta,
        "score_seconds": round(score_seconds, 3),
        "users_per_second": round(users_per_s),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _model_version(settings: Settings, version: str | int | None) -> Any:
    """The registry entry to publish: ``version``, else whatever ``champion`` points at."""
    from jobs.model.registry import CHAMPION, alias_version, setup

    client = setup(settings)
    if version is not None:
        return client.get_model_version(settings.model_name, str(version))
    found = alias_version(client, settings.model_name, CHAMPION)
    if found is None:
        raise PublishError(
            f"no {CHAMPION!r} alias on {settings.model_name!r}: train a model first "
            "(`recflow train`) or publish a version explicitly"
        )
    return found


def _rank_everyone(
    settings: Settings,
    model: RecModel,
    in_stock: Mapping[str, bool] | None,
    progress: bool,
) -> tuple[dict[str, Any], float]:
    """Every user's top K and the popular list, as arrays to stage; and the scoring time.

    Users are staged by their HMAC object key, never by id: the staging area then holds
    nothing a reader could tie back to a person without the secret.
    """
    from jobs.model.control import control_mask
    from jobs.model.stock import stock_mask
    from jobs.publish.scoring import score_all

    allowed = stock_mask(model, in_stock)
    k = settings.publish_k
    bar = _bar(progress, len(model.user_ids), "scoring users", "user")
    started = time.perf_counter()
    idx, scores = score_all(
        model, k, allowed, block=settings.publish_block, progress=bar.update if bar else None
    )
    seconds = time.perf_counter() - started
    if bar:
        bar.close()
    pop_idx, pop_scores = model.popular_rows(np.array([-1]), k, allowed)
    secret = settings.hmac_secret()
    return {
        "keys": _binary_keys([layout.user_key(secret, str(u)) for u in model.user_ids]),
        # The control group (jobs.model.control, the service's decision too): staged as a
        # flag per user, since the stage holds object keys, never ids.
        "control": control_mask((str(u) for u in model.user_ids), settings),
        "item_ids": model.item_ids.astype(str),
        "idx": idx,
        "scores": scores,
        "pop_idx": pop_idx[0],
        "pop_scores": pop_scores[0],
        "items_in_stock": int(allowed.sum()) if allowed is not None else len(model.item_ids),
    }, seconds


# Staged objects are private working data: never cached, never served.
_STAGE_HEADERS = {"Content-Type": "application/octet-stream", "Cache-Control": "no-store"}


def _binary_keys(keys: list[str]) -> np.ndarray:
    """HMAC keys as 16 raw bytes each: a quarter of their size as 32-char numpy strings."""
    raw = b"".join(bytes.fromhex(k) for k in keys)
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(keys), layout.KEY_HEX // 2)


def _hex_keys(keys: np.ndarray) -> list[str]:
    return [row.tobytes().hex() for row in keys]


def _stage(
    settings: Settings,
    store: ObjectStore,
    publish_id: str,
    meta: dict[str, Any],
    arrays: dict[str, Any],
    card_bytes: bytes | None = None,
) -> None:
    """Scores first, metadata last: a stage is complete when ``meta.json`` names its scores.

    ``card_bytes`` (the encoded catalog object, uploaded as staged) go up before the
    metadata too, which names their SHA-256.

    A retry first removes the old ``meta.json``, so a failure half-way never pairs new
    scores with an earlier attempt's metadata; the metadata carries the scores' SHA-256,
    which the loader checks. The file goes up from disk (multipart on S3): a stage of
    tens of millions of users is larger than one PUT may be.
    """
    root = layout.staging_root(settings.publish_prefix, publish_id)
    store.delete([f"{root}meta.json"])
    with tempfile.TemporaryDirectory(prefix="recflow-stage-") as tmp:
        path = Path(tmp) / "scores.npz"
        np.savez(path, **arrays)
        store.put_file(f"{root}scores.npz", path, _STAGE_HEADERS)
        meta = {**meta, "scores_sha256": _sha256(path)}
    if card_bytes is not None:
        store.put(f"{root}catalog.json", card_bytes, _STAGE_HEADERS)
        meta["catalog_sha256"] = hashlib.sha256(card_bytes).hexdigest()
    store.put(f"{root}meta.json", json.dumps(meta, indent=2).encode(), _STAGE_HEADERS)


def _load_stage(
    settings: Settings, store: ObjectStore, publish_id: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The staged metadata and arrays, or a PublishError saying to re-run the score step."""
    root = layout.staging_root(settings.publish_prefix, publish_id)
    rerun = "re-run the score step"
    raw = store.get(f"{root}meta.json")
    if raw is None:
        raise PublishError(f"nothing staged for publish {publish_id} ({rerun})")
    try:
        meta = json.loads(raw)
        expected = meta.pop("scores_sha256")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PublishError(
            f"the stage of publish {publish_id} has bad metadata ({rerun})"
        ) from None
    with tempfile.TemporaryDirectory(prefix="recflow-stage-") as tmp:
        path = Path(tmp) / "scores.npz"
        if not store.get_file(f"{root}scores.npz", path):
            raise PublishError(f"the stage of publish {publish_id} has no scores ({rerun})")
        if _sha256(path) != expected:
            raise PublishError(
                f"the staged scores of publish {publish_id} are not the ones its metadata "
                f"names (a partial or mixed stage; {rerun})"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise PublishError(
                f"the stage of publish {publish_id} is corrupt ({rerun}): {exc}"
            ) from None
    missing = {"keys", "item_ids", "idx", "scores", "pop_idx", "pop_scores"} - set(arrays)
    if missing:
        raise PublishError(f"the stage of publish {publish_id} lacks {sorted(missing)} ({rerun})")
    return meta, arrays


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def drop_stage(settings: Settings, store: ObjectStore, publish_id: str) -> int:
    """Delete a publish's staged scores (when the publish is pruned).

    They are kept as long as the publish is, so its upload can be re-run at any time
    (Airflow's "clear" on one task); they hold what its objects hold, keyed the same way.
    """
    root = layout.staging_root(settings.publish_prefix, publish_id)
    return store.delete([key for key, _ in store.list(root) if key.startswith(root)])


# -- 2. upload -----------------------------------------------------------------------------


def upload_step(
    publish_id: str,
    store: ObjectStore | None = None,
    progress: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Upload every user's object into a slot that is not live, ``popular.json`` and the
    manifest (last).

    The slot is claimed first (its ``_publish.json`` names this publish), then every
    object whose bytes differ from what the slot holds is PUT — an unchanged list, or a
    retry after a failure, costs no PUT — and the users the slot held for an older
    publish and this one has not are deleted. None of it is visible before the flip:
    readers are on the live slot. The manifest, written last, marks the publish complete.
    """
    settings = settings or get_settings()
    store = store or open_store(settings)
    prefix = settings.publish_prefix
    live = current(settings, store) or {}
    if live.get("publish_id") == publish_id and live.get("slot") is not None:
        # Already flipped (a cleared DAG run, a manual re-run): readers are on its slot,
        # and bytes built again under other settings (gzip level, control group) would
        # change under them with no flip. It is complete: nothing to upload.
        log.info("publish %s is live in slot %s: not re-uploaded", publish_id, live["slot"])
        return {
            "publish_id": publish_id,
            "slot": live["slot"],
            "already_live": True,
            "objects": 0,
            "uploaded": 0,
            "skipped": 0,
            "deleted": 0,
            "user_bytes": 0,
            "mean_bytes_per_user": 0,
            "seconds": 0.0,
            "objects_per_second": 0,
            "puts_per_second": 0,
        }
    meta, staged = _load_stage(settings, store, publish_id)
    t0 = time.perf_counter()
    slot = _claim_slot(settings, store, publish_id)
    users = layout.users_root(prefix, publish_id, {"slot": slot})
    existing = dict(store.list(users))
    popular = _popular_body(meta, staged)
    keys = _hex_keys(staged["keys"])
    n_users = len(keys)
    digests = layout.ShardDigest()
    stats = {"uploaded": 0, "skipped": 0, "bytes": 0}
    constants = bodies.Constants(
        prefix=prefix,
        slot=slot,
        meta={k: meta[k] for k in ("publish_id", "generated_at", "model")},
        item_ids=staged["item_ids"],
        popular={k: v for k, v in popular.items() if k not in layout.PER_PUBLISH},
        level=settings.publish_gzip_level,
    )
    # A pool costs ~1 s to start: worth it only past a couple of blocks.
    workers = settings.publish_encode_workers if n_users >= 2 * bodies.BLOCK else 0
    bar = _bar(progress, n_users, f"uploading to {store.description}", "object")
    with _Uploader(
        store, settings.publish_workers, settings.publish_cache_seconds, stats, bar
    ) as up:
        control = control_flags(settings, meta, staged)
        parts = bodies.blocks(keys, staged, control)
        for block in bodies.encoded(constants, parts, workers):
            for key, data, md5 in block:
                digests.add(key, md5)
                stats["bytes"] += len(data)
                if existing.pop(key, None) == md5:
                    stats["skipped"] += 1
                    if bar:
                        bar.update(1)
                else:
                    up.put(key, data)
        up.put(
            layout.popular_key(prefix, publish_id),
            layout.encode(popular, settings.publish_gzip_level),
            count=False,
        )
        card_bytes = _staged_catalog(settings, store, publish_id, meta)
        if card_bytes is not None:
            up.put(layout.catalog_key(prefix, publish_id), card_bytes, count=False)
    # Users of the slot's previous publish that this one does not have (erased, or no
    # longer in the model): gone before the flip, so the manifest covers the whole slot.
    deleted = store.delete([key for key in existing if key.startswith(users)])
    manifest = _manifest(
        prefix, publish_id, meta, n_users, stats["bytes"], digests, popular, slot, settings
    )
    if card_bytes is not None:
        manifest["catalog"] = {
            "key": layout.catalog_key(prefix, publish_id),
            "md5": layout.md5_hex(card_bytes),
            "items": meta["catalog_items"],
        }
    mkey = layout.manifest_key(prefix, publish_id)
    store.put(
        mkey, layout.encode(manifest), layout.headers_for(mkey, settings.publish_cache_seconds)
    )
    seconds = time.perf_counter() - t0
    return {
        "publish_id": publish_id,
        "slot": slot,
        "objects": n_users + 2,
        "uploaded": stats["uploaded"],
        "skipped": stats["skipped"],
        "deleted": deleted,
        "user_bytes": stats["bytes"],
        "mean_bytes_per_user": manifest["counts"]["mean_bytes_per_user"],
        "seconds": round(seconds, 3),
        # Every user object dealt with (PUT or found unchanged) per second.
        "objects_per_second": round(n_users / max(seconds, 1e-9)),
        "puts_per_second": round(stats["uploaded"] / max(seconds, 1e-9)),
    }


def _staged_catalog(
    settings: Settings, store: ObjectStore, publish_id: str, meta: dict[str, Any]
) -> bytes | None:
    """The staged catalog object, checked against its metadata; None when it has none."""
    expected = meta.pop("catalog_sha256", None)
    if expected is None:
        return None
    root = layout.staging_root(settings.publish_prefix, publish_id)
    data = store.get(f"{root}catalog.json")
    if data is None or hashlib.sha256(data).hexdigest() != expected:
        raise PublishError(
            f"the staged catalog of publish {publish_id} is missing or not the one its "
            "metadata names (re-run the score step)"
        )
    return data


def slot_owner(store: ObjectStore, prefix: str, slot: int) -> str | None:
    """The publish a slot holds (or is being written for), None for an unused slot."""
    data = store.get(layout.slot_owner_key(prefix, slot))
    if data is None:
        return None
    try:
        owner = layout.decode(data).get("publish_id")
    except (ValueError, AttributeError):
        return None  # unreadable: treated as unused (the slot is rewritten whole anyway)
    return owner if layout.is_publish_id(owner) else None


def _claim_slot(settings: Settings, store: ObjectStore, publish_id: str) -> int:
    """The slot this publish writes into, claimed: never the live one.

    A re-run keeps its slot (the manifest's, or the one whose marker already names it);
    a new publish takes an unused slot, else the one holding the oldest publish. A re-run
    whose slot another publish has taken since and made live is refused: writing there
    would change what readers see before any flip.
    """
    prefix = settings.publish_prefix
    live = current(settings, store) or {}
    live_slot = live.get("slot")
    owners = {s: slot_owner(store, prefix, s) for s in range(settings.publish_slots)}
    data = store.get(layout.manifest_key(prefix, publish_id))
    mine = layout.decode(data).get("slot") if data is not None else None
    if mine is None:
        mine = next((s for s, owner in owners.items() if owner == publish_id), None)
    if mine is None:
        free = [s for s in owners if s != live_slot]
        mine = min(free, key=lambda s: (owners[s] is not None, owners[s] or ""))
    elif mine == live_slot and live.get("publish_id") != publish_id:
        raise PublishError(
            f"publish {publish_id}'s slot {mine} now holds the live publish "
            f"{live.get('publish_id')}: score and publish again instead of re-uploading"
        )
    key = layout.slot_owner_key(prefix, mine)
    owner = {"publish_id": publish_id, "slot": mine}
    store.put(key, layout.encode(owner), layout.headers_for(key, settings.publish_cache_seconds))
    return int(mine)


def _popular_body(meta: dict[str, Any], staged: Any) -> dict[str, Any]:
    """``popular.json``: the model's public (differentially private) list and its budget.

    Its scores are noisy user counts (``RecModel.popular_rows``); a stage from before the
    budget was recorded has no ``popular_privacy`` and its body no ``privacy`` field.
    """
    keep = staged["pop_idx"] >= 0
    items = [str(i) for i in staged["item_ids"][staged["pop_idx"][keep]]]
    body = layout.recs_body(meta, "popular", items, round_scores(staged["pop_scores"][keep]))
    if meta.get("popular_privacy"):
        body["privacy"] = meta["popular_privacy"]
    return body


def control_flags(settings: Settings, meta: dict[str, Any], staged: Any) -> np.ndarray:
    """Each staged user's control flag, in stage order.

    A stage from before the control group has no flags. Reading that as "everyone is
    treatment" while ``control_share`` > 0 would serve control users personal lists (the
    service would call them control, the CDN treatment) and bias the lift, so the flags
    are recomputed here from the staged model version's users, keyed the way the stage
    is (HMAC of the user id), with the same function the service uses. A staged key that
    no user of that version produces (the HMAC secret changed since staging) is refused
    with an error naming the remedy, never guessed.
    """
    keys = _hex_keys(staged["keys"])
    if "control" in staged:
        return np.asarray(staged["control"], dtype=bool)
    if settings.control_share <= 0:
        return np.zeros(len(keys), dtype=bool)  # no control group: everyone is treatment
    from jobs.model.control import control_mask
    from jobs.model.registry import load_version

    version = meta["model"]["version"]
    user_ids = [str(u) for u in load_version(settings, version).user_ids]
    secret = settings.hmac_secret()
    flag_of = dict(
        zip(
            (layout.user_key(secret, u) for u in user_ids),
            control_mask(user_ids, settings).tolist(),
            strict=True,
        )
    )
    unknown = sum(k not in flag_of for k in keys)
    if unknown:
        raise PublishError(
            f"publish {meta.get('publish_id')}: its stage has no control flags and {unknown} "
            f"staged users match no user of model version {version} (RECFLOW_PUBLISH_SECRET "
            "changed?): stage the publish again before uploading it with "
            "RECFLOW_CONTROL_SHARE > 0"
        )
    return np.array([flag_of[k] for k in keys], dtype=bool)


def _manifest(
    prefix: str,
    publish_id: str,
    meta: dict[str, Any],
    n_users: int,
    user_bytes: int,
    digests: layout.ShardDigest,
    popular: dict[str, Any],
    slot: int,
    settings: Settings,
) -> dict[str, Any]:
    return {
        "schema_version": layout.SCHEMA_VERSION,
        **meta,
        # Where the users' objects are (their bodies carry no publish id: the manifest and
        # the slot's _publish.json tie them to this publish).
        "slot": slot,
        "users": layout.users_root(prefix, publish_id, {"slot": slot}),
        "counts": {
            "user_objects": n_users,
            "objects": n_users + 1,
            "user_bytes": user_bytes,
            "mean_bytes_per_user": round(user_bytes / max(n_users, 1), 1),
        },
        "key_scheme": {"hmac": "sha256", "hex_chars": layout.KEY_HEX},
        "shards": digests.as_dict(),
        "popular": {
            "key": layout.popular_key(prefix, publish_id),
            "md5": layout.md5_hex(layout.encode(popular, settings.publish_gzip_level)),
        },
    }


class _Uploader:
    """A bounded thread pool of PUTs: at most a few batches in flight, errors re-raised.

    PUTs go to the pool in batches of ``BATCH`` (one future each): a future per object
    cost about as much as the local store's write itself (issue 17's profile).
    """

    BATCH = 32

    def __init__(
        self, store: ObjectStore, workers: int, cache: int, stats: dict[str, int], bar: Any
    ) -> None:
        self.store, self.cache, self.stats, self.bar = store, cache, stats, bar
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.pending: deque[tuple[Future[None], int]] = deque()
        self.batch: list[tuple[str, bytes, dict[str, str]]] = []
        self.limit = workers * 4

    def put(self, key: str, data: bytes, count: bool = True) -> None:
        self.batch.append((key, data, layout.headers_for(key, self.cache)))
        if count:
            self.stats["uploaded"] += 1
        if len(self.batch) >= self.BATCH:
            self._submit()

    def _submit(self) -> None:
        batch, self.batch = self.batch, []
        self.pending.append((self.pool.submit(self._put_all, batch), len(batch)))
        while len(self.pending) > self.limit:
            self._settle(*self.pending.popleft())

    def _put_all(self, batch: list[tuple[str, bytes, dict[str, str]]]) -> None:
        for key, data, headers in batch:
            self.store.put(key, data, headers)

    def _settle(self, future: Future[None], n: int) -> None:
        future.result()
        if self.bar:
            self.bar.update(n)

    def __enter__(self) -> _Uploader:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                if self.batch:
                    self._submit()
                while self.pending:
                    self._settle(*self.pending.popleft())
        finally:
            for future, _ in self.pending:
                future.cancel()
            self.pool.shutdown(wait=True)
            if self.bar:
                self.bar.close()


# -- 3. verify -----------------------------------------------------------------------------


def read_manifest(store: ObjectStore, prefix: str, publish_id: str) -> dict[str, Any]:
    data = store.get(layout.manifest_key(prefix, publish_id))
    if data is None:
        raise PublishError(f"publish {publish_id} has no manifest (incomplete or unknown)")
    return layout.decode(data)


def verify_step(
    publish_id: str, store: ObjectStore | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Every shard's object count and checksum as the manifest says, or PublishError."""
    settings = settings or get_settings()
    store = store or open_store(settings)
    prefix = settings.publish_prefix
    manifest = read_manifest(store, prefix, publish_id)
    slot = manifest.get("slot")
    if slot is not None and slot_owner(store, prefix, slot) != publish_id:
        raise PublishError(
            f"publish {publish_id} does not match its manifest: its slot {slot} now holds "
            f"publish {slot_owner(store, prefix, slot)} (a newer publish reused it)"
        )
    digests = layout.ShardDigest()
    n = 0
    for key, md5 in store.list(layout.users_root(prefix, publish_id, manifest)):
        digests.add(key, md5)
        n += 1
    found, expected = digests.as_dict(), manifest["shards"]
    bad = sorted(s for s in set(found) | set(expected) if found.get(s) != expected.get(s))
    popular = store.md5(manifest["popular"]["key"])
    cards = manifest.get("catalog")
    if cards is not None and store.md5(cards["key"]) != cards["md5"]:
        raise PublishError(
            f"publish {publish_id} does not match its manifest: catalog.json missing or different"
        )
    if bad or popular != manifest["popular"]["md5"]:
        raise PublishError(
            f"publish {publish_id} does not match its manifest: {n} user objects listed, "
            f"{manifest['counts']['user_objects']} expected; shards differing: "
            f"{', '.join(bad[:10]) or 'none'}; popular.json "
            f"{'ok' if popular == manifest['popular']['md5'] else 'missing or different'}"
        )
    return {"publish_id": publish_id, "user_objects": n, "shards": len(found)}


# -- 4. flip, 5. prune and invalidate -----------------------------------------------------------


def current(settings: Settings, store: ObjectStore | None = None) -> dict[str, Any] | None:
    """What ``recs/latest.json`` points at, or None before the first publish."""
    store = store or open_store(settings)
    data = store.get(layout.latest_key(settings.publish_prefix))
    return layout.decode(data) if data is not None else None


def flip_step(
    publish_id: str, store: ObjectStore | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Point ``recs/latest.json`` at a publish that has a manifest; returns both ids."""
    settings = settings or get_settings()
    store = store or open_store(settings)
    prefix = settings.publish_prefix
    manifest = read_manifest(store, prefix, publish_id)
    slot = manifest.get("slot")
    if slot is not None and slot_owner(store, prefix, slot) != publish_id:
        raise PublishError(f"publish {publish_id}'s slot {slot} now holds another publish")
    before = current(settings, store)
    pointer = {
        "schema_version": layout.SCHEMA_VERSION,
        "publish_id": publish_id,
        "root": layout.publish_root(prefix, publish_id),
        "users": f"{layout.users_root(prefix, publish_id, manifest)}{{kk}}/{{key}}.json",
        "slot": manifest.get("slot"),
        "popular": manifest["popular"]["key"],
        # The cards of the items lists name (jobs.publish.catalog); None: a page shows ids.
        "catalog": (manifest.get("catalog") or {}).get("key"),
        "manifest": layout.manifest_key(prefix, publish_id),
        "model": manifest["model"],
        "generated_at": manifest["generated_at"],
    }
    # The CDN's error page for keys the bucket lacks (same bytes every time), before the
    # pointer, so no client is sent to a publish before the page exists.
    missing = layout.not_found_key(prefix)
    store.put(
        missing,
        layout.encode(layout.NOT_FOUND_BODY),
        layout.headers_for(missing, settings.publish_cache_seconds),
    )
    key = layout.latest_key(prefix)
    store.put(key, layout.encode(pointer), layout.headers_for(key, settings.publish_cache_seconds))
    previous = before["publish_id"] if before else None
    log.info("recs/latest.json: %s -> %s", previous, publish_id)
    return {
        "publish_id": publish_id,
        "previous": previous,
        "model_version": manifest["model"]["version"],
    }


def user_object_of(store: ObjectStore, prefix: str, publish_id: str, key: str) -> str:
    """The object key of the user with HMAC ``key`` in a (complete) publish."""
    users = layout.users_root(prefix, publish_id, read_manifest(store, prefix, publish_id))
    return f"{users}{key[:2]}/{key}.json"


def publishes(settings: Settings, store: ObjectStore | None = None) -> list[dict[str, Any]]:
    """Every publish prefix in the store, oldest first, with its state."""
    store = store or open_store(settings)
    prefix = settings.publish_prefix
    live = current(settings, store)
    # Only keys that follow the layout (publish_id_of validates): a stray folder under
    # recs/v/ is not a publish, and recflow neither lists nor deletes what it did not write.
    ids = sorted(
        {
            pid
            for key, _ in store.list(f"{prefix}recs/v/")
            if (pid := layout.publish_id_of(key, prefix))
        }
    )
    out = []
    for pid in ids:
        data = store.get(layout.manifest_key(prefix, pid))
        manifest = layout.decode(data) if data else None
        out.append(
            {
                "publish_id": pid,
                "live": bool(live and live["publish_id"] == pid),
                "complete": manifest is not None,
                "model_version": manifest["model"]["version"] if manifest else None,
                "users": manifest["counts"]["user_objects"] if manifest else None,
                "slot": manifest.get("slot") if manifest else None,
            }
        )
    return out


def prune_step(
    store: ObjectStore | None = None, settings: Settings | None = None, dry_run: bool = False
) -> list[str]:
    """Delete publishes beyond the newest ``publish_keep``; the live one always stays.

    ``dry_run`` deletes nothing and returns what would go (``recflow retention --dry-run``).
    """
    settings = settings or get_settings()
    store = store or open_store(settings)
    prefix = settings.publish_prefix
    found = publishes(settings, store)
    keep = {p["publish_id"] for p in found[-settings.publish_keep :]}
    keep |= {p["publish_id"] for p in found if p["live"]}
    dropped = []
    for p in found:
        if p["publish_id"] in keep:
            continue
        if dry_run:
            dropped.append(p["publish_id"])
            continue
        # The stage first: should the object delete fail, the publish is still listed and
        # the next prune finishes the job; the other order could orphan the stage.
        drop_stage(settings, store, p["publish_id"])
        root = layout.publish_root(prefix, p["publish_id"])
        # Only keys under the publish's own prefix, whatever a store's listing returns.
        store.delete([key for key, _ in store.list(root) if key.startswith(root)])
        dropped.append(p["publish_id"])
    if dry_run:
        return dropped
    abandoned = _abandoned_stages(settings, store, {p["publish_id"] for p in found}, keep)
    for publish_id in abandoned:
        drop_stage(settings, store, publish_id)
    if dropped or abandoned:
        log.info("pruned publishes %s; abandoned stages %s", dropped, abandoned)
    return dropped


def _abandoned_stages(
    settings: Settings, store: ObjectStore, published: set[str], keep: set[str]
) -> list[str]:
    """Stages whose publish never uploaded an object and is older than every kept one.

    Publish ids sort by time, so such a stage belongs to a run that was given up (a score
    step whose upload never ran); a newer stage may be a publish in flight and stays.
    """
    if not keep:
        return []
    oldest_kept = min(keep)
    prefix = settings.publish_prefix
    staged = {
        pid
        for key, _ in store.list(f"{prefix}_staging/")
        if (pid := layout.staged_id_of(key, prefix))
    }
    return sorted(pid for pid in staged if pid not in published and pid < oldest_kept)


def invalidate_step(reference: str, settings: Settings | None = None) -> str | None:
    """Invalidate ``latest.json`` on the CloudFront distribution, when one is configured."""
    settings = settings or get_settings()
    if not settings.cloudfront_distribution_id:
        return None
    import boto3

    client = boto3.client(
        "cloudfront",
        endpoint_url=secret_value(settings.cloudfront_endpoint_url),
        region_name=settings.aws_region,
        aws_access_key_id=secret_value(settings.aws_access_key_id),
        aws_secret_access_key=secret_value(settings.aws_secret_access_key),
    )
    answer = client.create_invalidation(
        DistributionId=settings.cloudfront_distribution_id,
        InvalidationBatch={
            "Paths": {"Quantity": 1, "Items": [f"/{layout.latest_key(settings.publish_prefix)}"]},
            "CallerReference": reference,
        },
    )
    return answer["Invalidation"]["Id"]


# -- the whole thing -------------------------------------------------------------------------


def publish_all(
    settings: Settings,
    generated_at: datetime | None = None,
    version: str | int | None = None,
    in_stock: Mapping[str, bool] | None = None,
    spark: SparkSession | None = None,
    store: ObjectStore | None = None,
    progress: bool = False,
    catalog_rows: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """score → upload → verify → flip → prune → invalidate, as the DAG runs them."""
    store = store or open_store(settings)
    scored = score_step(
        generated_at, version, in_stock, spark, progress, settings, store, catalog_rows
    )
    pid = scored["publish_id"]
    uploaded = upload_step(pid, store, progress, settings)
    verified = verify_step(pid, store, settings)
    flipped = flip_step(pid, store, settings)
    pruned = prune_step(store, settings)
    invalidation = invalidate_step(f"{pid}-{time.time_ns()}", settings)
    return {
        "publish_id": pid,
        "score": scored,
        "upload": uploaded,
        "verify": verified,
        "flip": flipped,
        "pruned": pruned,
        "invalidation": invalidation,
        "target": store.description,
    }


def rollback(settings: Settings, publish_id: str, store: ObjectStore | None = None) -> dict:
    """Point ``latest.json`` back at an older (still kept, verified) publish."""
    store = store or open_store(settings)
    layout.check_publish_id(publish_id)
    verify_step(publish_id, store, settings)
    flipped = flip_step(publish_id, store, settings)
    flipped["invalidation"] = invalidate_step(f"rollback-{publish_id}-{time.time_ns()}", settings)
    return flipped


def recs_for(
    settings: Settings, user_id: str, store: ObjectStore | None = None
) -> tuple[str, dict[str, Any]]:
    """(object key, body) a client fetches for ``user_id``: their list, else popular."""
    secret = settings.hmac_secret()  # refused before any request, like score_step
    store = store or open_store(settings)
    live = current(settings, store)
    if live is None:
        raise PublishError("nothing published yet (run `recflow publish`)")
    key = layout.user_key(secret, user_id)
    user_key = live["users"].format(kk=key[:2], key=key)
    data = store.get(user_key)
    if data is not None:
        return user_key, layout.decode(data)
    data = store.get(live["popular"])
    if data is None:
        raise PublishError(f"live publish {live['publish_id']} has no popular.json")
    return live["popular"], layout.decode(data)


def _bar(enabled: bool, total: int, desc: str, unit: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True)


def build_bento_step(model_version: str, settings: Settings | None = None) -> dict[str, Any]:
    """The online service for the model just published: its Bento, tagged v<version>."""
    from dataclasses import asdict

    from jobs.serve.bento_build import import_and_build

    return asdict(import_and_build(settings or get_settings(), version=model_version))
