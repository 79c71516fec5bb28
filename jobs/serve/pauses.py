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
import time
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

    ``observe(generation, seconds)`` is called after every collection; it runs inside the
    collector, so it must be cheap and must not raise (a callback error would be printed
    by the interpreter on every collection).
    """

    def __init__(self, observe: Callable[[int, float], None]) -> None:
        self.observe = observe
        self._started = 0.0
        self.installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        # A metric that cannot be recorded must not turn every collection into a printed
        # traceback (the interpreter reports callback errors); the pause happened anyway.
        with contextlib.suppress(Exception):
            self.observe(int(info["generation"]), time.perf_counter() - self._started)

    def install(self) -> GcPauseMeter:
        if not self.installed:
            gc.callbacks.append(self._callback)
            self.installed = True
        return self

    def uninstall(self) -> None:
        if self.installed:
            gc.callbacks.remove(self._callback)
            self.installed = False
