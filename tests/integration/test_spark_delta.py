"""Spark with Delta Lake on this machine: the session factory and a real round trip."""

from __future__ import annotations

import pytest

from jobs.config import Settings, load_settings
from jobs.doctor import run_checks
from jobs.spark import cached_jars, delta_package, spark_conf

pytestmark = pytest.mark.spark


def test_local_conf_binds_loopback_and_cluster_conf_does_not() -> None:
    local = spark_conf(load_settings())
    assert local["spark.driver.bindAddress"] == "127.0.0.1"
    assert local["spark.ui.enabled"] == "false"
    assert local["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert local["spark.sql.execution.pandas.convertToArrowArraySafely"] == "true"
    cluster = spark_conf(load_settings(spark_master="k8s://https://api.example:6443"))
    assert "spark.driver.bindAddress" not in cluster
    assert cluster["spark.master"].startswith("k8s://")


def test_delta_round_trip_with_time_travel(spark, spark_settings: Settings) -> None:
    path = spark_settings.table_path("scratch", "round_trip")
    spark.createDataFrame([(1, "a"), (2, "b")], "id INT, v STRING").write.format("delta").mode(
        "overwrite"
    ).save(path)
    spark.createDataFrame([(3, "c")], "id INT, v STRING").write.format("delta").mode("append").save(
        path
    )
    now = sorted(r.id for r in spark.read.format("delta").load(path).collect())
    v0 = sorted(
        r.id for r in spark.read.format("delta").option("versionAsOf", 0).load(path).collect()
    )
    assert now == [1, 2, 3]
    assert v0 == [1, 2]
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_jars_are_cached_for_offline_starts(spark, spark_settings: Settings) -> None:
    jars = cached_jars(spark_settings)
    assert jars, "the first start should have recorded the resolved jars"
    assert any("delta-spark" in j for j in jars)
    assert delta_package(spark_settings).startswith("io.delta:delta-spark_4.2_2.13:")


def test_doctor_reports_every_check_ok(spark, spark_settings: Settings) -> None:
    results = run_checks(spark_settings)
    assert [r.name for r in results] == [
        "settings",
        "secrets",
        "java",
        "data root",
        "spark + delta jars",
        "delta write/read/time travel",
    ]
    assert all(r.ok for r in results), [(r.name, r.detail) for r in results]


def test_a_pandas_value_that_does_not_fit_its_column_fails_instead_of_wrapping(spark) -> None:
    """Safe Arrow conversion: 3,000,000,000 into an INT column is an error, never a
    negative number."""
    import pandas as pd

    def overflow(batches):  # type: ignore[no-untyped-def]
        for _ in batches:
            yield pd.DataFrame({"n": [3_000_000_000]})

    with pytest.raises(Exception, match=r"(?i)overflow|out of bounds|safe"):
        spark.range(1).mapInPandas(overflow, "n INT").collect()
