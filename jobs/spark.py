"""Spark session factory with Delta Lake, tuned for one machine and ready for a cluster.

Local runs get `local[*]`, the driver bound to loopback, no UI, few shuffle partitions and
Delta's jars from an Ivy cache outside the checkout (only the very first start downloads
them). The same jobs run on a cluster by configuration alone: set
``RECFLOW_SPARK_MASTER=spark://host:7077`` (or ``k8s://…``/``yarn``), point
``RECFLOW_LAKE_DIR`` at ``s3a://bucket/lake`` and add ``org.apache.hadoop:hadoop-aws:3.5.0``
to ``RECFLOW_SPARK_EXTRA_PACKAGES``; or launch through ``spark-submit`` whose own
``--master``/``--packages`` win over these defaults because an active session is reused.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from jobs.config import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Writes on small local data should not wait for optimisers built for clusters.
    "spark.databricks.delta.snapshotPartitions": "2",
    # Delta's retention safety check stays on: a VACUUM shorter than the tables' retention
    # (7 days by default) would delete files the change feed and time travel still read.
}


# Delta 4.x declares libraries that pyspark already ships (newer); loading Delta's older
# copies beside them invites classpath conflicts, so Ivy leaves them out.
PROVIDED_BY_SPARK = (
    "org.apache.hadoop:hadoop-client-api",
    "org.apache.hadoop:hadoop-client-runtime",
    "org.apache.logging.log4j:log4j-api",
    "org.apache.logging.log4j:log4j-core",
    "org.apache.logging.log4j:log4j-slf4j2-impl",
    "org.slf4j:slf4j-api",
    "com.fasterxml.jackson.core:jackson-core",
    "com.fasterxml.jackson.core:jackson-databind",
    "com.fasterxml.jackson.core:jackson-annotations",
    "org.apache.parquet:parquet-column",
    "org.apache.parquet:parquet-common",
    "org.apache.parquet:parquet-encoding",
    "org.apache.parquet:parquet-format-structures",
    "org.apache.parquet:parquet-hadoop",
    "org.apache.parquet:parquet-jackson",
    "org.xerial.snappy:snappy-java",
    "com.github.luben:zstd-jni",
    "org.roaringbitmap:RoaringBitmap",
    "org.roaringbitmap:shims",
    "io.airlift:aircompressor",
    "commons-logging:commons-logging",
    "commons-pool:commons-pool",
    "com.google.code.findbugs:jsr305",
    "org.locationtech.jts:jts-core",
)


def spark_conf(settings: Settings) -> dict[str, str]:
    """Every Spark setting recflow sets, as plain strings (inspectable, testable)."""
    conf = {
        "spark.master": settings.spark_master,
        "spark.app.name": "recflow",
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.default.parallelism": str(max(2, settings.spark_shuffle_partitions)),
        "spark.ui.enabled": str(settings.spark_ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.jars.ivy": str(settings.spark_ivy_dir),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # pandas → Arrow in mapInPandas and createDataFrame: a value that does not fit its
        # column (3,000,000,000 into INT) fails loudly instead of wrapping around.
        "spark.sql.execution.pandas.convertToArrowArraySafely": "true",
        # Delta's VACUUM lists a table's folders as a Spark job of this many tasks (default
        # 10,000): ~60 s per small table on 2 cores, ~2.5 s with the shuffle's parallelism.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(
            max(2, settings.spark_shuffle_partitions)
        ),
        **DELTA_CONF,
    }
    if settings.spark_master.startswith("local"):
        conf["spark.driver.host"] = settings.spark_local_ip
        conf["spark.driver.bindAddress"] = settings.spark_local_ip
    return conf


def delta_package(settings: Settings) -> str:
    """Maven coordinate of Delta's jar for the installed pyspark.

    ``delta.configure_spark_with_delta_pip`` would ask for the jar of the pip package's own
    version; Maven Central may not serve that exact patch release (4.4.1 is missing while
    4.4.0 is there), so the jar version is a setting of its own.
    """
    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{settings.spark_delta_version}"


def ivy_settings(settings: Settings) -> Path:
    """An Ivy settings file naming one repository: the configured Maven one.

    Spark's default chain also asks a spark-packages repository and the local Maven
    folder; where those are unreachable every first start logs "host not found" lines.
    """
    path = settings.spark_ivy_dir / "ivysettings.xml"
    # The real URL (a mirror's user:password@ included): Ivy needs it; the file stays in
    # the Ivy cache folder and is never printed.
    root = escape(settings.spark_maven_repository.get_secret_value(), {'"': "&quot;"})
    text = (
        "<ivysettings>\n"
        '  <settings defaultResolver="maven"/>\n'
        "  <resolvers>\n"
        f'    <ibiblio name="maven" m2compatible="true" root="{root}"/>\n'
        "  </resolvers>\n"
        "</ivysettings>\n"
    )
    if not path.exists() or path.read_text() != text:
        _write_atomic(path, text)
    return path


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file of this process's own: parallel tasks on one worker
    (two tasks of a DAG run starting Spark at once) never see or rename each other's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as fh:
        fh.write(text)
    Path(fh.name).replace(path)


def spark_packages(settings: Settings) -> list[str]:
    """All Maven packages the session loads: Delta plus configured extras."""
    return [delta_package(settings), *settings.spark_extra_packages]


def _jar_manifest(settings: Settings) -> Path:
    key = hashlib.sha256(",".join(spark_packages(settings)).encode()).hexdigest()[:16]
    return settings.spark_ivy_dir / f"recflow-jars-{key}.txt"


def cached_jars(settings: Settings) -> list[str] | None:
    """Jars resolved by an earlier start, if every one of them is still on disk.

    Ivy re-resolves ``spark.jars.packages`` at every start (seconds of network round
    trips even when everything is cached); handing Spark the resolved files directly
    makes later starts offline and faster.
    """
    manifest = _jar_manifest(settings)
    if not manifest.exists():
        return None
    jars = [line for line in manifest.read_text().splitlines() if line]
    return jars if jars and all(Path(j).exists() for j in jars) else None


def _remember_jars(spark: SparkSession, settings: Settings) -> None:
    jars = spark.sparkContext.getConf().get("spark.jars", "")
    local = [j.removeprefix("file://") for j in jars.split(",") if j]
    if local and all(Path(j).exists() for j in local):
        _write_atomic(_jar_manifest(settings), "\n".join(local) + "\n")


def get_spark(settings: Settings | None = None) -> SparkSession:
    """Return the active session, or start one configured for recflow with Delta."""
    from pyspark.sql import SparkSession

    # PySpark turns naive datetimes (the lake's timestamps are naive UTC) into epochs and
    # back with the *process's* local zone (time.mktime / fromtimestamp): on a worker whose
    # TZ is Europe/Berlin, 02:00 on a spring-forward day would come back as 03:00. Every
    # process that talks to Spark therefore runs in UTC, like the session itself.
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    settings = settings or get_settings()
    if settings.spark_master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", settings.spark_local_ip)
        # Python workers must see the same environment (pandas, pyarrow) as the driver.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings.spark_ivy_dir.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    jars = cached_jars(settings)
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    else:
        builder = builder.config("spark.jars.packages", ",".join(spark_packages(settings)))
        builder = builder.config("spark.jars.ivySettings", str(ivy_settings(settings)))
        builder = builder.config("spark.jars.excludes", ",".join(PROVIDED_BY_SPARK))
    spark = builder.getOrCreate()
    if not jars:
        _remember_jars(spark, settings)
    spark.sparkContext.setLogLevel(settings.spark_log_level)
    return spark
