"""Garbage-collector pauses of the online service: measured, and kept off the tail.

Reads and writes nothing but the process's collector state and one Prometheus histogram
(``recflow_gc_pause_seconds``, defined in :mod:`jobs.serve.metrics`).

Why this exists: CPython's cyclic collector now and then runs a full (generation 2)
collection that walks every tracked container in the process. A service process holds a
few hundred thousand of them once BentoML, Feast, pandas and pydantic are imported, so a
full collection stops the event loop for tens to hundreds of milliseconds, and every
request due meanwhile waits: these were the periodic 250–300 ms stalls of the open-loop
benchmark (BENCHMARKS.md "Online service"). Almost all of those objects live as long as
the process, so :func:`freeze_heap` moves them, once the service is loaded, into the
permanent generation the collector never walks again; later collections only see what
requests allocate. :class:`GcPauseMeter` times every collection so the fix stays visible
in production, not only in a benchmark.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any


def freeze_heap() -> int:
    """Collect once, then freeze every surviving object; returns how many are frozen.

    The collection first frees the start-up garbage (so it is not kept for ever); what is
    left is the model, the imported modules and the server's machinery. Safe to call more
    than once: each call freezes what was allocated since.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauseMeter:
    """Times each collection through ``gc.callbacks`` and reports it per generation.

    The callback runs inside the collector, which may start on any allocation, including
    one made while prometheus_client holds its (non-reentrant) locks: recording the pause
    there would take the same lock again and deadlock the thread (the multiprocess mode
    BentoML uses guards every value with one process-wide lock). So the callback only
    appends to a bounded deque (atomic, no lock); :meth:`flush` hands the pauses to
    ``observe`` outside the collector, from a daemon thread (:meth:`install` with
    ``flush_every``) or a caller.
    """

    def __init__(self, observe: Callable[[int, float], None], keep: int = 10_000) -> None:
        self.observe = observe
        self._started = 0.0
        self._pending: deque[tuple[int, float]] = deque(maxlen=keep)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self._pending.append((int(info["generation"]), time.perf_counter() - self._started))

    def flush(self) -> int:
        """Record the pauses collected so far; returns how many."""
        done = 0
        while True:
            try:
                generation, seconds = self._pending.popleft()
            except IndexError:
                return done
            # A metric that cannot be recorded must not stop the flushing thread; the
            # pause happened anyway and the next ones are still worth recording.
            with contextlib.suppress(Exception):
                self.observe(generation, seconds)
            done += 1

    def _flush_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self.flush()

    def install(self, flush_every: float | None = None) -> GcPauseMeter:
        """Start timing collections; with ``flush_every`` (seconds) also a daemon thread
        that records them."""
        if not self.installed:
            gc.callbacks.append(self._callback)
            self.installed = True
        if flush_every and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._flush_loop, args=(flush_every,), name="gc-pauses", daemon=True
            )
            self._thread.start()
        return self

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self._callback)
            self.installed = False
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()
