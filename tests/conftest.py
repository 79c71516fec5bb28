"""Shared fixtures: an isolated data root per test session and one Spark session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.config import Settings, get_settings, load_settings

# The data set's licence forbids committing it: it is read from the shared folder beside
# the checkout, or from RECFLOW_TEST_ML100K.
ML100K = Path(
    os.environ.get("RECFLOW_TEST_ML100K")
    or Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k"
)


SLOW_MARKERS = ("spark", "integration", "e2e", "long")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything that starts Spark, a server or a DAG is also `slow`: one marker to skip."""
    for item in items:
        if any(item.get_closest_marker(name) for name in SLOW_MARKERS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RECFLOW_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("RECFLOW_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").exists():
        pytest.fail(f"MovieLens 100K expected at {ML100K} (shared datasets folder)")
    return ML100K


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_root=tmp_path / "var", gen_users=300, gen_items=120, gen_days=1)


@pytest.fixture(scope="session")
def spark_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("spark-root")
    return load_settings(data_root=root, spark_shuffle_partitions=2, spark_master="local[2]")


@pytest.fixture(scope="session")
def spark(spark_settings: Settings) -> Iterator[object]:
    from jobs.spark import get_spark

    session = get_spark(spark_settings)
    yield session
    session.stop()
