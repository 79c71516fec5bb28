"""Clicks into Feast within a second: the stream worker behind ``recflow stream worker``.

Reads the events topic (its own consumer group, ``RECFLOW_KAFKA_FEATURES_GROUP``), the
touched users' ``user_recent_items`` rows in the online store, the deny list and the
consent withdrawals (``privacy/consent``, through delta-rs). Writes ``user_recent_items``
through the push source ``user_recent_items_push``.

Why the worker computes the batch's list, not a list of its own: the hourly
materialization (``jobs.features.export``) and the push write the same online row, and a
reader must not see it jump between two orderings. The batch rule over
``gold/interactions`` is: a user's items that have a positively weighted event, newest
``last_ts`` first, then larger summed ``weight``, then ``item_id``; the first
``RECFLOW_FEAST_RECENT_ITEMS``, with each item's newest time beside it
(``recent_item_ts``). For each batch of events the worker reads the touched users' rows
again and ranks, by that rule, the union of the row's items (with their times) and the
items it streamed for the user (it remembers those, so a materialization that overwrote
a push on SQLite does not make them vanish). Only the summed weight of an item the row
already held is unknown to it, which matters for two items touched in the same
millisecond only. Events count as silver counts them: the same parser and time window as
the collector, no ``"consent": false`` (nor a line that names ``consent`` twice), no
impressions, each ``event_id`` once per batch, nobody on the deny list, and nobody who
withdrew consent (until the re-grant, as ingest drops them).

Delivery is at least once: offsets are committed after the push, so a worker killed
between the two pushes the same events again on restart, which changes no list. Each
push is stamped with the time it is written: Redis keeps the newer of two writes, so a
materialization (stamped with its run's end) replaces the pushes made before that end
and never those made after, and a click stamped in the future (the collector accepts
clock skew) cannot freeze a row. SQLite (the local default) keeps the last write.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobs.config import Settings
from jobs.features.definitions import TIMESTAMP_FIELD, USER_RECENT_ITEMS_PUSH
from jobs.ingest.validate import Rejected, parse_event
from jobs.stream.client import IdleClock, client_config, good_messages

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)

# Streamed items remembered per user, as a multiple of the list's length: enough to put
# back what an overwrite removed, bounded whatever one user does.
REMEMBERED_PER_ITEM = 4
# How often the consent withdrawals are looked at (the table's version; read on change).
CONSENT_REFRESH_SECONDS = 10.0
# How often a worker that cannot push says so (it retries every second meanwhile).
FAILURE_LOG_SECONDS = 60.0

# One user's list: (item ids, epoch ms of each), newest first.
Ranked = tuple[list[str], list[int]]


@dataclass(frozen=True)
class Touch:
    """One event that counts as an interaction: who, what, when (ms) and its weight."""

    user_id: str
    item_id: str
    ts_ms: int
    weight: float


_CONSENT_KEY = b'"consent"'
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def touches(
    values: Iterable[bytes | None], settings: Settings, now: datetime
) -> tuple[list[Touch], int]:
    """The events among ``values`` that gold would count, and how many others were skipped.

    Skipped: what silver quarantines (judged by the window of the hour the event lands
    in, as the collector does), ``"consent": false`` or a line naming ``consent`` twice
    (bronze drops it as unclear), event types of weight 0 (impressions), and an
    ``event_id`` seen before in ``values`` (silver keeps one). Who may be counted at all
    is :class:`Gate`'s question.
    """
    from jobs.stream.collector import live_window

    window = live_window(settings, now)
    weights = settings.event_weights
    out: list[Touch] = []
    ids: set[str] = set()
    skipped = 0
    for value in values:
        if value is None or value.count(_CONSENT_KEY) > 1:  # a tombstone; unclear consent
            skipped += 1
            continue
        try:
            event = parse_event(value, window, settings.max_line_bytes)
        except Rejected:
            skipped += 1  # the landing consumer lands it; silver quarantines it with its reason
            continue
        weight = float(weights.get(str(event["event_type"]), 0.0))
        event_id = str(event["event_id"])
        if weight <= 0 or event.get("consent") is False or event_id in ids:
            skipped += 1
            continue
        ids.add(event_id)
        ts_ms = int(event["ts_ms"])  # type: ignore[call-overload]
        out.append(Touch(str(event["user_id"]), str(event["item_id"]), ts_ms, weight))
    return out, skipped


class GateUnavailableError(RuntimeError):
    """The deny list cannot be read: nobody's events may be pushed until it can."""


