"""Table maintenance: compact small files (OPTIMIZE) and drop unreferenced ones (VACUUM).

Hourly MERGEs leave many small files; OPTIMIZE rewrites them into few. VACUUM then deletes
files no longer referenced by any version younger than ``RECFLOW_VACUUM_RETENTION_HOURS``
(at least Delta's 168 h). That retention is what keeps gold's change-feed reads of silver
and time travel to pinned versions (training reads gold at a version) working, so Delta's
own retention safety check stays on: a shorter VACUUM is refused, never silently run.
Maintenance commits carry no marks; gold finds its mark anywhere in a table's history, so
OPTIMIZE commits in between do not matter; tables whose commits carry marks keep their
log files (``delta.logRetentionDuration``, set here on tables created before it was
declared), so a mark cannot age out of the log however long a table sees no marked commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs import tables
from jobs.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass
class Maintained:
    """What maintenance did to one table."""

    table: str
    files_before: int
    files_after: int


def _num_files(spark: SparkSession, location: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, location).detail().first()["numFiles"])


def maintain(
    spark: SparkSession, settings: Settings, names: tuple[str, ...] | None = None
) -> list[Maintained]:
    """OPTIMIZE then VACUUM each existing table of the lake (all of them by default)."""
    from delta.tables import DeltaTable

    out = []
    for name in names or tuple(tables.TABLES):
        location = tables.path(settings, name)
        if not DeltaTable.isDeltaTable(spark, location):
            continue
        tables.sync_properties(spark, settings, name)
        table = DeltaTable.forPath(spark, location)
        before = _num_files(spark, location)
        table.optimize().executeCompaction()
        table.vacuum(settings.vacuum_retention_hours)
        out.append(Maintained(name, before, _num_files(spark, location)))
    return out
