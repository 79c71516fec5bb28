"""The service's collector controls (jobs.serve.pauses) against the real collector."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from jobs.serve.pauses import GcPauseMeter, freeze_heap


class Node:
    """A container the collector tracks; two of them referencing each other make a cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector as it was found."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freeze_puts_live_objects_out_of_the_collectors_reach(unfrozen: None) -> None:
    kept = Node()
    assert any(obj is kept for obj in gc.get_objects())
    frozen = freeze_heap()
    # Not compared exactly: a frozen object freed by its last reference leaves the count,
    # and a thread another test left running may freeze more in between.
    assert frozen > 0 and gc.get_freeze_count() > 0
    # A full collection no longer walks it: it is in the permanent generation.
    assert not any(obj is kept for obj in gc.get_objects())
    after = Node()
    assert any(obj is after for obj in gc.get_objects())  # new objects still are collected


def test_freeze_collects_startup_garbage_first(unfrozen: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    ids = {id(a), id(b)}
    del a, b  # an unreachable cycle: only the cyclic collector frees it
    freeze_heap()
    assert not ids & {id(obj) for obj in gc.get_objects(generation=None)}
    assert gc.garbage == []


def test_the_meter_times_every_collection_by_generation() -> None:
    seen: list[tuple[int, float]] = []
    meter = GcPauseMeter(lambda generation, seconds: seen.append((generation, seconds)))
    meter.install().install()  # twice: still one callback
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        meter.uninstall()
    assert [g for g, _ in seen] == [0, 2]
    assert all(seconds >= 0 for _, seconds in seen)
    gc.collect()
    assert len(seen) == 2  # uninstalled: no more observations
    assert meter._callback not in gc.callbacks


def test_a_failing_observer_reports_nothing_per_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interpreter reports a callback's exception as "unraisable" on every collection;
    the meter keeps that out of the service's log."""
    reported: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    def broken(generation: int, seconds: float) -> None:
        raise RuntimeError("metrics backend gone")

    meter = GcPauseMeter(broken).install()
    try:
        gc.collect()
    finally:
        meter.uninstall()
    assert reported == []
    gc.callbacks.append(lambda phase, info: broken(0, 0.0))  # the oracle: unguarded
    try:
        gc.collect()
    finally:
        gc.callbacks.pop()
    assert reported


@pytest.mark.timeout(60)
def test_a_collection_while_the_metrics_lock_is_held_does_not_deadlock() -> None:
    """prometheus_client guards its values with non-reentrant locks; a collection that
    starts while this thread holds one must not record there (it would wait for ever)."""
    import threading

    lock = threading.Lock()
    seen: list[int] = []

    def observe(generation: int, seconds: float) -> None:
        with lock:
            seen.append(generation)

    meter = GcPauseMeter(observe).install()
    try:
        with lock:
            gc.collect(2)  # recorded inside the callback, this would deadlock here
        assert seen == []
        assert meter.flush() >= 1
        assert 2 in seen
    finally:
        meter.uninstall()


def test_the_flushing_thread_records_pauses_on_its_own() -> None:
    import time

    seen: list[int] = []
    meter = GcPauseMeter(lambda generation, seconds: seen.append(generation))
    meter.install(flush_every=0.05)
    try:
        gc.collect(1)
        deadline = time.monotonic() + 10
        while 1 not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 1 in seen
    finally:
        meter.uninstall()
    assert not any(t.name == "gc-pauses" for t in __import__("threading").enumerate())
