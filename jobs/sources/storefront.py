"""The storefront of the synthetic shop: live recommendations in the page, and drift.

Reads: ``recs/latest.json``, the users' list objects and ``popular.json`` of the live
publish — from the publish store (:mod:`jobs.publish.storage`, the bytes the CDN serves)
or over HTTP from the CDN stand-in (``RECFLOW_GEN_RECS_URL``) — and, for users without a
published list, the online service's ``/recommend`` when ``RECFLOW_GEN_SERVICE_URL`` is
set. Writes nothing itself: :func:`jobs.sources.shop.generate` writes the events.

**Reacting mode** (``recflow generate --react``). Each session's first
``RECFLOW_GEN_REC_SLOTS`` impression slots show the user's recommended list, in rank
order, instead of the generator's own pick. A known user's list is their published object
(keyed by :func:`jobs.subjects.user_key`, as the site's backend computes it); anyone
without one sees ``popular.json`` or the service's answer. Users click, add to cart and
buy those slots through exactly the affinity model of the organic ones (their hidden
taste against the item's, see :func:`jobs.sources.shop.simulate_day`), so a list that
matches the tastes better earns a higher click-through rate and a broken one a lower.
The events of a recommended slot and everything that follows it (click, view,
add-to-cart, purchase) carry the attribution fields of :data:`jobs.contracts.ATTRIBUTION_FIELDS`
— ``rec_source`` (``cdn`` or ``service``), ``publish_id``, ``model_version`` — plus
``position`` = the **1-based rank** in the shown list and ``request_id`` = the service
answer's id (None for a CDN list, which no request produced). Organic events carry no
attribution fields and keep exactly the plain mode's convention — ``position`` the
**0-based slot** on the page, ``request_id`` ``r<session_id>`` — so days generated with
``--react`` appended to plain days do not shift a single organic position. The two kinds
of ``position`` therefore overlap in value (rank 1 sits in slot 0); the gold table and
the rec-performance figures tell them apart by ``rec_source`` (null: organic), never by
position alone.

Users without a personal list who are shown ``popular.json`` get ``rec_source = cdn`` (the
CDN served it) and the publish's ``publish_id`` and ``model_version`` (popular.json is part
of that publish). That it was the popular fallback is not recorded per event: the
attribution contract (:data:`jobs.contracts.ATTRIBUTION_FIELDS`) has no field for it;
``_generator.json`` counts, per day, how many users saw each (``shown[day]["users"]``:
cdn, service, popular). A service answer's null ``model_version`` or ``request_id``
stays null in the events, never the string ``"None"``.

A published object's extra fields (such as a control group's ``"group": "control"``)
change nothing here: what is shown is shown. Day ``d`` stays a function of (seed, ``d``,
what was shown): the storefront replaces items after every random draw is made.

Damaged or partial objects — a truncated or corrupt gzip stream, JSON of the wrong shape,
a ``latest.json`` without ``users``/``popular`` or with a template that cannot be filled,
a connection cut short — are a :class:`StorefrontError` naming the key or URL, which the
CLI prints as one line. A 403 for a *user's* object counts as "no list" (see
:class:`ObjectForbidden`); for ``latest.json`` and ``popular.json`` it is an error.

**Drift** (``recflow generate --drift DAY``). From day ``DAY`` on, three things change at
once, all drawn from the seed alone (the same for every later day):

- tastes: a share ``RECFLOW_GEN_DRIFT_SHARE`` of users move their favourite categories
  along one cycle through all categories (every category maps to another one), both
  their hidden taste vector (its category-centroid part is replaced, its personal noise
  kept) and the category preference their browsing follows; the champion's lists,
  learnt on the old tastes, then fit those users worse — its CTR drops;
- activity: the moved users come 1.5 times as often (exploring a new interest), so the
  distribution of events per user moves;
- catalog mix: one trending category's items get ``RECFLOW_GEN_DRIFT_BOOST`` times their
  exposure, so item popularity and the category mix of impressions move.

The drift is recorded in ``_generator.json`` (day, share, boost, the category cycle and
the trending category) and kept on ``--append`` runs that do not name one, so appending
days after a drift gives what one long run would have.
"""

