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


def test_every_measured_input_is_stated_in_benchmarks() -> None:
    capacity = _capacity()
    text = (ROOT / "BENCHMARKS.md").read_text()
    missing = {k: f.source for k, f in capacity.MEASURED.items() if f.source not in text}
    assert not missing, f"figures no longer in BENCHMARKS.md: {missing}"


def test_the_committed_plan_is_what_the_script_writes() -> None:
    capacity = _capacity()
    assert (ROOT / "docs" / "capacity.md").read_text() == capacity.render(), (
        "docs/capacity.md is stale: run .venv/bin/python bench/capacity.py"
    )


def test_the_plan_follows_its_inputs() -> None:
    # More traffic needs more replicas and more partitions; the plan is computed, not typed.
    capacity = _capacity()
    base = capacity.render()
    capacity.ASSUMED["service_calls_per_active_user"] *= 4
    capacity.ASSUMED["events_per_day"] *= 4
    busier = capacity.render()
    assert busier != base

    def number_after(text: str, marker: str) -> int:
        tail = text.split(marker, 1)[1]
        return int(
            "".join(ch for ch in tail.split("replicas")[0] if ch.isdigit() or ch == "–").split("–")[
                1
            ]
        )

    assert number_after(busier, "**HPA ") > number_after(base, "**HPA ")
