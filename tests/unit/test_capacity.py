"""docs/capacity.md is what bench/capacity.py computes from BENCHMARKS.md's figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _capacity():
    spec = importlib.util.spec_from_file_location("capacity", ROOT / "bench" / "capacity.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["capacity"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_measured_input_is_stated_in_benchmarks_with_its_value() -> None:
    capacity = _capacity()
    text = (ROOT / "BENCHMARKS.md").read_text()
    for name, figure in capacity.MEASURED.items():
        assert figure.source in text, f"{name}: {figure.source!r} no longer in BENCHMARKS.md"
        shown = figure.source.replace(",", "")
        value = f"{figure.value:g}"
        assert value in shown, f"{name}: {value} is not what {figure.source!r} says"


def test_the_committed_plan_is_what_the_script_writes() -> None:
    capacity = _capacity()
    assert (ROOT / "docs" / "capacity.md").read_text() == capacity.render(), (
        "docs/capacity.md is stale: run .venv/bin/python bench/capacity.py"
    )


def test_hand_computed_lines() -> None:
    capacity = _capacity()
    text = capacity.render()
    # 1 B events x 10 % in the peak hour; 20 min at 8,707/2 events/s a core.
    assert "peak hour: **100 M events**" in text
    assert "**20 executor cores**" in text  # 1e8 / (4353.5 x 1200) = 19.1 -> 20
    # (10 M x 1,200 B + 1 M x 1,400 B) / 2^30 = 12.5 GiB.
    assert "Redis: **~12 GiB**" in text
    # Peak 1e8 / 3600 = 27,778 events/s x 400 B = 11.1 MB/s.
    assert "peak 27,778 events/s = 11.1 MB/s" in text


def _hpa_max(text: str) -> int:
    return int(text.split("**HPA ", 1)[1].split(" replicas", 1)[0].split("–")[1])


def _partitions(text: str) -> int:
    return int(text.split("MB/s: **", 1)[1].split(" partitions", 1)[0])


def test_the_plan_follows_its_inputs() -> None:
    # More traffic needs more replicas and more partitions; the plan is computed, not typed.
    capacity = _capacity()
    base = capacity.render()
    capacity.ASSUMED["service_calls_per_active_user"] *= 4
    capacity.ASSUMED["events_per_day"] *= 10
    busier = capacity.render()
    assert _hpa_max(busier) > _hpa_max(base)
    assert _partitions(busier) > _partitions(base)
