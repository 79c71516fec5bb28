"""Clicks into Feast within a second: the stream worker behind ``recflow stream worker``.

Reads the events topic (its own consumer group, ``RECFLOW_KAFKA_FEATURES_GROUP``) and, for
a user it has not met since it started, their ``user_recent_items`` row in the online
store. Writes ``user_recent_items`` through the push source ``user_recent_items_push``.

Why the worker computes the same list as the batch, not a list of its own: the batch
materialization (hourly, ``jobs.features.export``) and the push write the same online row,
and a reader must not see it jump between two orderings. The batch rule over
``gold/interactions`` is: a user's items that have a positively weighted event, newest
``last_ts`` first, then larger summed ``weight``, then ``item_id``; the first
``RECFLOW_FEAST_RECENT_ITEMS``. The worker keeps, per user, each streamed item's newest
timestamp and summed weight and ranks them by that rule, ahead of the items the online row
already held (older than anything streamed: the stream is ahead of the batch). Events
count as silver counts them: the same parser and time window as the collector, no
``"consent": false`` event, nobody on the deny list.

Delivery is at least once: offsets are committed after the push, so a worker killed
between the two pushes the same events again on restart. That is harmless for this list
(the same item at the same instant keeps its place; only a tie-break weight doubles).

Where the two writers meet: the row's event timestamp is the newest streamed event. Redis
keeps the newer of two writes, so an hourly materialization (stamped with its run's end)
never hides a later click; SQLite (the local default) keeps the last write, so until the
user's next click it may show the batch list of the hour before.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobs.config import Settings
from jobs.features.definitions import TIMESTAMP_FIELD, USER_RECENT_ITEMS_PUSH
from jobs.ingest.validate import Rejected, parse_event
from jobs.stream.client import client_config

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)

# Streamed items remembered per user before the list is cut to its top (see prune).
MAX_STREAMED_ITEMS = 1000


@dataclass(frozen=True)
class Touch:
    """One event that counts as an interaction: who, what, when (ms) and its weight."""

    user_id: str
    item_id: str
    ts_ms: int
    weight: float


def touches(
    values: Iterable[bytes | None],
    settings: Settings,
    now: datetime,
    denied: Callable[[str], bool] = lambda _user: False,
) -> tuple[list[Touch], int]:
    """The events among ``values`` that gold would count, and how many others were skipped.

    Skipped: what silver quarantines (judged by the window of the hour the event lands
    in, as the collector does), ``"consent": false``, event types of weight 0
    (impressions) and users ``denied`` (their erasure is under way).
    """
    from jobs.stream.collector import live_window

    window = live_window(settings, now)
    weights = settings.event_weights
    out: list[Touch] = []
    skipped = 0
    for value in values:
        if value is None:  # a tombstone: nothing to count
            skipped += 1
            continue
        try:
            event = parse_event(value, window, settings.max_line_bytes)
        except Rejected:
            skipped += 1  # the landing consumer lands it; silver quarantines it with its reason
            continue
        weight = float(weights.get(str(event["event_type"]), 0.0))
        user = str(event["user_id"])
        if weight <= 0 or event.get("consent") is False or denied(user):
            skipped += 1
            continue
        out.append(Touch(user, str(event["item_id"]), int(event["ts_ms"]), weight))  # type: ignore[call-overload]
    return out, skipped


@dataclass
class _UserItems:
    seed: list[str] = field(default_factory=list)  # the online row's list when first met
    streamed: dict[str, list[float]] = field(default_factory=dict)  # item -> [ts_ms, weight]

    def ranked(self, n: int) -> list[str]:
        fresh = sorted(self.streamed, key=lambda i: (-self.streamed[i][0], -self.streamed[i][1], i))
        known = set(fresh)
        return [*fresh, *(i for i in self.seed if i not in known)][:n]

    def newest_ms(self) -> int:
        return int(max((v[0] for v in self.streamed.values()), default=0))

    def prune(self, n: int) -> None:
        """Bound the memory of one user: past ``MAX_STREAMED_ITEMS`` items, keep the top
        ``n`` only. Exact until then (a dropped item's weight would be missing from a later
        tie-break at the same millisecond); beyond, only such a user's ties may differ."""
        if len(self.streamed) > MAX_STREAMED_ITEMS:
            keep = set(self.ranked(n))
            self.streamed = {i: v for i, v in self.streamed.items() if i in keep}
        self.seed = self.seed[:n]


class RecentItems:
    """Each user's recent items as the batch would list them, for the users streamed.

    ``seed`` reads the online rows of users met for the first time (or again after they
    were evicted: at most ``capacity`` users are kept, least recently touched first out).
    """

    def __init__(
        self,
        n: int,
        capacity: int,
        seed: Callable[[list[str]], dict[str, list[str]]] = lambda users: {},
    ) -> None:
        self.n = n
        self.capacity = capacity
        self._seed = seed
        self._users: OrderedDict[str, _UserItems] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def apply(self, batch: Sequence[Touch]) -> dict[str, tuple[list[str], int]]:
        """Fold ``batch`` in; each touched user's new list and newest streamed ms."""
        new = sorted({t.user_id for t in batch if t.user_id not in self._users})
        if new:
            seeded = self._seed(new)
            for user in new:
                self._users[user] = _UserItems(seed=list(seeded.get(user) or [])[: self.n])
        touched: dict[str, _UserItems] = {}
        for t in batch:
            state = self._users[t.user_id]
            got = state.streamed.get(t.item_id)
            if got is None:
                state.streamed[t.item_id] = [t.ts_ms, t.weight]
            else:
                got[0] = max(got[0], t.ts_ms)
                got[1] += t.weight
            touched[t.user_id] = state
        out = {}
        for user, state in touched.items():
            state.prune(self.n)
            self._users.move_to_end(user)
            out[user] = (state.ranked(self.n), state.newest_ms())
        while len(self._users) > self.capacity:
            self._users.popitem(last=False)
        return out

    def forget(self, users: Iterable[str]) -> None:
        """Drop users (erased): a later event of theirs starts from the online row."""
        for user in users:
            self._users.pop(user, None)


