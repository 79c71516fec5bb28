"""The Feast online store behind a seam: stock flags and recent items, or their absence.

Reads: the online store through :mod:`jobs.features.online`. Writes nothing. When Feast
is not installed, not applied or not materialized the service still answers: every item
counts as in stock and nobody has recent items, and the reason is reported by readiness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from jobs.config import Settings
from jobs.model.artifact import RecModel

# The publisher's own stock filter: online and batch lists drop the same items.
from jobs.model.stock import stock_mask

T = TypeVar("T")


class LookupUnavailableError(RuntimeError):
    """The online store failed to answer a lookup whose answer decides the response."""


if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

# How often the service re-reads stock flags from the online store.
STOCK_REFRESH_SECONDS = 60.0


@dataclass
class StockState:
    """The stock mask in use and where it came from (reported by readiness)."""

    mask: np.ndarray | None = None
    source: str = "none: all items count as in stock"
    fallback: bool = True
    out_of_stock: int = 0
    refreshed_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fallback": self.fallback,
            "out_of_stock": self.out_of_stock,
            "refreshed_at": self.refreshed_at,
        }


class FeatureSource:
    """The Feast online store, or its graceful absence.

    ``jobs.features.definitions`` does the Feast work; this seam decides what the service does when
    Feast is not installed, not applied or not materialized: every item is in stock and
    nobody has recent items. The reason is kept in :attr:`status` for ``/readyz``.
    Opening probes one real lookup, so a store whose views were never applied counts as
    unavailable once, instead of failing (and logging) on every request.
    """

    PROBE_USER = "__recflow_probe__"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: FeatureStore | None = None
        self.status = "not opened"
        # Told the lookup's name ("open", "recent_items", "stock") when one fails and the
        # service falls back, so the failure is counted (the service's Prometheus counter).
        self.on_failure: Callable[[str], None] | None = None
        # Told whether the store is usable after every open(): a store down since start-up
        # makes no lookups, so no lookup failure would ever show it (the service's gauge).
        self.on_availability: Callable[[bool], None] | None = None

    @property
    def available(self) -> bool:
        return self.store is not None

    def open(self) -> None:
        """Open the store and probe it; on failure fall back, count it and say so."""
        try:
            from jobs.features import definitions, online

            fs = definitions.store(self.settings)
            online.recent_items(fs, [self.PROBE_USER])
        except Exception as exc:  # any failure means the same fallback
            log.warning("Feast online store unavailable, falling back: %s", exc, exc_info=True)
            self.store = None
            self.status = _reason("unavailable", exc)
            self._failed("open")
        else:
            self.store = fs
            self.status = "ok"
        if self.on_availability is not None:
            self.on_availability(self.store is not None)

    def ensure_open(self) -> bool:
        """Retry :meth:`open` when the store is not available (Feast may come up later);
        returns whether it is available now. Called by the periodic stock refresh."""
        if self.store is None:
            self.open()
        return self.available

    def stock(self, item_ids: Sequence[str]) -> dict[str, bool] | None:
        """Stock flags of the items (absent = unknown), or None when the store failed."""
        if self.store is None:
            return None
        try:
            from jobs.features import online

            return online.stock(self.store, list(item_ids))
        except Exception as exc:
            log.warning("stock lookup failed: %s", exc, exc_info=True)
            self.status = _reason("stock lookup failed", exc)
            self._failed("stock")
            return None

    def recent(self, user_id: str) -> list[str]:
        """The user's recent item ids, newest first; none when the store cannot tell."""
        if self.store is None:
            return []
        try:
            from jobs.features import online

            return list(online.recent_items(self.store, [user_id]).get(user_id) or [])
        except Exception as exc:
            log.warning("recent items lookup failed: %s", exc, exc_info=True)
            self._failed("recent_items")
            return []

    def content(self, item_id: str) -> tuple[list[float], str] | None:
        """An item's content vector and model id; None when the store has none (or no
        store is configured). A store that fails raises :class:`LookupUnavailableError`:
        an outage must not read as "unknown item"."""
        if self.store is None:
            return None
        try:
            from jobs.features import online

            return online.content_vectors(self.store, [item_id]).get(item_id)
        except Exception as exc:
            # Any failure inside Feast or its store: logged, counted, and re-raised as
            # one error the service answers 503 (retry), never 404.
            log.warning("item content lookup failed: %s", exc, exc_info=True)
            self._failed("item_content")
            raise LookupUnavailableError(f"item content lookup failed: {exc}") from exc

    def _failed(self, lookup: str) -> None:
        if self.on_failure is not None:
            self.on_failure(lookup)

    def load_stock(self, model: RecModel) -> StockState:
        """Read stock flags for the model's items and turn them into a mask."""
        now = time.time()
        flags = self.stock([str(i) for i in model.item_ids])
        if flags is None:
            return StockState(
                None, f"none, {self.status}: all items count as in stock", True, 0, now
            )
        if not flags:
            return StockState(
                None, "feast: no stock values (not materialized?): all items in stock", True, 0, now
            )
        mask = stock_mask(model, flags)
        out = 0 if mask is None else int((~mask).sum())
        return StockState(mask, f"feast: {len(flags)} items with a stock value", False, out, now)


def _reason(what: str, exc: BaseException) -> str:
    return f"{what} ({type(exc).__name__}: {exc})"[:300]


async def bounded_lookup(
    lookup: Callable[[], T],
    slots: threading.BoundedSemaphore,
    timeout: float,
    on_timeout: Callable[[], None],
) -> T | None:
    """``lookup()`` on a worker thread, or None (after ``on_timeout()``) when all ``slots``
    are taken or it takes longer than ``timeout`` seconds.

    A lookup given up on keeps its thread until the store answers; the slots bound how
    many such threads a hung store can hold. The slot is given back exactly once: by the
    thread when it ran the lookup, else by the caller (a request cancelled or timed out
    before its thread started), so no cancellation can leak one.
    """
    import anyio

    if not slots.acquire(blocking=False):
        on_timeout()
        return None
    owner = threading.Lock()
    claimed: list[bool] = []

    def claim() -> bool:
        with owner:
            if claimed:
                return False
            claimed.append(True)
            return True

    def fetch() -> T | None:
        if not claim():  # the caller gave up first and gave the slot back
            return None
        try:
            return lookup()
        finally:
            slots.release()

    try:
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(fetch, abandon_on_cancel=True)
    except TimeoutError:
        on_timeout()
        return None
    finally:
        if claim():
            slots.release()
