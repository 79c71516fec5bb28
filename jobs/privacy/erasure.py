"""Erasure: a person's data removed from every store recflow writes, then proven gone.

One run takes the pending requests (:mod:`jobs.privacy.requests`) and, for all of them at
once, in this order:

1. **deny list**: the service stops answering personally for them (before anything else,
   so they are not served while their data is being removed);
2. **lake**: DELETE from silver ``events`` (gold follows through the change feed, so its
   sums stay exact), ``bronze_events`` and ``quarantine`` (raw lines: matched on the parsed
   ``user_id``, and for lines that do not parse, on a ``"user_id": "<id>"`` pattern), then
   gold's per-user tables are checked and any residue deleted;
3. **Feast**: the online rows of the user views deleted (SQLite or Redis: Feast has no
   per-entity delete) and the offline parquet snapshots rewritten without them;
4. **published lists**: the user's object deleted from every retained publish and stage,
   manifests fixed, CloudFront told to drop the paths (:mod:`jobs.publish.erasure`);
5. **models**: every registered version's artifact that holds them rewritten without
   their rows and seen items, and so is every copy in BentoML's model store and Bentos;
6. **verification**: every store searched again for each id; anything left fails the run
   (and the requests stay pending, so the next run retries);
7. **log**: one ``erasure_log`` row per person and store, naming the person by subject
   hash only; the requests are marked done and their user ids nulled.

Deleted rows stay in older Delta files until VACUUM removes them: the maintenance DAG
vacuums daily keeping ``RECFLOW_VACUUM_RETENTION_HOURS``, so the physical erasure deadline
is that retention plus one day (8 days by default; README, "Erasure").
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import tables
from jobs.config import Settings
from jobs.ingest.bronze import _LINE_END as LINE_END
from jobs.ingest.bronze import UTF8_BOM
from jobs.subjects import add_to_deny_list, deny_list_path, key_id, subject_hasher, subject_key

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

# Tables whose rows name a user by a user_id column, and those holding raw lines.
USER_COLUMN_TABLES = ("events", "interactions", "user_stats")
RAW_TABLES = ("bronze_events", "quarantine")
# Rows keyed by subject hash rather than user id (the service's answer log, issue 15).
ANSWERS_TABLE = "rec_answers"
USER_VIEWS = ("user_stats", "user_recent_items")


class ErasureIncompleteError(RuntimeError):
    """Verification found data of an erased person: the run failed, requests stay pending."""


@dataclass
class ErasureReport:
    run_id: str
    subjects: dict[str, str]  # user id -> subject hash (never logged or returned as is)
    removed: dict[str, dict[str, int]] = field(default_factory=dict)  # store -> location -> n
    remaining: dict[str, list[str]] = field(default_factory=dict)  # store -> where (no ids)
    invalidation: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)

    def add(self, store: str, location: str, n: int) -> None:
        self.removed.setdefault(store, {})
        self.removed[store][location] = self.removed[store].get(location, 0) + int(n)

    def as_dict(self) -> dict[str, Any]:
        """What the run did, without user ids (safe for Airflow's XCom and logs)."""
        return {
            "run_id": self.run_id,
            "people": len(self.subjects),
            "removed": self.removed,
            "remaining": self.remaining,
            "invalidation": self.invalidation,
            "seconds": self.seconds,
        }


# -- matching a user in Spark ------------------------------------------------------------------


def subject_column(settings: Settings, column: Column) -> Column:
    """Spark's version of :func:`jobs.subjects.subject_hash` (the same 32 hex characters)."""
    from pyspark.sql import functions as F

    key = subject_key(settings.subject_secret_value())
    return F.substring(F.sha2(F.concat(F.lit(key), column), 256), 1, 32)


def _raw_pattern(user_ids: list[str]) -> str:
    """Java regex for ``"user_id": "<id>"`` (or an unquoted number) in a line that does not parse.

    Each id is quoted with ``\\Q…\\E`` (an ``\\E`` inside an id is split out), so ids are
    matched literally. A quoted id must end at its closing quote (or a truncated line's
    end), so ``"1"`` matches neither ``"10"`` nor ``"1,2"``; an unquoted one at a comma, a
    brace or the end. JSON escapes inside an unparseable line are not decoded (README).
    """
    quoted = "|".join(r"\Q" + u.replace(r"\E", r"\E\\E\Q") + r"\E" for u in user_ids)
    ids = f"(?:{quoted})"
    return r'"user_id"\s*:\s*(?:"' + ids + r'(?:"|$)|' + ids + r"(?:\s*[,}]|\s*$))"


def raw_match(value: Column, user_ids: list[str]) -> Column:
    """Rows of a raw-line table that belong to one of the users."""
    from pyspark.sql import functions as F

    parsed = F.get_json_object(value, "$.user_id")
    return (parsed.isin(user_ids)) | (parsed.isNull() & value.rlike(_raw_pattern(user_ids)))


# -- 2. the lake ---------------------------------------------------------------------------------


def _delete(spark: SparkSession, settings: Settings, name: str, matches: DataFrame) -> int:
    """Delete the table's rows equal (on ``matches``' columns) to a row of ``matches``.

    A MERGE against a frame, not ``DELETE WHERE user_id IN (…)``: Delta writes a DELETE's
    predicate into the commit (``operationParameters``), and the log outlives VACUUM, so
    ids in a predicate would outlive the erasure. A MERGE records only ``t.c <=> s.c``.
    Counted first (Delta's metrics leave out files dropped whole), and a table with
    nothing to delete gets no commit at all.
    """
    from delta.tables import DeltaTable

    location = tables.ensure_table(spark, settings, name)
    table = DeltaTable.forPath(spark, location)
    keys = matches.columns
    source = matches.distinct()
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    n = table.toDF().alias("t").join(source.alias("s"), F_expr(on), "left_semi").count()
    if n:
        table.alias("t").merge(source.alias("s"), on).whenMatchedDelete().execute()
        _purge_deletion_vectors(spark, location)
    return n


def F_expr(condition: str) -> Column:
    from pyspark.sql import functions as F

    return F.expr(condition)


def _ids_frame(spark: SparkSession, user_ids: list[str]) -> DataFrame:
    return spark.createDataFrame([(u,) for u in user_ids], "user_id STRING")


def _raw_rows(spark: SparkSession, settings: Settings, name: str, user_ids: list[str]) -> DataFrame:
    """The identifying columns of a raw table's rows that belong to the users."""
    from pyspark.sql import functions as F

    df = tables.read_or_create(spark, settings, name)
    return df.where(raw_match(F.col("value"), user_ids)).select(
        "_source_file", "_batch_id", "value"
    )


def _purge_deletion_vectors(spark: SparkSession, location: str) -> None:
    """With deletion vectors on, a DELETE only marks rows: rewrite the files now (REORG)."""
    props = spark.sql(f"SHOW TBLPROPERTIES delta.`{location}`").collect()
    if any(r["key"] == "delta.enableDeletionVectors" and r["value"] == "true" for r in props):
        spark.sql(f"REORG TABLE delta.`{location}` APPLY (PURGE)")


def erase_lake(
    spark: SparkSession, settings: Settings, user_ids: list[str], report: ErasureReport
) -> None:
    """Delete the users from silver (gold follows), bronze and quarantine."""
    from jobs.ingest.steps import gold_step

    ids = _ids_frame(spark, user_ids)
    report.add("lake", "silver/events", _delete(spark, settings, "events", ids))
    for name in RAW_TABLES:
        n = _delete(spark, settings, name, _raw_rows(spark, settings, name, user_ids))
        report.add("lake", f"{tables.TABLES[name].layer}/{name}", n)
    gold = gold_step(settings)
    report.add("lake", "gold (via change feed)", gold.get("changed_rows", 0))
    # Residue: a gold row of an erased user left after the change feed was applied means
    # gold had drifted from silver; the per-user tables lose it here (exact for them, they
    # are keyed by user), and the log says so.
    for name in ("interactions", "user_stats"):
        n = _delete(spark, settings, name, ids)
        if n:
            log.warning("gold/%s held %d rows of erased users after the change feed", name, n)
            report.add("lake", f"gold/{name} (residue)", n)
    # The service's answers (monitor/rec_answers) name people by subject hash only.
    subjects = spark.createDataFrame([(h,) for h in report.subjects.values()], "subject STRING")
    report.add("lake", "monitor/rec_answers", _delete(spark, settings, ANSWERS_TABLE, subjects))


def lake_remaining(spark: SparkSession, settings: Settings, user_ids: list[str]) -> dict[str, int]:
    """Rows per table that still belong to the users (the current version of each table)."""
    from pyspark.sql import functions as F

    out: dict[str, int] = {}
    for name in USER_COLUMN_TABLES:
        df = tables.read_or_create(spark, settings, name)
        out[name] = df.where(F.col("user_id").isin(user_ids)).count()
    for name in RAW_TABLES:
        df = tables.read_or_create(spark, settings, name)
        out[name] = df.where(raw_match(F.col("value"), user_ids)).count()
    hasher = subject_hasher(settings)
    answers = tables.read_or_create(spark, settings, ANSWERS_TABLE)
    out[ANSWERS_TABLE] = answers.where(F.col("subject").isin([hasher(u) for u in user_ids])).count()
    pending = tables.read_or_create(spark, settings, "erasure_requests")
    out["erasure_requests (done)"] = pending.where(
        (F.col("status") == "done") & F.col("user_id").isin(user_ids)
    ).count()
    return {k: v for k, v in out.items() if v}


# -- 2b. landing files --------------------------------------------------------------------------


def _py_pattern(user_ids: list[str]) -> re.Pattern[bytes]:
    """Python's version of :func:`_raw_pattern`, on bytes."""
    alts = (
        b"(?:" + b"|".join(re.escape(u.encode("utf-8", "surrogatepass")) for u in user_ids) + b")"
    )
    return re.compile(rb'"user_id"\s*:\s*(?:"' + alts + rb'(?:"|$)|' + alts + rb"(?:\s*[,}]|\s*$))")


def _line_is_theirs(line: bytes, wanted: set[str], pattern: re.Pattern[bytes]) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return pattern.search(line) is not None
    if isinstance(record, dict) and "user_id" in record:
        value = record["user_id"]
        return (str(value) if isinstance(value, int | float | str) else None) in wanted
    return pattern.search(line) is not None


def _split_lines(data: bytes) -> list[bytes]:
    """Lines with their endings (LF, CRLF or CR), as Spark's reader splits them."""
    out, start = [], 0
    for match in LINE_END.finditer(data):
        out.append(data[start : match.end()])
        start = match.end()
    if start < len(data):
        out.append(data[start:])
    return out


def _landing_files(settings: Settings) -> list[Path]:
    return sorted(settings.events_dir.rglob("*.jsonl")) if settings.events_dir.exists() else []


def erase_landing(settings: Settings, user_ids: list[str], rewrite: bool = True) -> int:
    """Lines of the users in landing event files; each such file rewritten without them.

    Landing holds the raw delivery for ``RECFLOW_RETENTION_LANDING_DAYS``, and late-data
    reloads re-read it: leaving a person there would bring them back into bronze. A file
    keeps its name (so ingest does not take it for a late file) and every other line's
    bytes; it is replaced atomically (temporary file + rename).
    """
    wanted, pattern = set(user_ids), _py_pattern(user_ids)
    removed = 0
    for path in _landing_files(settings):
        data = path.read_bytes()
        bom = data.startswith(UTF8_BOM)
        lines = _split_lines(data.removeprefix(UTF8_BOM))
        keep = [
            line for line in lines if not _line_is_theirs(line.rstrip(b"\r\n"), wanted, pattern)
        ]
        n = len(lines) - len(keep)
        if n and rewrite:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".erase-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write((UTF8_BOM if bom else b"") + b"".join(keep))
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        removed += n
    return removed


# -- 2c. answer-log files ------------------------------------------------------------------------


def _answer_files(settings: Settings) -> list[Path]:
    from jobs.answer_log import answers_dir

    root = answers_dir(settings)
    return sorted(root.rglob("*.jsonl")) if root.exists() else []


def _answer_line_is_theirs(line: bytes, subjects: set[str]) -> bool:
    """An answer line naming one of the subject hashes (also when it does not parse)."""
    try:
        record = json.loads(line)
    except ValueError:
        # A torn or damaged line: the hashes are plain hex, so a byte search is exact enough.
        return any(s.encode() in line for s in subjects)
    if isinstance(record, dict) and isinstance(record.get("subject"), str):
        return record["subject"] in subjects
    return any(s.encode() in line for s in subjects)


def erase_answer_files(settings: Settings, subjects: set[str], rewrite: bool = True) -> int:
    """Lines of the subjects in the service's answer-log files; blanked where they stand.

    Unlike a landing file, an answer file may be the one a running service appends to
    (its descriptor stays open) and ``rec_answers`` remembers each loaded line by its byte
    place: a rename would send the service's next lines to an unlinked file, and a shorter
    file would shift every later line away from the place the loader resumes at. So each
    line of theirs is overwritten in place by spaces of the same length (its newline
    kept): the file keeps its name, its size and every other line's bytes and offset, and
    the loader skips blank lines. Each line is written and synced before the next; a
    crash between lines leaves some unblanked, which verification reports (the request
    stays pending and the next run finishes it).
    """
    if not subjects:
        return 0
    removed = 0
    for path in _answer_files(settings):
        data = path.read_bytes()
        if not any(s.encode() in data for s in subjects):
            continue  # no hash anywhere: no line can be theirs (cheap, most files)
        places, pos = [], 0
        for line in data.splitlines(keepends=True):
            body = line.rstrip(b"\n")
            if body.strip() and _answer_line_is_theirs(body, subjects):
                places.append((pos, len(body)))
            pos += len(line)
        if places and rewrite:
            with path.open("r+b", buffering=0) as f:
                for offset, length in places:
                    f.seek(offset)
                    f.write(b" " * length)
                os.fsync(f.fileno())
        removed += len(places)
    return removed


# -- 3. Feast --------------------------------------------------------------------------------------


def _entity_keys(user_ids: list[str]) -> list[Any]:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=u)]) for u in user_ids]