from __future__ import annotations

import http.client
import json
import string
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jobs.config import Settings
from jobs.contracts import REC_SOURCES
from jobs.publish import layout
from jobs.sources.shop import (
    CATEGORIES,
    CLICK_AFFINITY,
    CLICK_INTERCEPT,
    CLICK_POPULARITY,
    ShopSpec,
    World,
    user_id,
)

if TYPE_CHECKING:
    from jobs.model.artifact import RecModel

# Users whose tastes drift come this much more often (see the module docstring).
DRIFT_ACTIVITY = 1.5
HTTP_TIMEOUT_SECONDS = 10.0
# Concurrent object reads of a day's lists (S3 and the CDN answer in parallel).
FETCH_WORKERS = 8

Fetch = Callable[[str], bytes | None]


class StorefrontError(RuntimeError):
    """The storefront cannot show recommendations (nothing published, service down)."""


class ObjectForbidden(StorefrontError):
    """The CDN refused an object (403): for a user's list, the same as a missing one.

    CloudFront in front of a private S3 bucket whose origin access may not list the
    bucket (no ``s3:ListBucket``) answers 403, not 404, for a key that does not exist:
    S3 will not say whether it exists. A user without a list is the common case, so their
    403 means "no list"; for ``latest.json`` and ``popular.json`` it stays an error.
    """


# What a damaged object raises on its way from bytes to JSON: gzip's own errors
# (BadGzipFile is an OSError, a truncated stream an EOFError, a corrupt deflate block a
# zlib.error) and json's (ValueError, including UnicodeDecodeError; RecursionError for
# arrays nested thousands deep).
_DECODE_ERRORS = (OSError, EOFError, zlib.error, ValueError, RecursionError)


def _decode_object(data: bytes, what: str) -> dict[str, Any]:
    """A published JSON object from its (gzip) bytes, or StorefrontError naming ``what``."""
    try:
        body = layout.decode(data)
    except _DECODE_ERRORS as exc:
        raise StorefrontError(f"{what} is damaged (not gzip JSON): {exc!r}") from exc
    if not isinstance(body, dict):
        raise StorefrontError(f"{what} is not a JSON object but {type(body).__name__}")
    return body


def _text(body: dict[str, Any], name: str, what: str, required: bool = True) -> str | None:
    """A string field of a published body (an optional one may be absent or null)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise StorefrontError(f"{what}: {name!r} must be a non-empty string, got {value!r:.80}")
    return value


def _version(value: object, what: str) -> str | None:
    """A model version as events carry it: None stays None (never the string "None")."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise StorefrontError(f"{what}: the model version must be a string, got {value!r:.80}")
    return str(value)


def _model_version(body: dict[str, Any], what: str) -> str | None:
    """``model.version`` of a published body; the ``model`` object itself is optional."""
    model = body.get("model")
    if model is None:
        return None
    if not isinstance(model, dict):
        raise StorefrontError(f"{what}: 'model' must be an object, got {model!r:.80}")
    return _version(model.get("version"), what)


@dataclass(frozen=True)
class Attribution:
    """What produced a shown list: the fields its events carry."""

    rec_source: str
    publish_id: str | None
    model_version: str | None
    request_id: str | None = None

    def __post_init__(self) -> None:
        if self.rec_source not in REC_SOURCES:
            raise ValueError(f"rec_source {self.rec_source!r}: expected one of {REC_SOURCES}")


@dataclass
class Shown:
    """One day's recommended slots: per shop user, item indices and their attribution.

    ``items`` is (users, slots) of shop item indices, ``-1`` for an empty slot (a shorter
    list); ``attr`` indexes ``attributions`` per user, ``-1`` when nothing was shown.
    """

    items: np.ndarray
    attr: np.ndarray
    attributions: list[Attribution]


class Storefront(Protocol):
    """Something that decides what each active user is shown in the recommended slots."""

    def show(self, users: np.ndarray) -> Shown:
        """Lists for the given shop user indices (the users with a session today)."""
        ...

    def describe(self) -> dict[str, object]:
        """What was shown last (publish, model version), for ``_generator.json``."""
        ...


