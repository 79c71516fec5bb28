"""The data access log: one JSON line per read of a person's data, written without Spark.

Writes ``<privacy_dir>/access_log/dt=YYYY-MM-DD/<host>-<pid>-<start>.jsonl``: one file per
process and UTC day, appended to by that process only, so no two writers share a file and
a line is never interleaved with another. Each line::

    {"ts": "2026-11-29T06:00:00.123456Z", "actor": "service:7", "action": "recommend_personal",
     "subject": "<subject hash>", "outcome": "served", "request_id": "<hex>"}

names the person by :func:`jobs.subjects.subject_hash`, never by their id. Who writes:
the online service (``service:<model version>`` with the request id) and the ``recflow``
CLI (``cli:<login name>``). :mod:`jobs.privacy.access` loads complete lines into the
Delta table ``privacy/data_access``; a line still being written is left for the next load.

A request must not wait on the disk: the service hands records to a bounded queue that a
background thread drains (``background=True``). When the queue is full (the disk stalls
for longer than ``QUEUE_SIZE`` personal reads) a record is dropped, never the request: the
drop is counted (``dropped``, and the ``on_drop`` callback, which the service binds to a
Prometheus counter) and logged once per ``DROP_LOG_SECONDS``. A failed write counts the
same way. The CLI writes synchronously (one line, then exits).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from jobs.config import Settings

log = logging.getLogger(__name__)

# Personal reads buffered while the disk is slow: ~250 B each, so at most a few MB.
QUEUE_SIZE = 10_000
# A stalled disk drops records by the thousand: one warning per interval, not per record.
DROP_LOG_SECONDS = 60.0
FIELDS = ("ts", "actor", "action", "subject", "outcome", "request_id")


def access_log_dir(settings: Settings) -> Path:
    assert settings.privacy_dir is not None  # derived from data_root when not set
    return settings.privacy_dir / "access_log"


@dataclass(frozen=True)
class AccessRecord:
    """One read of one person's data (``subject`` is their subject hash)."""

    ts: datetime
    actor: str
    action: str
    subject: str
    outcome: str
    request_id: str | None = None

    def line(self) -> bytes:
        body = {
            "ts": self.ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "outcome": self.outcome,
            "request_id": self.request_id,
        }
        # ensure_ascii: a line is pure ASCII, so no byte offset can split a character.
        return (json.dumps(body, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


class AccessLog:
    """Appends access records to this process's file of the day."""

    def __init__(
        self,
        directory: Path,
        background: bool = False,
        on_drop: Callable[[int], object] | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.directory = directory
        self.on_drop = on_drop
        self.dropped = 0
        self.written = 0
        started = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
        self._name = f"{host or 'host'}-{os.getpid()}-{started}.jsonl"
        self._file: IO[bytes] | None = None
        self._day: str | None = None
        self._write_lock = threading.Lock()
        self._last_drop_log = float("-inf")
        self._queue: queue.Queue[AccessRecord | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=queue_size)
            self._thread = threading.Thread(
                target=self._drain, name="recflow-access-log", daemon=True
            )
            self._thread.start()

    @classmethod
    def open(cls, settings: Settings, **kwargs: object) -> AccessLog:
        return cls(access_log_dir(settings), **kwargs)  # type: ignore[arg-type]

    # -- recording ---------------------------------------------------------------------------

    def record(
        self,
        actor: str,
        action: str,
        subject: str,
        outcome: str,
        request_id: str | None = None,
        ts: datetime | None = None,
    ) -> bool:
        """Log one read; False when the record was dropped (counted and logged)."""
        rec = AccessRecord(ts or datetime.now(UTC), actor, action, subject, outcome, request_id)
        if self._queue is None:
            return self._write(rec)
        try:
            self._queue.put_nowait(rec)
        except queue.Full:
            self._drop("queue full (the disk is slower than the requests)")
            return False
        return True

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued record is written (tests, shutdown)."""
        if self._queue is None:
            return
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the writer thread and close the file."""
        if self._queue is not None and self._thread is not None:
            self.flush(timeout)
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)
        with self._write_lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # -- writing -------------------------------------------------------------------------------

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            rec = self._queue.get()
            try:
                if rec is None:
                    return
                self._write(rec)
            finally:
                self._queue.task_done()

    def _write(self, rec: AccessRecord) -> bool:
        data = rec.line()
        with self._write_lock:
            try:
                out = self._file_for(rec.ts)
                view = memoryview(data)
                while view:  # an unbuffered write may be partial; the line goes out whole
                    view = view[out.write(view) or 0 :]
            except OSError as exc:
                self._drop(f"write failed: {exc}")
                return False
        self.written += 1
        return True

    def _file_for(self, ts: datetime) -> IO[bytes]:
        day = ts.astimezone(UTC).strftime("%Y-%m-%d")
        if self._file is None or day != self._day:
            if self._file is not None:
                self._file.close()
            folder = self.directory / f"dt={day}"
            folder.mkdir(parents=True, exist_ok=True)
            # Unbuffered append: each line reaches the file in the write call that logs it,
            # so a crash loses at most the line being written (left half, for the loader).
            self._file = open(folder / self._name, "ab", buffering=0)  # noqa: SIM115
            self._day = day
        return self._file

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            with contextlib.suppress(Exception):
                self.on_drop(1)
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_SECONDS:
            self._last_drop_log = now
            log.error(
                "access log record dropped (%d so far) in %s: %s",
                self.dropped,
                self.directory,
                reason,
            )
