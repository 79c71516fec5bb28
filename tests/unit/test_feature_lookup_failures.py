"""A failing online-store lookup is reported to ``FeatureSource.on_failure`` (the service
counts it as ``recflow_feature_lookup_failures_total``), while the answer falls back.

The fault is real: a Feast store on a folder nothing was ever applied to, whose lookups
raise inside Feast. An absent store is not a failure: it is the configured fallback.
"""

from __future__ import annotations

from pathlib import Path

from jobs.config import load_settings
from jobs.features import definitions
from jobs.serve.feature_source import FeatureSource


def test_failed_lookups_are_reported_by_name(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var")
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    source = FeatureSource(settings)
    failures: list[str] = []
    source.on_failure = failures.append
    source.store = definitions.store(settings)  # real, never applied: lookups raise

    assert source.recent("user-1") == []
    assert source.stock(["item-1"]) is None
    assert failures == ["recent_items", "stock"]


def test_no_store_is_a_fallback_not_a_failure(tmp_path: Path) -> None:
    source = FeatureSource(load_settings(data_root=tmp_path / "var"))
    failures: list[str] = []
    source.on_failure = failures.append
    assert source.recent("user-1") == [] and source.stock(["item-1"]) is None
    assert failures == []