class _Collector:
    """Builds a :class:`Shown` user by user, interning equal attributions."""

    def __init__(self, n_users: int, slots: int) -> None:
        self.items = np.full((n_users, slots), -1, dtype=np.int64)
        self.attr = np.full(n_users, -1, dtype=np.int64)
        self.index: dict[Attribution, int] = {}

    def add(self, user: int, items: list[int], attribution: Attribution) -> None:
        items = items[: self.items.shape[1]]
        if not items:
            return  # an empty list shows nothing: those slots stay organic
        self.items[user, : len(items)] = items
        self.attr[user] = self.index.setdefault(attribution, len(self.index))

    def shown(self) -> Shown:
        return Shown(self.items, self.attr, list(self.index))


def item_index(world: World) -> dict[str, int]:
    """Shop item id → row of the world's item arrays."""
    return {str(i): n for n, i in enumerate(world.items["item_id"])}


# -- a model in memory (tests, benchmarks) -------------------------------------------------


@dataclass
class ModelStorefront:
    """Lists ranked in memory by a :class:`RecModel`, as its publish would show them.

    Known users get their top ``slots`` (seen items excluded, as published); the others
    the model's public popular list. Used by tests and benchmarks to put a model — a
    trained one, or one built from the world's true tastes — in front of the shoppers
    without publishing it.
    """

    model: RecModel
    world: World
    slots: int
    publish_id: str | None = None
    model_version: str | None = None
    rec_source: str = "cdn"
    _to_shop: np.ndarray = field(init=False, repr=False)
    _popular: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shop = item_index(self.world)
        self._to_shop = np.array([shop.get(str(i), -1) for i in self.model.item_ids])
        public = np.where(
            np.isfinite(self.model.public_popularity), self.model.public_popularity, -np.inf
        )
        order = np.argsort(-public, kind="stable")
        order = order[np.isfinite(public[order]) & (self._to_shop[order] >= 0)]
        self._popular = self._to_shop[order[: self.slots]].tolist()

    def show(self, users: np.ndarray) -> Shown:
        out = _Collector(len(self.world.user_vec), self.slots)
        attribution = Attribution(self.rec_source, self.publish_id, self.model_version)
        rows = np.array([self.model.user_index.get(user_id(int(u)), -1) for u in users])
        known = rows >= 0
        if known.any():
            idx, _ = self.model.recommend_rows(rows[known], self.slots)
            for user, row in zip(users[known], idx, strict=True):
                shop = self._to_shop[row[row >= 0]]
                out.add(int(user), shop[shop >= 0].tolist(), attribution)
        for user in users[~known]:
            out.add(int(user), self._popular, attribution)
        return out.shown()

    def describe(self) -> dict[str, object]:
        return {"publish_id": self.publish_id, "model_version": self.model_version}


# -- the live publish (the product's own path) -----------------------------------------------


def store_fetch(settings: Settings) -> Fetch:
    """Objects by key from the publish store (the local bucket or S3)."""
    from jobs.publish.storage import open_store

    store = open_store(settings)
    errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors = (*errors, BotoCoreError, ClientError)
    except ImportError:  # no boto3 installed: only the local store can be open
        pass

    def fetch(key: str) -> bytes | None:
        try:
            return store.get(key)
        except errors as exc:
            # A key the store refuses (UnsafeKeyError is a ValueError), a disk error, S3
            # down or denying: the store cannot give the object.
            raise StorefrontError(
                f"cannot read {key} from the publish store {store.description}: {exc}"
            ) from exc

    return fetch