def push_frame(lists: dict[str, tuple[list[str], int]]) -> pd.DataFrame:
    """The rows pushed to ``user_recent_items``: stamped with each user's newest event."""
    import pandas as pd

    users = sorted(lists)
    return pd.DataFrame(
        {
            "user_id": users,
            "recent_item_ids": [lists[u][0] for u in users],
            TIMESTAMP_FIELD: [datetime.fromtimestamp(lists[u][1] / 1000, UTC) for u in users],
        }
    )


def push(fs: FeatureStore, lists: dict[str, tuple[list[str], int]]) -> None:
    from feast.data_source import PushMode

    if lists:
        fs.push(USER_RECENT_ITEMS_PUSH, push_frame(lists), to=PushMode.ONLINE)


@dataclass
class WorkerStats:
    """What a worker run did; ``lag_ms`` holds append-to-push delays (broker clock)."""

    assigned: bool = False
    messages: int = 0
    touches: int = 0
    skipped: int = 0
    pushes: int = 0
    users_pushed: int = 0
    push_failures: int = 0
    lag_ms: list[float] = field(default_factory=list)
    # Lists folded in but not pushed yet (the online store failed): pushed on the retry.
    pending: dict[str, tuple[list[str], int]] | None = None


def _denied(settings: Settings) -> Callable[[str], bool]:
    """Whether a user is on the deny list (re-read when the file changes)."""
    from jobs.serve.access import PersonalAccess

    access = PersonalAccess.from_settings(settings)

    def denied(user_id: str) -> bool:
        try:
            listed = access.deny_list.current()
        except Exception as exc:  # noqa: BLE001 - fail closed, see below
            # A required deny list that cannot be read (storage not mounted): nobody's
            # event is pushed, as the service answers nobody personally meanwhile.
            log.warning("deny list unreadable, pushing nothing: %s", exc)
            return True
        return access.subject(user_id) in listed

    return denied


def run(
    settings: Settings,
    should_stop: Callable[[], bool],
    idle_stop: float | None = None,
    on_assigned: Callable[[], None] | None = None,
    fs: FeatureStore | None = None,
    stats: WorkerStats | None = None,
) -> WorkerStats:
    """Push each event's effect on its user's recent items until ``should_stop()`` (or
    ``idle_stop`` seconds without a message once assigned); returns what was done.

    A new consumer group starts at the end of the topic: what came before is the batch's
    (the online rows already hold it). A push that fails (the online store is down) is
    retried, with the offsets left uncommitted, until it succeeds or the worker stops.
    """
    from confluent_kafka import Consumer, KafkaException

    from jobs.features import definitions, online

    fs = fs or definitions.store(settings)
    stats = WorkerStats() if stats is None else stats  # a caller's, to watch progress
    state = RecentItems(
        settings.feast_recent_items,
        settings.stream_users_cached,
        seed=lambda users: online.recent_items(fs, users),
    )
    denied = _denied(settings)
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": settings.kafka_features_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
                "isolation.level": "read_committed",
            },
        )
    )

    def assign(c: Any, partitions: list[Any]) -> None:
        stats.assigned = True
        if on_assigned is not None:
            on_assigned()

    consumer.subscribe([settings.kafka_events_topic], on_assign=assign)
    last_message = time.monotonic()
    try:
        while not should_stop():
            batch = consumer.consume(1000, timeout=settings.stream_push_seconds)
            good = []
            for message in batch:
                error = message.error()
                if error is None:
                    good.append(message)
                elif error.fatal():
                    raise KafkaException(error)
                else:
                    log.warning("kafka: %s", error)  # transient: librdkafka retries by itself
            if not good:
                if not stats.assigned:
                    last_message = time.monotonic()
                elif idle_stop is not None and time.monotonic() - last_message > idle_stop:
                    break
                continue
            last_message = time.monotonic()
            found, skipped = touches((m.value() for m in good), settings, datetime.now(UTC), denied)
            while not _pushed(fs, state, found, stats):
                if should_stop():
                    return stats  # offsets uncommitted: a restart pushes these again
                time.sleep(1.0)
            now_ms = time.time() * 1000
            stats.lag_ms.extend(now_ms - m.timestamp()[1] for m in good)
            consumer.commit(asynchronous=True)
            stats.messages += len(good)
            stats.touches += len(found)
            stats.skipped += skipped
    finally:
        consumer.close()
    return stats


def _pushed(fs: FeatureStore, state: RecentItems, found: list[Touch], stats: WorkerStats) -> bool:
    """Fold ``found`` in and push the lists; False when the online store failed.

    ``found`` is folded in once: a failed seed read changes nothing, and after a failed
    push the same lists are pushed again (``stats.pending``).
    """
    try:
        if stats.pending is None:
            stats.pending = state.apply(found)
        push(fs, stats.pending)
    except Exception as exc:  # noqa: BLE001 - every store failure is retried alike
        # Any failure of the online store is retried the same way: the lists stay in
        # memory and the offsets stay uncommitted, so nothing is lost while it is down.
        log.warning("the online store failed, retrying: %s", exc)
        stats.push_failures += 1
        return False
    stats.pushes += 1 if stats.pending else 0
    stats.users_pushed += len(stats.pending)
    stats.pending = None
    return True
