"""A failing online-store lookup is reported to ``FeatureSource.on_failure`` (the service
counts it as ``recflow_feature_lookup_failures_total``), while the answer falls back.

The fault is real: a Feast store on a folder nothing was ever applied to, whose lookups
raise inside Feast. An absent store is not a failure: it is the configured fallback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import load_settings
from jobs.features import definitions
from jobs.serve.feature_source import FeatureSource, LookupUnavailableError


def test_failed_lookups_are_reported_by_name(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var")
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    source = FeatureSource(settings)
    failures: list[str] = []
    source.on_failure = failures.append
    source.store = definitions.store(settings)  # real, never applied: lookups raise

    assert source.recent("user-1") == []
    assert source.stock(["item-1"]) is None
    # An item's content decides /similar's answer: a failure is raised, never "unknown".
    with pytest.raises(LookupUnavailableError):
        source.content("item-1")
    assert failures == ["recent_items", "stock", "item_content"]


def test_no_store_is_a_fallback_not_a_failure(tmp_path: Path) -> None:
    source = FeatureSource(load_settings(data_root=tmp_path / "var"))
    failures: list[str] = []
    source.on_failure = failures.append
    assert source.recent("user-1") == [] and source.stock(["item-1"]) is None
    assert source.content("item-1") is None
    assert failures == []


def test_a_store_down_from_start_up_is_reported_and_retried(tmp_path: Path) -> None:
    """The reviewer's case: open() on a store nothing was applied to. No lookup is ever
    made, so only open() can tell: the failure is counted and availability reported 0;
    each retry (the stock refresher's ensure_open) tries again and reports again."""
    settings = load_settings(data_root=tmp_path / "var")
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    source = FeatureSource(settings)
    failures: list[str] = []
    availability: list[bool] = []
    source.on_failure = failures.append
    source.on_availability = availability.append

    source.open()
    assert not source.available and source.status.startswith("unavailable")
    assert failures == ["open"] and availability == [False]

    assert source.ensure_open() is False
    assert failures == ["open", "open"] and availability == [False, False]


def test_a_store_that_comes_up_later_is_picked_up_by_the_retry(tmp_path: Path) -> None:
    settings = load_settings(data_root=tmp_path / "var")
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    source = FeatureSource(settings)
    availability: list[bool] = []
    source.on_availability = availability.append
    source.open()
    assert availability == [False]

    definitions.apply(settings)  # Feast is set up while the service runs
    assert source.ensure_open() is True
    assert source.status == "ok" and availability == [False, True]
    # Available: no further open() (and no further report) on the next refresh.
    assert source.ensure_open() is True and availability == [False, True]