def _sqlite_tables(fs: Any) -> list[str]:
    from feast.infra.online_stores.sqlite import _table_id

    versioning = fs.config.registry.enable_online_feature_view_versioning
    views = [v for v in fs.list_feature_views() if v.name in USER_VIEWS]
    return [_table_id(fs.config.project, v, versioning) for v in views]


def erase_feast_online(settings: Settings, user_ids: list[str], delete: bool = True) -> int:
    """The users' online rows (SQLite) or keys (Redis), deleted unless ``delete`` is False.

    Feast has no per-entity delete: the rows are addressed the way Feast's stores key
    them (the serialized entity key; for Redis, that key plus the project).
    """
    from feast.infra.key_encoding_utils import serialize_entity_key

    from jobs.features.definitions import store

    fs = store(settings)
    version = fs.config.entity_key_serialization_version
    if settings.feast_online_store == "redis":
        from feast.infra.online_stores.helpers import _redis_key

        client = fs._get_provider().online_store._get_client(fs.config.online_store)
        redis_keys = [_redis_key(fs.config.project, k, version) for k in _entity_keys(user_ids)]
        # One command per key (pipelined): a multi-key DEL fails across Redis Cluster slots.
        with client.pipeline(transaction=False) as pipe:
            for key in redis_keys:
                (pipe.delete if delete else pipe.exists)(key)
            return sum(int(n) for n in pipe.execute())
    db = settings.feast_dir / "online_store.db"
    if not db.exists():
        return 0
    keys = [
        serialize_entity_key(k, entity_key_serialization_version=version)
        for k in _entity_keys(user_ids)
    ]
    found = 0
    with sqlite3.connect(db) as conn:
        # Deleted rows' bytes are overwritten, not left in free pages of the file.
        conn.execute("PRAGMA secure_delete = ON")
        existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in (t for t in _sqlite_tables(fs) if t in existing):
            for start in range(0, len(keys), 500):  # below SQLite's bound-variable limit
                part = keys[start : start + 500]
                where = f'FROM "{table}" WHERE entity_key IN ({",".join("?" * len(part))})'
                found += conn.execute(f"SELECT COUNT(*) {where}", part).fetchone()[0]
                if delete:
                    conn.execute(f"DELETE {where}", part)
    return found