class Gate:
    """Whose events may reach the online store: not a user on the deny list (erasure
    under way), not one who withdrew consent (until their re-grant, event by event as
    ingest decides). Both are re-read when they change."""

    def __init__(self, settings: Settings) -> None:
        from jobs.subjects import settings_deny_list, subject_key

        self.settings = settings
        # As the service reads it, without the publish secret the worker has no use for.
        self._subject_key = subject_key(settings.subject_secret_value())
        self.deny_list = settings_deny_list(settings)
        self._denied: frozenset[str] = frozenset()
        self._withdrawn: dict[str, int | None] = {}  # subject -> re-grant ms (None: none)
        self._consent_version = -1
        self._consent_checked = 0.0

    def refresh(self) -> None:
        try:
            self._denied = self.deny_list.current()
        except Exception as exc:  # any read failure is the same outage
            raise GateUnavailableError(f"deny list unreadable: {exc}") from exc
        if time.monotonic() - self._consent_checked >= CONSENT_REFRESH_SECONDS:
            self._read_consent()
            self._consent_checked = time.monotonic()

    def _read_consent(self) -> None:
        from jobs import lake_light
        from jobs.privacy.consent import GRANTED, WITHDRAWN

        if not lake_light.available(self.settings):
            return  # an object-store lake: withdrawals act through the deny list only
        table = lake_light.open_table(self.settings, "consent")
        if table is None:
            self._withdrawn = {}
            return
        version = int(table.version())
        if version == self._consent_version:
            return
        rows = lake_light.rows("SELECT subject, status, changed_at FROM t", t=table)
        latest: dict[str, datetime] = {}
        for r in rows:
            if r["status"] == WITHDRAWN:
                at = r["changed_at"]
                latest[r["subject"]] = max(latest.get(r["subject"], at), at)
        regranted: dict[str, int | None] = dict.fromkeys(latest)
        for r in rows:
            subject = r["subject"]
            if r["status"] == GRANTED and subject in latest and r["changed_at"] > latest[subject]:
                # Rounded up: an event in the re-grant's millisecond but before it is
                # dropped by ingest (microseconds), so it is not pushed either.
                us = (r["changed_at"] - _EPOCH) // timedelta(microseconds=1)
                ms = -(-us // 1000)
                before = regranted[subject]
                regranted[subject] = ms if before is None else min(before, ms)
        self._withdrawn, self._consent_version = regranted, version

    def subject(self, user_id: str) -> str:
        from jobs.subjects import subject_hash_with_key

        return subject_hash_with_key(self._subject_key, user_id)

    def allows(self, touch: Touch) -> bool:
        subject = self.subject(touch.user_id)
        if subject in self._denied:
            return False
        if subject not in self._withdrawn:
            return True
        regranted = self._withdrawn[subject]
        return regranted is not None and touch.ts_ms >= regranted


def rank(merged: dict[str, list[float]], n: int) -> list[str]:
    """The batch rule: newest first, then larger weight, then item id; the first ``n``."""
    return sorted(merged, key=lambda i: (-merged[i][0], -merged[i][1], i))[:n]


class RecentItems:
    """What the worker streamed per user (item -> [newest ms, summed weight]), merged
    with the user's online row on each batch. At most ``capacity`` users are kept (least
    recently touched out first); their rows keep what was pushed for them."""

    def __init__(self, n: int, capacity: int) -> None:
        self.n = n
        self.capacity = capacity
        self._users: OrderedDict[str, dict[str, list[float]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def remember(self, batch: Sequence[Touch]) -> None:
        """Fold ``batch`` into what was streamed per user (once per event)."""
        for t in batch:
            mine = self._users.get(t.user_id)
            if mine is None:
                mine = self._users[t.user_id] = {}
            got = mine.get(t.item_id)
            if got is None:
                mine[t.item_id] = [float(t.ts_ms), t.weight]
            else:
                got[0] = max(got[0], float(t.ts_ms))
                got[1] += t.weight
            self._users.move_to_end(t.user_id)
        while len(self._users) > self.capacity:
            self._users.popitem(last=False)

    def merged(
        self, users: Iterable[str], rows: dict[str, list[tuple[str, int]]]
    ) -> dict[str, Ranked]:
        """Each user's list from their online ``rows`` and what was streamed for them
        (idempotent: call it again after a failed push, with the rows read again)."""
        out: dict[str, Ranked] = {}
        for user in users:
            mine = self._users.get(user, {})
            merged = {item: [float(ts), 0.0] for item, ts in rows.get(user, [])}
            for item, (ts, weight) in mine.items():
                row = merged.get(item)
                merged[item] = [max(ts, row[0]) if row else ts, weight]
            ranked = rank(merged, self.n)
            out[user] = (ranked, [int(merged[i][0]) for i in ranked])
            if len(mine) > REMEMBERED_PER_ITEM * self.n:
                keep = set(rank(mine, REMEMBERED_PER_ITEM * self.n))
                self._users[user] = {i: v for i, v in mine.items() if i in keep}
        return out

    def apply(
        self, batch: Sequence[Touch], rows: dict[str, list[tuple[str, int]]]
    ) -> dict[str, Ranked]:
        """Fold ``batch`` in; each touched user's new list given their online ``rows``."""
        self.remember(batch)
        return self.merged(dict.fromkeys(t.user_id for t in batch), rows)

    def forget(self, users: Iterable[str]) -> None:
        """Drop users (denied): nothing of theirs is merged again."""
        for user in users:
            self._users.pop(user, None)


def push_frame(lists: dict[str, Ranked], written: datetime) -> pd.DataFrame:
    """The rows pushed to ``user_recent_items``, stamped with the time they are written."""
    import pandas as pd

    users = sorted(lists)
    return pd.DataFrame(
        {
            "user_id": users,
            "recent_item_ids": [lists[u][0] for u in users],
            "recent_item_ts": [lists[u][1] for u in users],
            TIMESTAMP_FIELD: [written] * len(users),
        }
    )


def push(fs: FeatureStore, lists: dict[str, Ranked]) -> None:
    from feast.data_source import PushMode

    if lists:
        frame = push_frame(lists, datetime.now(UTC))
        fs.push(USER_RECENT_ITEMS_PUSH, frame, to=PushMode.ONLINE)


@dataclass
class WorkerStats:
    """What a worker run did; ``lag_ms`` holds append-to-push delays (broker clock)."""

    assigned: bool = False
    messages: int = 0
    touches: int = 0
    skipped: int = 0  # not countable (see touches) or not allowed (see Gate)
    pushes: int = 0
    users_pushed: int = 0
    failures: int = 0  # store, deny list or consent outages, each retried
    # The latest delays only: a worker runs for weeks (enough for a p99 of a benchmark).
    lag_ms: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))


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
    (the online rows already hold it). A batch that cannot be pushed (the online store,
    the deny list or the consent table unreadable) is retried every second with its
    offsets uncommitted, until it is pushed or the worker stops.
    """
    from confluent_kafka import Consumer

    from jobs.features import definitions

    fs = fs or definitions.store(settings)
    stats = WorkerStats() if stats is None else stats  # a caller's, to watch progress
    state = RecentItems(settings.feast_recent_items, settings.stream_users_cached)
    gate = Gate(settings)
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
    idle = IdleClock(idle_stop)
    try:
        while not should_stop():
            good = good_messages(consumer.consume(1000, timeout=settings.stream_push_seconds))
            if idle.drained(bool(good), stats.assigned):
                break
            if not good:
                continue
            found, skipped = touches((m.value() for m in good), settings, datetime.now(UTC))
            step = _Step(found)
            said = 0.0
            while not step.run(fs, gate, state, stats):
                if time.monotonic() - said >= FAILURE_LOG_SECONDS:  # once a minute, not a flood
                    log.warning(
                        "the worker cannot push (%d failed attempts so far), retrying every"
                        " second with the offsets held: %s",
                        stats.failures,
                        step.error,
                    )
                    said = time.monotonic()
                if should_stop():
                    return stats  # offsets uncommitted: a restart pushes these again
                time.sleep(1.0)
            now_ms = time.time() * 1000
            stats.lag_ms.extend(now_ms - m.timestamp()[1] for m in good)
            consumer.commit(asynchronous=True)
            stats.messages += len(good)
            stats.touches += len(found) - step.refused
            stats.skipped += skipped + step.refused
    finally:
        consumer.close()
    return stats


class _Step:
    """One batch through the gate, the merge and the push, retried as a whole until it is
    pushed. The events are folded into the worker's memory once; every attempt asks the
    gate again, reads the rows again and merges from memory, so a retry after an outage
    neither counts an event twice nor overwrites what was materialized meanwhile."""

    def __init__(self, found: list[Touch]) -> None:
        self.found = found
        self.allowed: list[Touch] | None = None
        self.refused = 0
        self.error: BaseException | None = None

    def run(self, fs: FeatureStore, gate: Gate, state: RecentItems, stats: WorkerStats) -> bool:
        from jobs.features import online

        try:
            gate.refresh()
            if self.allowed is None:
                self.allowed = [t for t in self.found if gate.allows(t)]
                state.remember(self.allowed)
            allowed = [t for t in self.allowed if gate.allows(t)]  # denied meanwhile: out
            everyone = {t.user_id for t in self.found}
            users = sorted({t.user_id for t in allowed})
            state.forget(everyone - set(users))
            rows = online.recent_rows(fs, users) if users else {}
            lists = state.merged(users, rows)
            push(fs, lists)
        except Exception as exc:  # noqa: BLE001 - every outage is retried alike
            # The online store, the deny list or the consent table failed: nothing is lost
            # while it lasts, the events stay here and the offsets stay uncommitted.
            self.error = exc
            stats.failures += 1
            return False
        self.refused = len(self.found) - len(allowed)
        stats.pushes += 1 if lists else 0
        stats.users_pushed += len(lists)
        return True
