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

A request must not wait on the disk: the writer is :class:`jobs.linelog.LineLog` (shared
with the answer log), whose bounded queue and background thread drop a record, never the
request, when the disk stalls — counted, and bound to a Prometheus counter by the service.
The CLI writes synchronously (one line, then exits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jobs.config import Settings
from jobs.linelog import DROP_LOG_SECONDS, QUEUE_SIZE, LineLog, ts_text

__all__ = ["DROP_LOG_SECONDS", "FIELDS", "QUEUE_SIZE", "AccessLog", "AccessRecord"]

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
            "ts": ts_text(self.ts),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "outcome": self.outcome,
            "request_id": self.request_id,
        }
        # ensure_ascii: a line is pure ASCII, so no byte offset can split a character.
        return (json.dumps(body, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


class AccessLog(LineLog):
    """Appends access records to this process's file of the day."""

    what = "access log"

    @classmethod
    def open(cls, settings: Settings, **kwargs: object) -> AccessLog:
        return cls(access_log_dir(settings), **kwargs)  # type: ignore[arg-type]

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
        return self.submit(
            AccessRecord(ts or datetime.now(UTC), actor, action, subject, outcome, request_id)
        )