def http_fetch(base_url: str) -> Fetch:
    """Objects by key from the CDN (stand-in) over HTTP: a 404 is a missing object.

    A 403 raises :class:`ObjectForbidden` (the caller decides whether it means missing);
    every other failure — refused or dropped connections, timeouts, a body cut short — is
    a :class:`StorefrontError` naming the URL.
    """
    base = base_url.rstrip("/")

    def fetch(key: str) -> bytes | None:
        url = f"{base}/{key}"
        try:
            request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as answer:
                return answer.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            kind = ObjectForbidden if exc.code == 403 else StorefrontError
            raise kind(f"CDN {base} answered {exc.code} for {url}") from exc
        except urllib.error.URLError as exc:
            raise StorefrontError(
                f"cannot reach the CDN at {base} (RECFLOW_GEN_RECS_URL) for {url}: {exc.reason}"
            ) from exc
        except (http.client.HTTPException, OSError, ValueError) as exc:
            # HTTPException: IncompleteRead, RemoteDisconnected, a garbled status line;
            # OSError: a timeout or reset while reading; ValueError: a URL urllib rejects.
            raise StorefrontError(
                f"the CDN at {base} (RECFLOW_GEN_RECS_URL) failed on {url}: {exc!r}"
            ) from exc

    return fetch


@dataclass(frozen=True)
class _Pointer:
    """``latest.json`` as the storefront uses it, checked field by field."""

    publish_id: str
    users: str  # the user object key template, with {kk} and {key}
    popular: str
    model_version: str | None
    where: str  # latest.json and where it was read, for errors

    def __post_init__(self) -> None:
        """Refuse a ``users`` template other than plain ``{kk}``/``{key}`` fields.

        Checked with the format parser rather than by trying it: a template may also name
        other fields (``{0}``, ``{user}``), reach into the key (``{key.x}``, ``{kk[9]}``),
        or pad it to gigabytes (``{key:>999999999}``); none of that is a key layout.
        """
        problem = None
        try:
            fields = [
                (name, spec, conversion)
                for _, name, spec, conversion in string.Formatter().parse(self.users)
                if name is not None
            ]
        except ValueError as exc:  # an unmatched brace
            problem = repr(exc)
        else:
            if any(n not in ("kk", "key") or s or c for n, s, c in fields):
                problem = "only the plain fields {kk} and {key} may appear"
            elif "key" not in {n for n, _, _ in fields}:
                problem = "{key} is missing (every user would share one object)"
        if problem:
            raise StorefrontError(
                f"{self.where}: 'users' {self.users!r:.80} is not a key template with {{kk}} "
                f"and {{key}}: {problem}"
            )

    def user_object(self, key: str) -> str:
        """The object key of a user's list: the template filled with their key."""
        return self.users.format(kk=key[:2], key=key)


