"""The single-node ALS engine (implicit) against independent oracles, and the engine choice.

The Spark-vs-implicit quality comparison on MovieLens lives in
``tests/integration/test_als_engine_quality.py`` (it needs Spark); here nothing starts Spark.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.config import load_settings
from jobs.train import als, als_implicit

ROOT = Path(__file__).resolve().parents[2]


def _frame(seed: int = 0, users: int = 60, items: int = 40, pairs: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "u": rng.integers(0, users, pairs),
            "i": rng.integers(0, items, pairs),
            "weight": rng.choice([1.0, 2.0, 4.0, 8.0], pairs).astype(np.float32),
        }
    ).drop_duplicates(["u", "i"])
    frame["last_ts"] = pd.Timestamp("2026-11-01", tz="UTC")
    return frame.reset_index(drop=True)


def _spark_user_solve(frame: pd.DataFrame, items: np.ndarray, reg: float, alpha: float) -> dict:
    """Spark's implicit ALS-WR normal equations, solved exactly per user (the oracle):
    (YtY + Yu' (Cu - I) Yu + reg * n_u * I) x = Yu' Cu p_u, with c = 1 + alpha * r."""
    rank = items.shape[1]
    yty = items.T.astype(np.float64) @ items.astype(np.float64)
    out = {}
    for u, group in frame.groupby("u"):
        y = items[group["i"].to_numpy()].astype(np.float64)
        c = 1.0 + alpha * group["weight"].to_numpy(np.float64)
        a = yty + y.T @ ((c - 1)[:, None] * y) + reg * len(group) * np.eye(rank)
        out[u] = np.linalg.solve(a, y.T @ c)
    return out


def test_the_count_penalty_is_spark_als_wr_exactly() -> None:
    """One user half-sweep through implicit's solver (CG run to convergence) equals the
    exact ALS-WR solve: the virtual columns reproduce reg * n_u, not a constant."""
    frame, rank, reg, alpha = _frame(), 6, 0.7, 2.0
    n_users, n_items = 60, 40
    rng = np.random.default_rng(1)
    items = rng.normal(size=(n_items, rank)).astype(np.float32)
    users = np.zeros((n_users, rank), dtype=np.float32)
    cui = als_implicit.confidences(frame, n_users, n_items, alpha)
    penalised = als_implicit.with_count_penalty(cui, rank)
    als_implicit.solve_rows(penalised, users, items, reg, threads=1, cg_steps=50)
    expected = _spark_user_solve(frame, items, reg, alpha)
    assert len(expected) > 50  # counts differ between users, so a constant would not do
    for u, x in expected.items():
        np.testing.assert_allclose(users[u], x, rtol=2e-3, atol=2e-4)


def test_same_seed_same_factors_whatever_the_threads() -> None:
    frame = _frame(3)
    args = (frame, 60, 40, 8, 0.3, 1.0, 5)
    u1, v1 = als_implicit.fit(*args, seed=11, threads=1)
    u2, v2 = als_implicit.fit(*args, seed=11, threads=2)
    u3, _ = als_implicit.fit(*args, seed=12, threads=1)
    assert u1.dtype == np.float32 and u1.shape == (60, 8) and v1.shape == (40, 8)
    np.testing.assert_array_equal(u1, u2)
    np.testing.assert_array_equal(v1, v2)
    assert not np.array_equal(u1, u3)


def test_rows_without_pairs_keep_zero_factors() -> None:
    frame = _frame(4, users=50, items=30)  # codes up to 49 / 29 of 60 / 40
    users, items = als_implicit.fit(frame, 60, 40, 4, 0.3, 1.0, 3, seed=0)
    assert not users[50:].any() and not items[30:].any()
    assert np.abs(users[frame["u"].unique()]).sum(axis=1).min() > 0


def test_pairs_of_zero_weight_are_no_preference_as_in_spark() -> None:
    """A weight of 0 (a recency decay underflowing float32) is preference 0 in Spark's
    implicit ALS and not counted in the regulariser: the same as no pair at all."""
    frame = _frame(5, users=50, items=30)
    zeros = pd.DataFrame({"u": [55, 55, 56], "i": [1, 2, 3], "weight": np.float32(0.0)})
    zeros["last_ts"] = frame["last_ts"].iloc[0]
    with_zeros = pd.concat([frame, zeros], ignore_index=True)
    matrix = als_implicit.confidences(with_zeros, 60, 40, 1.0)
    assert matrix[55].nnz == 0 and matrix.nnz == len(frame)
    users, items = als_implicit.fit(with_zeros, 60, 40, 4, 0.3, 1.0, 3, seed=0)
    plain_users, plain_items = als_implicit.fit(frame, 60, 40, 4, 0.3, 1.0, 3, seed=0)
    assert not users[55].any() and not users[56].any()  # no positive pair: no factors
    np.testing.assert_array_equal(users, plain_users)
    np.testing.assert_array_equal(items, plain_items)


def test_auto_picks_implicit_up_to_the_pairs_and_the_memory_limits() -> None:
    engine = als.Engine("auto", max_pairs=1_000, max_memory_bytes=10**9)
    assert engine.pick(1_000, 100, 100, 32) == "implicit"
    assert engine.pick(1_001, 100, 100, 32) == "spark"
    # Few pairs but a huge catalogue: the factors alone exceed the memory limit.
    assert engine.pick(1_000, 10_000_000, 10, 32) == "spark"
    assert als.implicit_bytes(1_000, 100, 100, 32) < als.implicit_bytes(1_000, 200, 100, 32)
    for fixed in ("spark", "implicit"):
        assert als.Engine(fixed, 1, 1).pick(10**9, 10**7, 10**7, 128) == fixed


def test_engine_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert als.Engine.from_settings(load_settings()).setting == "spark"  # the default
    default = als.Engine.from_settings(load_settings(als_engine="auto"))
    assert default.setting == "auto" and default.max_pairs == 50_000_000
    # MovieLens 100K and the demo shop fit one machine by a wide margin.
    assert default.pick(100_000, 943, 1_682, 128) == "implicit"
    monkeypatch.setenv("RECFLOW_ALS_ENGINE", "spark")
    monkeypatch.setenv("RECFLOW_ALS_ENGINE_MAX_PAIRS", "123")
    monkeypatch.setenv("RECFLOW_ALS_ENGINE_MAX_MEMORY_MB", "2")
    engine = als.Engine.from_settings(load_settings())
    assert engine == als.Engine("spark", 123, 2 * 2**20, 0)
    monkeypatch.setenv("RECFLOW_ALS_ENGINE", "gpu")
    with pytest.raises(ValueError, match="RECFLOW_ALS_ENGINE"):
        load_settings()


def test_the_spark_engine_without_a_session_names_the_setting() -> None:
    params = als.ALSParams(4, 0.3, 1.0, 2, "none", 0.0)
    with pytest.raises(ValueError, match="RECFLOW_ALS_ENGINE"):
        als.fit(None, _frame(), 60, 40, params, 0, als.Engine("spark", 1, 1))


def test_an_implicit_fit_needs_no_spark(tmp_path: Path) -> None:
    """Through the seam, weighting included, in a fresh interpreter: pyspark is never
    imported (a pure-implicit fit must run where Spark is not)."""
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        "import numpy as np, pandas as pd\n"
        "from jobs.train import als\n"
        "frame = pd.DataFrame({'u': [0, 0, 1, 2], 'i': [0, 1, 1, 2],"
        " 'weight': np.float32([1, 2, 4, 8]),"
        " 'last_ts': pd.to_datetime(['2026-11-01'] * 4, utc=True)})\n"
        "params = als.ALSParams(4, 0.3, 1.0, 3, 'bm25', 30.0)\n"
        "u, v = als.fit(None, frame, 3, 3, params, 7, als.Engine('implicit', 1, 1))\n"
        "assert u.shape == (3, 4) and np.isfinite(u).all() and v.any()\n"
        "assert not [m for m in sys.modules if m.startswith('pyspark')], 'pyspark imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, str(driver)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_seam_applies_the_weighting_before_either_engine() -> None:
    """The implicit engine through als.fit equals the engine on the weighted frame."""
    from jobs.train.weighting import apply

    frame = _frame(5)
    params = als.ALSParams(6, 0.2, 0.5, 4, "bm25", 0.0)
    got = als.fit(None, frame, 60, 40, params, 3, als.Engine("implicit", 1, 1, threads=1))
    weighted = apply(frame, "bm25", 0.0, 60)
    want = als_implicit.fit(weighted, 60, 40, 6, 0.2, 0.5, 4, seed=3, threads=1)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
