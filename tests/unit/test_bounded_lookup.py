"""The service's online-store lookups: bounded by slots and a timeout, never leaking one."""

from __future__ import annotations

import threading
import time

import anyio

from jobs.serve.feature_source import bounded_lookup


def _free(slots: threading.BoundedSemaphore, n: int) -> bool:
    """Whether all ``n`` slots can be taken (then given back)."""
    taken = 0
    while taken < n and slots.acquire(blocking=False):
        taken += 1
    for _ in range(taken):
        slots.release()
    return taken == n


def test_an_answer_within_the_timeout_is_returned_and_its_slot_freed() -> None:
    slots = threading.BoundedSemaphore(2)
    timeouts: list[int] = []
    got = anyio.run(bounded_lookup, lambda: [1, 2], slots, 1.0, lambda: timeouts.append(1))
    assert got == [1, 2] and not timeouts and _free(slots, 2)


def test_a_slow_store_times_out_and_its_thread_gives_the_slot_back_later() -> None:
    slots = threading.BoundedSemaphore(1)
    release = threading.Event()
    timeouts: list[int] = []

    def hung() -> str:
        release.wait(5)
        return "late"

    got = anyio.run(bounded_lookup, hung, slots, 0.05, lambda: timeouts.append(1))
    assert got is None and timeouts == [1]
    # The hung thread still holds the only slot: the next lookup is refused at once.
    assert anyio.run(bounded_lookup, lambda: "x", slots, 1.0, lambda: timeouts.append(2)) is None
    assert timeouts == [1, 2]
    release.set()
    deadline = time.monotonic() + 5
    while not _free(slots, 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _free(slots, 1)


def test_requests_cancelled_before_their_thread_starts_leak_no_slot() -> None:
    """A request cancelled at once (a client gone, an outer deadline) gives its slot back
    even though its lookup never ran; a lookup that did start releases it itself."""
    slots = threading.BoundedSemaphore(4)
    ran: list[int] = []

    async def many() -> None:
        for n in range(50):
            with anyio.move_on_after(0 if n % 2 else 0.5):
                await bounded_lookup(lambda n=n: ran.append(n), slots, 1.0, lambda: None)

    anyio.run(many)
    deadline = time.monotonic() + 5
    while not _free(slots, 4) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _free(slots, 4)
    assert ran and len(ran) <= 50
