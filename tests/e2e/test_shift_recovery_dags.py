"""The loop closed by Airflow: quiet days raise nothing, a taste shift is retrained away.

The timeline of ``bench/shift_recovery.py`` on a small shop, every stage a real DAG run
(``dag.test()``): a warm-up trains and publishes the first champion; then the reacting
shop generates each day from the live publish, ``ingest`` loads it, ``monitor`` computes
drift and what users did with the recommendations, ``train`` runs when its trigger says
so (the retrain threshold is out of reach, so only drift trains) and ``publish`` follows a
new champion. Tastes shift on one day: the monitor must alert that day or the next, the
drift must train a model the gate promotes, the publish must carry it, and the next day's
CTR of the published lists must beat the shift day's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.spark]

WARMUP, QUIET, SHIFT = 4, 3, 7  # days 4–6 react without drift; tastes shift on day 7

DRIVER = f"""
import json, sys
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[1]).parent / "bench"))
from airflow.dag_processing.dagbag import DagBag
from jobs.config import get_settings
from shift_recovery import timeline

rows = timeline(
    get_settings(),
    DagBag(dag_folder=sys.argv[1]).dags,
    warmup={WARMUP},
    days={QUIET} + 2,
    drift={SHIFT},
    say=lambda line: print(line, flush=True),
)
print("RESULT " + json.dumps({{"rows": rows}}))
"""


def _bench() -> ModuleType:
    """The benchmark script whose timeline this test runs (``bench/`` is not a package)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "shift_recovery.py"
    spec = importlib.util.spec_from_file_location("shift_recovery", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_shift_is_detected_retrained_published_and_recovered(run_driver) -> None:
    result = run_driver(DRIVER, **_bench().environment(users=1500, items=150))
    rows = result.get("rows")
    assert rows, result["_error"]
    by_day = {row["day"]: row for row in rows}
    first = by_day[WARMUP]["champion_before"]

    quiet = [by_day[d] for d in range(WARMUP, SHIFT)]
    assert all(not r["drift_alerts"] for r in quiet), [r["drift_alerts"] for r in quiet]
    assert not any(r["trained"] for r in quiet)
    assert all(r["champion_after"] == first == r["published"] for r in quiet)
    assert all(r["impressions_cdn"] > 0 for r in quiet)

    # Detected on the shift day or the next, and answered by one retraining.
    detected = [r for r in rows if r["day"] >= SHIFT and r["drift_alerts"]]
    assert detected and detected[0]["day"] in (SHIFT, SHIFT + 1), rows
    answer = detected[0]
    assert answer["trained"], answer
    assert answer["champion_after"] != first, "the gate kept the pre-shift model"
    assert answer["published"] == answer["champion_after"], answer

    # The day after the new model went live, its lists are clicked more than on the shift.
    after = by_day.get(answer["day"] + 1)
    if after is None:  # detected on the last simulated day: nothing to compare yet
        pytest.fail(f"no day after the retraining to measure recovery: {rows}")
    assert after["ctr_cdn"] > by_day[SHIFT]["ctr_cdn"], rows
