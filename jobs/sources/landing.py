"""Writing landing files: atomic file writes and the hour-partition layout.

The generator and the importers land data the way a collector would: one folder per hour
(``events/dt=YYYY-MM-DD/hr=HH/<part>.jsonl``), each file appearing whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from jobs.contracts import hour_partition

MS_PER_HOUR = 3_600_000


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary name so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def hour_runs(hours: np.ndarray) -> Iterator[tuple[str, slice]]:
    """(hour partition, slice) for each run of equal hours in a sorted array.

    ``hours`` holds whole hours since the epoch (epoch milliseconds // MS_PER_HOUR).
    """
    if hours.size == 0:
        return
    cuts = np.flatnonzero(np.diff(hours)) + 1
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, hours.size], strict=True):
        hour = datetime.fromtimestamp(int(hours[start]) * 3600, tz=UTC)
        yield hour_partition(hour), slice(int(start), int(stop))


def write_hour_files(
    events_dir: Path, hours: np.ndarray, lines: list[str] | np.ndarray, part: str
) -> int:
    """Write ``lines`` (sorted by ``hours``) to one file per hour; returns files written."""
    files = 0
    for partition, span in hour_runs(hours):
        chunk = lines[span]
        write_text_atomic(events_dir / partition / f"{part}.jsonl", "\n".join(chunk) + "\n")
        files += 1
    return files