class PublishedStorefront:
    """The live publish as the site shows it: ``latest.json`` → the user's object.

    ``latest.json`` is read again for every day, so a publish between two generated days
    is what the second one shows. Objects do not change while a publish is live, so each
    is fetched once and kept for later days of the same publish; a new publish empties
    the cache (its users' objects sit at keys an earlier publish used: issue 17's slots).
    """

    def __init__(
        self,
        settings: Settings,
        world: World,
        slots: int,
        fetch: Fetch | None = None,
        service_url: str | None = None,
    ) -> None:
        self.secret = settings.hmac_secret()
        self.latest = layout.latest_key(settings.publish_prefix)
        self.fetch = fetch or (
            http_fetch(settings.gen_recs_url) if settings.gen_recs_url else store_fetch(settings)
        )
        self.service_url = (service_url or settings.gen_service_url or "").rstrip("/") or None
        self.where = settings.gen_recs_url or str(settings.publish_dir)
        self.world, self.slots = world, slots
        self.shop = item_index(world)
        # Per object key, for the publish ``cached_for``; None: no such object.
        self.cache: dict[str, tuple[list[int], Attribution] | None] = {}
        self.cached_for: str | None = None
        self.last: dict[str, object] = {}

    def _live(self) -> _Pointer:
        data = self.fetch(self.latest)
        if data is None:
            raise StorefrontError(
                f"nothing published at {self.where} ({self.latest} is missing): the reacting "
                "shop shows the live recommendations; run `recflow publish` first, or "
                "generate without --react"
            )
        what = f"{self.latest} at {self.where}"
        body = _decode_object(data, what)
        return _Pointer(
            publish_id=str(_text(body, "publish_id", what)),
            users=str(_text(body, "users", what)),
            popular=str(_text(body, "popular", what)),
            model_version=_model_version(body, what),
            where=what,
        )

    def _list(self, body: dict[str, Any], what: str = "a list body") -> list[int]:
        """Shop item indices of a list body, in rank order (unknown ids skipped).

        ``items`` must be a list of objects with a string ``item_id`` and an integer
        ``rank``, as the publish writes them; anything else is a StorefrontError naming
        ``what`` (the object's key or the service).
        """
        items = body.get("items")
        if not isinstance(items, list):
            raise StorefrontError(f"{what}: 'items' must be a list, got {items!r:.80}")
        entries: list[tuple[int, str]] = []
        for entry in items:
            if not isinstance(entry, dict):
                raise StorefrontError(f"{what}: an item must be an object, got {entry!r:.80}")
            rank, item = entry.get("rank"), entry.get("item_id")
            if isinstance(rank, bool) or not isinstance(rank, int) or not isinstance(item, str):
                raise StorefrontError(
                    f"{what}: an item needs a string item_id and an integer rank, got {entry!r:.80}"
                )
            entries.append((rank, item))
        out: list[int] = []
        for _, item in sorted(entries, key=itemgetter(0)):
            found = self.shop.get(item, -1)
            if found >= 0:
                out.append(found)
                if len(out) == self.slots:
                    break
        return out

    def _read(self, key: str) -> tuple[list[int], Attribution] | None:
        """One published list object, decoded; None when there is no such object.

        A user's object carries no publish id (so an unchanged list keeps its bytes from
        one publish to the next): the live publish's, from ``latest.json``, stands in.
        """
        data = self.fetch(key)
        if data is None:
            return None
        what = f"{key} at {self.where}"
        body = _decode_object(data, what)
        publish_id = _text(body, "publish_id", what, required=False) or self.cached_for
        attribution = Attribution("cdn", publish_id, _model_version(body, what))
        return self._list(body, what), attribution

    def _read_user(self, key: str) -> tuple[list[int], Attribution] | None:
        """A user's list object; None when they have none (404, or 403: see ObjectForbidden)."""
        try:
            return self._read(key)
        except ObjectForbidden:
            # CloudFront over S3 without ListBucket: "forbidden" is how a missing key looks.
            return None

    def _object(self, key: str) -> tuple[list[int], Attribution] | None:
        if key not in self.cache:
            self.cache[key] = self._read(key)
        return self.cache[key]

    def _prefetch(self, keys: list[str]) -> None:
        """Fetch the objects not read yet, concurrently (the store or CDN is I/O-bound)."""
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if not missing:
            return
        with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
            for key, found in zip(missing, pool.map(self._read_user, missing), strict=True):
                self.cache[key] = found

    def _ask_service(self, uid: str, key: str) -> tuple[list[int], Attribution]:
        payload = json.dumps({"user_id": uid, "user_key": key, "k": self.slots}).encode()
        request = urllib.request.Request(
            f"{self.service_url}/recommend",
            data=payload,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as answer:
                body = json.load(answer)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # URLError (HTTPError included): refused or an error status; HTTPException and
            # OSError: a dropped connection, a timeout or a body cut short while reading;
            # ValueError: a body that is not JSON (or a URL urllib rejects).
            raise StorefrontError(
                f"the online service at {self.service_url} (RECFLOW_GEN_SERVICE_URL) did not "
                f"answer /recommend for a user without a published list: {exc!r}"
            ) from exc
        what = f"the online service at {self.service_url} answered /recommend off its schema"
        if not isinstance(body, dict):
            raise StorefrontError(f"{what}: not a JSON object but {type(body).__name__}")
        request_id = body.get("request_id")
        if request_id is not None and not isinstance(request_id, str):
            raise StorefrontError(f"{what}: request_id {request_id!r:.80} is not a string")
        # A null (or missing) version or request id stays None: never the string "None".
        attribution = Attribution(
            "service", None, _version(body.get("model_version"), what), request_id or None
        )
        return self._list(body, what), attribution

    def show(self, users: np.ndarray) -> Shown:
        live = self._live()
        if live.publish_id != self.cached_for:
            self.cache, self.cached_for = {}, live.publish_id
        popular = self._object(live.popular)
        if popular is None:
            raise StorefrontError(f"live publish {live.publish_id} has no {live.popular}")
        out = _Collector(len(self.world.user_vec), self.slots)
        served = {"cdn": 0, "service": 0, "popular": 0}
        uids = [user_id(int(u)) for u in users]
        keys = [layout.user_key(self.secret, uid) for uid in uids]
        objects = [live.user_object(key) for key in keys]
        self._prefetch(objects)
        for u, uid, key, obj in zip(users, uids, keys, objects, strict=True):
            found = self.cache[obj]
            if found is None and self.service_url:
                found = self._ask_service(uid, key)
                served["service"] += 1
            elif found is None:
                found = popular
                served["popular"] += 1
            else:
                served["cdn"] += 1
            out.add(int(u), *found)
        self.last = {
            "publish_id": live.publish_id,
            "model_version": live.model_version,
            "users": served,
        }
        return out.shown()

    def describe(self) -> dict[str, object]:
        return dict(self.last)


# -- drift -------------------------------------------------------------------------------------


def drift_world(spec: ShopSpec, world: World) -> tuple[World, dict[str, object]]:
    """The world from ``spec.drift_day`` on, and what changed (for ``_generator.json``)."""
    if world.centroids is None or world.user_fav is None or world.user_two is None:
        raise ValueError("drift needs a world from build_world (its centroids and favourites)")
    rng = np.random.default_rng([spec.seed, 4])
    n_users, n_cat = world.user_vec.shape[0], world.centroids.shape[0]
    # One cycle through every category: each maps to another one, none to itself.
    order = rng.permutation(n_cat)
    cycle = np.empty(n_cat, dtype=np.int64)
    cycle[order] = np.roll(order, -1)
    moved = rng.random(n_users) < spec.drift_share
    trending = int(rng.integers(n_cat))

    fav = np.where(moved[:, None], cycle[world.user_fav], world.user_fav)
    old_base = _taste_base(world.centroids, world.user_fav, world.user_two)
    new_base = _taste_base(world.centroids, fav, world.user_two)
    pref = np.full((n_users, n_cat), 0.04)
    pref[np.arange(n_users), fav[:, 0]] += 1.0
    pref[np.arange(n_users), fav[:, 1]] += np.where(world.user_two, 0.8, 0.0)
    pref /= pref.sum(axis=1, keepdims=True)
    pop = world.item_pop * np.where(world.item_cat == trending, spec.drift_boost, 1.0)
    drifted = replace(
        world,
        user_vec=world.user_vec - old_base + new_base,
        user_cat_pref=pref,
        user_activity=world.user_activity * np.where(moved, DRIFT_ACTIVITY, 1.0),
        item_pop=pop / pop.sum(),
        user_fav=fav,
    )
    cats = list(CATEGORIES)
    info: dict[str, object] = {
        "from_day": spec.drift_day,
        "share": spec.drift_share,
        "boost": spec.drift_boost,
        "moved_users": int(moved.sum()),
        "activity_factor": DRIFT_ACTIVITY,
        "category_cycle": {cats[c]: cats[int(cycle[c])] for c in range(n_cat)},
        "trending_category": cats[trending],
    }
    return drifted, info


def _taste_base(centroids: np.ndarray, fav: np.ndarray, two: np.ndarray) -> np.ndarray:
    """The category part of a taste vector, as build_world composes it."""
    return np.where(
        two[:, None], 0.5 * (centroids[fav[:, 0]] + centroids[fav[:, 1]]), centroids[fav[:, 0]]
    )


# -- reference models: the ceiling and the floors of what a recommender can earn ---------------


def reference_model(
    world: World, kind: str = "oracle", seed: int = 0, known: int | None = None
) -> RecModel:
    """A :class:`RecModel` over the shop's ids built from its hidden tastes, not from data.

    ``oracle`` ranks by exactly the click logit's user-item part (taste affinity plus the
    popularity term, :func:`jobs.sources.shop.simulate_day`): the best CTR a list can earn.
    ``shuffled`` is the oracle with its item rows permuted (a broken model: confident and
    wrong); ``popular`` gives everyone the items with the most expected interactions in
    the organic shop (exposure times mean click probability over users: what counting
    interactions converges to, the non-personal baseline). Benchmarks and tests put them
    in front of the shoppers to check that CTR tells them apart. ``known`` keeps only the
    first that many users (the others are new to the model: popular list or service).
    """
    from jobs.model.artifact import RecModel
    from jobs.model.ranking import Seen
    from jobs.sources.shop import item_id

    n_users, n_items = world.user_vec.shape[0], world.item_vec.shape[0]
    # The popularity term of the click logit, in units of the affinity term.
    bonus = (CLICK_POPULARITY / CLICK_AFFINITY) * np.log(world.item_pop * n_items)
    users = np.hstack([world.user_vec, np.ones((n_users, 1))])
    items = np.hstack([world.item_vec, bonus[:, None]])
    if kind == "shuffled":
        items = items[np.random.default_rng(seed).permutation(n_items)]
    elif kind == "popular":
        expected = expected_interactions(world)
        # Rank 1: every user's score is the item's expected interactions.
        users, items = np.ones((n_users, 1)), (expected / expected.max())[:, None]
    elif kind != "oracle":
        raise ValueError(f"reference model kind {kind!r}: expected oracle, shuffled or popular")
    pop = (items[:, 0] if kind == "popular" else world.item_pop).astype(np.float32)
    n_users = n_users if known is None else min(known, n_users)
    return RecModel(
        user_ids=np.array([user_id(u) for u in range(n_users)]),
        item_ids=np.array([item_id(i) for i in range(n_items)]),
        user_factors=users[:n_users],
        item_factors=items,
        popularity=pop,
        seen=Seen.from_lists([[] for _ in range(n_users)]),
        params={"reference": kind},
        # The true popularity released as is: no people behind it to protect.
        public_popularity=pop,
        public_budget={"mechanism": f"reference model ({kind})"},
    )


def expected_interactions(world: World) -> np.ndarray:
    """Per item: exposure times the mean click probability over all users, in O(n_items).

    The exact mean needs every user against every item (a users × items matrix: 4 GB for
    5,000 users and 100,000 items). The shop's tastes are a mixture instead: users share a
    favourite-category pair (at most n_cat² groups) and differ from the group's mean by
    small noise, so within a group the click logit of an item is close to Gaussian, and
    the mean of a logistic over a Gaussian is the probit approximation
    ``σ(m / sqrt(1 + π s² / 8))``. That costs one pass over the items per group, reads
    every user once, and ranks items as the exact mean does (Spearman > 0.999 on the
    shop's worlds, drifted or not; the values themselves are within about 10 %).
    """
    n_items = world.item_vec.shape[0]
    # The user-independent part of the click logit of simulate_day (position 0).
    base = CLICK_INTERCEPT + CLICK_POPULARITY * np.log(world.item_pop * n_items)
    if world.user_fav is not None and world.user_two is not None:
        second = np.where(world.user_two, world.user_fav[:, 1], -1)
        _, group = np.unique(
            np.stack([world.user_fav[:, 0], second], axis=1), axis=0, return_inverse=True
        )
        group = group.reshape(-1)
    else:  # a world not made by build_world: one Gaussian over all users
        group = np.zeros(world.user_vec.shape[0], dtype=np.int64)
    total = np.zeros(n_items)
    for g in np.unique(group):
        members = world.user_vec[group == g]
        centre = members.mean(axis=0)
        spread = members - centre
        cov = spread.T @ spread / len(members)  # n_factors × n_factors
        mean = base + CLICK_AFFINITY * (world.item_vec @ centre)
        var = CLICK_AFFINITY**2 * np.einsum("ij,jk,ik->i", world.item_vec, cov, world.item_vec)
        total += len(members) / (1.0 + np.exp(-mean / np.sqrt(1.0 + np.pi * var / 8.0)))
    return world.item_pop * total / max(1, world.user_vec.shape[0])
