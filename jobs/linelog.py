"""Durable JSON-line logs written by the online service and loaded into Delta tables.

Two logs share this one implementation: the data access log (:mod:`jobs.access_log`,
loaded by :mod:`jobs.privacy.access`) and the service's answer log
(:mod:`jobs.answer_log`, loaded by :mod:`jobs.monitor.answers`).

**Writing** (:class:`LineLog`, no Spark): ``<directory>/dt=YYYY-MM-DD/<host>-<pid>-<start>.jsonl``,
one file per process and UTC day, appended to by that process only, so no two writers
share a file and a line is never interleaved with another. Lines are pure ASCII, so no
byte offset splits a character. A request must not wait on the disk: with
``background=True`` records go to a bounded queue that a thread drains; when it is full
(the disk stalls), or a write fails, the record is dropped, never the request — counted
(``dropped`` and the ``on_drop`` callback, bound to a Prometheus counter by the service)
and logged once per ``DROP_LOG_SECONDS``.

**Loading** (:func:`jobs.linelog_load.load_lines`, Spark; a module of its own so the
service ships without the lake code): each row keeps where its line sits
(``_source_file``, ``_offset``, ``_end`` in bytes), so a load reads each file only from the
end of what the table already holds, and inserts with a MERGE on the line's place: a
re-run, or two loads at once, add nothing twice. Only complete lines (ending in a
newline) are loaded; the half-written last line of a file still being appended to stays
for the next load. A complete line that is not a valid record is counted (``bad_lines``)
and skipped, never guessed at. Lines that give no row (bad, denied, blanked by erasure,
an answer without items) leave no ``_end`` in the table, so the loader also keeps its own
marker, ``<directory>/_loaded/<table>.json`` (file → byte offset read to), and resumes at
the larger of the two: such lines at a file's end are read and counted once. Deleting
the marker makes the next load re-read them (rows are still deduplicated by the MERGE).

After a write fails part-way (a full disk), the writer begins its next record with a
newline, so the fragment stays a bad line of its own and the next record is not lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

log = logging.getLogger(__name__)

# Records buffered while the disk is slow: ~250 B to ~2 KB each, so at most ~20 MB.
QUEUE_SIZE = 10_000
# A stalled disk drops records by the thousand: one warning per interval, not per record.
DROP_LOG_SECONDS = 60.0


class Record(Protocol):
    """What a log holds: an instant (it picks the day's file) and its line."""

    ts: datetime

    def line(self) -> bytes: ...


class LineLog:
    """Appends records to this process's file of the day (see the module docstring)."""

    what = "log"  # names the log in drop messages

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
        # A failed write left part of a line in the file: the next one first ends it.
        self._torn = False
        self._write_lock = threading.Lock()
        self._last_drop_log = float("-inf")
        self._queue: queue.Queue[Record | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=queue_size)
            self._thread = threading.Thread(
                target=self._drain, name=f"recflow-{self.what.replace(' ', '-')}", daemon=True
            )
            self._thread.start()

    def submit(self, rec: Record) -> bool:
        """Log one record; False when it was dropped (counted and logged)."""
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

    def _write(self, rec: Record) -> bool:
        data = rec.line()
        with self._write_lock:
            view = memoryview(data)
            try:
                out = self._file_for(rec.ts)
                if self._torn:
                    # End the torn line, so this record is a line of its own (not glued to
                    # the fragment, which the loader then skips as one bad line).
                    self._write_all(out, b"\n")
                    self._torn = False
                while view:  # an unbuffered write may be partial; the line goes out whole
                    view = view[out.write(view) or 0 :]
            except OSError as exc:
                if len(view) < len(data):
                    self._torn = True
                self._drop(f"write failed: {exc}")
                return False
        self.written += 1
        return True

    @staticmethod
    def _write_all(out: IO[bytes], data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[out.write(view) or 0 :]

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
            self._torn = False  # a fresh file (a new day): nothing to end
        return self._file

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        if self.on_drop is not None:
            # A broken metrics callback must not turn a lost log line into a failed request.
            with contextlib.suppress(Exception):
                self.on_drop(1)
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_SECONDS:
            self._last_drop_log = now
            log.error(
                "%s record dropped (%d so far) in %s: %s",
                self.what,
                self.dropped,
                self.directory,
                reason,
            )


def ts_text(ts: datetime) -> str:
    """The instant as every log line writes it (UTC, microseconds, ``Z``)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
