"""The service's answer log: one JSON line per ``/recommend`` answer, written without Spark.

Writes ``<answers_dir>/dt=YYYY-MM-DD/<host>-<pid>-<start>.jsonl`` (``answers_dir`` defaults
to ``<data_root>/landing/answers``) through :class:`jobs.linelog.LineLog`, the durable
writer the access log uses too: one file per process and day, a bounded queue drained by
a background thread, a record dropped (and counted by a Prometheus counter) rather than a
request delayed. Each line::

    {"ts": "2026-11-29T06:00:00.123456Z", "request_id": "<hex>", "subject": "<subject hash>",
     "model_version": "7", "source": "als", "group": "treatment",
     "items": [{"item_id": "i1", "rank": 1}, ...]}

names the user by :func:`jobs.subjects.subject_hash` (keyed), never by their id, so the
lake can join answers with events only through the same key, and the privacy run can
erase a person's answers by that hash. :mod:`jobs.monitor.answers` loads complete lines
into ``monitor/rec_answers``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from jobs.config import Settings
from jobs.linelog import LineLog, ts_text

FIELDS = ("ts", "request_id", "subject", "model_version", "source", "group", "items")


def answers_dir(settings: Settings) -> Path:
    assert settings.answers_dir is not None  # derived from data_root when not set
    return settings.answers_dir


@dataclass(frozen=True)
class AnswerRecord:
    """One answer of ``/recommend``: who (subject hash), what model, which list."""

    ts: datetime
    request_id: str
    subject: str
    model_version: str
    source: str
    group: str
    items: Sequence[str] = field(default_factory=tuple)  # item ids in rank order

    def line(self) -> bytes:
        body = {
            "ts": ts_text(self.ts),
            "request_id": self.request_id,
            "subject": self.subject,
            "model_version": self.model_version,
            "source": self.source,
            "group": self.group,
            "items": [{"item_id": item, "rank": rank} for rank, item in enumerate(self.items, 1)],
        }
        # ensure_ascii: item ids may be any Unicode; the line stays pure ASCII.
        return (json.dumps(body, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


class AnswerLog(LineLog):
    """Appends answer records to this process's file of the day."""

    what = "answer log"

    @classmethod
    def open(cls, settings: Settings, **kwargs: object) -> AnswerLog:
        return cls(answers_dir(settings), **kwargs)  # type: ignore[arg-type]

    def record(
        self,
        request_id: str,
        subject: str,
        model_version: str,
        source: str,
        group: str,
        items: Sequence[str],
        ts: datetime | None = None,
    ) -> bool:
        """Log one answer; False when the record was dropped (counted and logged)."""
        return self.submit(
            AnswerRecord(
                ts or datetime.now(UTC),
                request_id,
                subject,
                model_version,
                source,
                group,
                tuple(items),
            )
        )