def feast_online_remaining(settings: Settings, user_ids: list[str]) -> int:
    """Online rows (SQLite) or keys (Redis) the users still have."""
    return erase_feast_online(settings, user_ids, delete=False)


def _snapshot_files(settings: Settings) -> list[Path]:
    from jobs.features.definitions import sources_dir

    root = sources_dir(settings)
    return sorted(p for view in USER_VIEWS for p in (root / view).rglob("*.parquet"))


def erase_feast_offline(settings: Settings, user_ids: list[str], rewrite: bool = True) -> int:
    """The users' rows in the user-view parquet snapshots; each such file rewritten without
    them (atomically) unless ``rewrite`` is False."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = pa.array(user_ids, type=pa.string())
    found = 0
    for path in _snapshot_files(settings):
        table = pq.read_table(path)
        hit = pc.is_in(table["user_id"].cast(pa.string()), value_set=wanted)
        n = int(pc.sum(hit).as_py() or 0)
        found += n
        if not n or not rewrite:
            continue
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".erase-", suffix=".parquet.tmp")
        os.close(fd)
        try:
            pq.write_table(table.filter(pc.invert(hit)), tmp)
            os.replace(tmp, path)
            # Spark (Hadoop's local file system) checks a file against its `.name.crc`
            # sidecar when the next export reads the snapshots back: the old one no longer
            # matches, and without one Hadoop reads the file unchecked.
            path.with_name(f".{path.name}.crc").unlink(missing_ok=True)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return found


def feast_offline_remaining(settings: Settings, user_ids: list[str]) -> int:
    return erase_feast_offline(settings, user_ids, rewrite=False)


# -- 5. models ------------------------------------------------------------------------------------


def _rewrite_model_file(path: Path, user_ids: list[str]) -> int:
    """Rewrite one model.npz without the users (atomically); rows removed."""
    from jobs.model.artifact import RecModel
    from jobs.model.forget import without_users

    model = RecModel.load(path)
    forgotten, n = without_users(model, user_ids)
    if n:
        forgotten.save(path)  # save writes a temporary file and renames it
    return n


def _registered_versions(settings: Settings) -> list[Any]:
    from mlflow.exceptions import MlflowException

    from jobs.model.registry import setup

    client = setup(settings)
    try:
        return list(client.search_model_versions(f"name='{settings.model_name}'"))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise


def _artifact_location(settings: Settings, version: Any) -> str:
    """Where a version's model files are (the logged model's artifact location)."""
    from jobs.model.registry import setup

    client = setup(settings)
    source = str(version.source)
    if source.startswith("models:/m-"):
        return str(client.get_logged_model(source.split("/")[-1]).artifact_location)
    return source


def _scan_versions(settings: Settings, user_ids: list[str], rewrite: bool) -> dict[str, int]:
    """Per version: the users its artifact holds (rewriting it without them when asked)."""
    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from jobs.model.artifact import RecModel
    from jobs.model.forget import holds

    out: dict[str, int] = {}
    for version in _registered_versions(settings):
        location = _artifact_location(settings, version)
        with tempfile.TemporaryDirectory(prefix="recflow-erase-") as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{location.rstrip('/')}/artifacts/model.npz",
                    dst_path=tmp,
                    tracking_uri=settings.tracking_uri,
                )
            )
            found = holds(RecModel.load(local), user_ids)
            if found and rewrite:
                _rewrite_model_file(local, found)
                repo = get_artifact_repository(location)
                repo.log_artifact(str(local), "artifacts")
            if found:
                out[f"v{version.version}"] = len(found)
    return out


def _local_artifact_files(settings: Settings) -> list[Path]:
    """Every model.npz under a local MLflow artifact root: versions deleted by retention
    (MLflow soft-deletes, files stay until `mlflow gc`), runs that never registered, older
    model names. An S3 artifact root is covered through the registered versions only."""
    root = Path(settings.artifact_root)
    return sorted(root.rglob("model.npz")) if root.exists() else []


def _artifact_label(settings: Settings, path: Path) -> str:
    """``models/m-…`` or ``<experiment>/<run>``: where under the artifact root a file is."""
    return "/".join(path.relative_to(Path(settings.artifact_root)).parts[:2])


def _bento_model_files(settings: Settings) -> list[Path]:
    from jobs.serve.bento_build import bentoml_home

    home = bentoml_home(settings)
    return sorted(home.rglob("model.npz")) if home.exists() else []


def erase_models(settings: Settings, user_ids: list[str], report: ErasureReport) -> None:
    for where, n in _scan_versions(settings, user_ids, rewrite=True).items():
        report.add("models", f"mlflow {settings.model_name} {where}", n)
    for path in _bento_model_files(settings):
        n = _rewrite_model_file(path, user_ids)
        if n:
            report.add("models", f"bentoml {path.parent.name}", n)
    for path in _local_artifact_files(settings):
        n = _rewrite_model_file(path, user_ids)
        if n:
            report.add("models", f"mlflow artifact {_artifact_label(settings, path)}", n)


def models_remaining(settings: Settings, user_ids: list[str]) -> list[str]:
    from jobs.model.artifact import RecModel
    from jobs.model.forget import holds

    found = [f"mlflow {w}" for w in _scan_versions(settings, user_ids, rewrite=False)]
    found += [
        f"bentoml {p.parent.name}"
        for p in _bento_model_files(settings)
        if holds(RecModel.load(p), user_ids)
    ]
    found += [
        f"mlflow artifact {_artifact_label(settings, p)}"
        for p in _local_artifact_files(settings)
        if holds(RecModel.load(p), user_ids)
    ]

    return found


# -- the run ------------------------------------------------------------------------------------


def verify(spark: SparkSession, settings: Settings, user_ids: list[str]) -> dict[str, list[str]]:
    """Every store searched for the users: {store: [where something remains]} (empty: clean)."""
    from jobs.publish.erasure import still_published, user_keys
    from jobs.publish.storage import open_store

    remaining: dict[str, list[str]] = {}
    lake = lake_remaining(spark, settings, user_ids)
    if lake:
        remaining["lake"] = [f"{t}: {n} rows" for t, n in lake.items()]
    landing = erase_landing(settings, user_ids, rewrite=False)
    if landing:
        remaining["landing"] = [f"{landing} lines in landing event files"]
    hasher = subject_hasher(settings)
    answers = erase_answer_files(settings, {hasher(u) for u in user_ids}, rewrite=False)
    if answers:
        remaining["answer log"] = [f"{answers} lines in answer-log files"]
    online = feast_online_remaining(settings, user_ids)
    if online:
        remaining["feast online"] = [f"{online} rows"]
    offline = feast_offline_remaining(settings, user_ids)
    if offline:
        remaining["feast offline"] = [f"{offline} snapshot rows"]
    keys = list(user_keys(settings, user_ids).values())
    published = still_published(settings, open_store(settings), keys)
    if published:
        remaining["published"] = published
    models = models_remaining(settings, user_ids)
    if models:
        remaining["models"] = models
    return remaining


def erase(
    spark: SparkSession,
    settings: Settings,
    requests: list[tuple[str, str, str]],
    run_id: str | None = None,
) -> ErasureReport:
    """Erase the people of ``requests`` ((request id, subject, user id)) everywhere; verify.

    Raises :class:`ErasureIncompleteError` when verification finds anything left; the
    requests then stay pending and the log records what remained (by store, never ids).
    """
    from jobs.publish.erasure import erase_from_publishes, invalidate, user_keys
    from jobs.publish.storage import open_store

    run_id = run_id or f"erasure-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    user_ids = sorted({r[2] for r in requests if r[2]})
    hasher = subject_hasher(settings)
    report = ErasureReport(run_id, {u: hasher(u) for u in user_ids})
    if not user_ids:
        return report
    with report.phase("deny list"):
        key = key_id(subject_key(settings.subject_secret_value()))
        add_to_deny_list(deny_list_path(settings), report.subjects.values(), key)
    # Landing first: an ingest run (a late-data reload) between the two would otherwise
    # bring the people back into bronze from landing after the lake lost them.
    with report.phase("landing"):
        report.add("landing", "event files (lines)", erase_landing(settings, user_ids))
        # Before the lake too: the answer loader would otherwise re-read the lines (it also
        # skips denied subjects, but the files themselves must not keep the hashes).
        report.add(
            "landing",
            "answer-log files (lines)",
            erase_answer_files(settings, set(report.subjects.values())),
        )
    with report.phase("lake"):
        erase_lake(spark, settings, user_ids, report)
    with report.phase("feast"):
        report.add("feast", "online", erase_feast_online(settings, user_ids))
        report.add("feast", "offline snapshots", erase_feast_offline(settings, user_ids))
    with report.phase("published"):
        store = open_store(settings)
        keys = list(user_keys(settings, user_ids).values())
        published = erase_from_publishes(settings, store, keys)
        report.add("published", "user objects", published.objects_deleted)
        report.add("published", "staged rows", published.stage_rows_removed)
        report.add("published", "manifests rewritten", published.manifests_rewritten)
        report.invalidation = invalidate(settings, published.paths, run_id)
    with report.phase("models"):
        erase_models(settings, user_ids, report)
    with report.phase("verify"):
        report.remaining = verify(spark, settings, user_ids)
    _log(spark, settings, report, requests)
    if report.remaining:
        raise ErasureIncompleteError(
            f"erasure run {run_id}: data of erased people remains in "
            + "; ".join(f"{s}: {', '.join(w[:5])}" for s, w in report.remaining.items())
        )
    _complete(spark, settings, requests, run_id)
    return report


def _log(
    spark: SparkSession,
    settings: Settings,
    report: ErasureReport,
    requests: list[tuple[str, str, str]],
) -> None:
    """One row per person and store location (totals per location; the person by hash)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for subject in sorted({r[1] for r in requests}):
        for store, locations in sorted(report.removed.items()):
            for location, n in sorted(locations.items()):
                rows.append((report.run_id, subject, store, location, n, "batch total", now))
        for store, where in sorted(report.remaining.items()):
            detail = json.dumps({"remaining": where[:20]})
            rows.append((report.run_id, subject, store, "verification", None, detail, now))
        if not report.remaining:
            rows.append((report.run_id, subject, "all", "verification", 0, "nothing remains", now))
    schema = tables.TABLES["erasure_log"].ddl.replace(" NOT NULL", "")
    df = spark.createDataFrame(rows, schema)
    df.write.format("delta").mode("append").save(
        tables.ensure_table(spark, settings, "erasure_log")
    )


def _complete(
    spark: SparkSession, settings: Settings, requests: list[tuple[str, str, str]], run_id: str
) -> None:
    """Mark the requests done and forget their user ids (only the subject hash remains)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    ids = [r[0] for r in requests]
    location = tables.ensure_table(spark, settings, "erasure_requests")
    DeltaTable.forPath(spark, location).update(
        condition=F.col("request_id").isin(ids),
        set={
            "status": F.lit("done"),
            "user_id": F.lit(None).cast("string"),
            "run_id": F.lit(run_id),
            "processed_at": F.current_timestamp(),
        },
    )
    _purge_deletion_vectors(spark, location)
