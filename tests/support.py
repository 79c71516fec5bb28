"""Helpers shared by tests (importable as ``support``: pytest puts tests/ on the path)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.config import Settings
from jobs.model import hybrid
from jobs.model.artifact import RecModel
from jobs.model.ranking import Seen


def clustered_model(n_users: int = 120, n_items: int = 90, seed: int = 5) -> RecModel:
    """Three taste clusters: users and items of a cluster point the same way."""
    rng = np.random.default_rng(seed)
    centers = np.eye(3, 8, dtype=np.float32) * 2
    user_c, item_c = rng.integers(0, 3, n_users), np.arange(n_items) % 3
    users = centers[user_c] + rng.normal(0, 0.3, (n_users, 8)).astype(np.float32)
    items = centers[item_c] + rng.normal(0, 0.3, (n_items, 8)).astype(np.float32)
    seen = [rng.choice(n_items, size=rng.integers(1, 10), replace=False) for _ in range(n_users)]
    return RecModel(
        user_ids=np.array([f"user-{u}" for u in range(n_users)]),
        item_ids=np.array([f"item-{i}" for i in range(n_items)]),
        user_factors=users,
        item_factors=items,
        popularity=rng.random(n_items).astype(np.float32),
        seen=Seen.from_lists(seen),
        params={"rank": 8, "reg": 0.1, "alpha": 1.0},
        # 120 users are far too few for the DP threshold to release anything: a public
        # list given outright (its mechanism is tested in test_dp_popular.py).
        public_popularity=np.round(rng.random(n_items) * 100).astype(np.float32),
        public_budget={"mechanism": "given by the test"},
    )


# The hybrid score's content in tests: a 'style' independent of the factor cluster.
DIMS = 4


def style(j: int) -> int:
    """The content 'style' of item j in these tests: independent of its factor cluster."""
    return (j // 3) % 2


def styled_content(n_items: int, seed: int = 0) -> np.ndarray:
    """Unit content rows: style 0 points along e0, style 1 along e1, plus a little noise."""
    rng = np.random.default_rng(seed)
    c = np.zeros((n_items, DIMS), np.float32)
    for j in range(n_items):
        c[j, style(j)] = 1.0
    c += rng.normal(0, 0.05, c.shape).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def hybrid_model(weight: float = 0.7, seed: int = 0) -> RecModel:
    """clustered_model plus content by style and each user's profile from their seen items."""
    base = clustered_model()
    content = styled_content(len(base.item_ids), seed)
    seen = base.seen
    profiles = np.stack(
        [
            hybrid.profile_of(content, seen.indices[seen.indptr[u] : seen.indptr[u + 1]])
            for u in range(len(base.user_ids))
        ]
    )
    return dataclasses.replace(
        base,
        item_content=content,
        user_profiles=profiles,
        params={**base.params, "hybrid_weight": weight, "hybrid_recent_items": 20},
    )


def register_champion(settings: Settings, model: RecModel, workdir: Path) -> str:
    """Log and register ``model`` in the settings' MLflow store; alias it champion."""
    import mlflow

    from jobs.model.registry import CHAMPION, log_model, setup

    client = setup(settings)
    with mlflow.start_run():
        info = log_model(model, workdir, settings.model_name)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(settings.model_name, CHAMPION, version)
    return version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a server the tests started, by its PID: terminate, then kill if it lingers."""
    from jobs.procs import stop_process as stop

    stop(proc, timeout)


# Runs in a fresh interpreter: recflow's editable install is taken off the import system
# first, so the model can only work with the code it shipped (as on a serving machine).
_PYFUNC_DRIVER = """
import json, sys
sys.modules["pyspark"] = None  # and no Spark either
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:] = [p for p in sys.path if p and "recflow" not in p and p != {root!r}]
try:
    import jobs
except ImportError:
    pass
else:
    raise SystemExit(f"jobs is importable from {{jobs.__file__}}: the check would prove nothing")
import mlflow, pandas as pd
mlflow.set_tracking_uri({tracking_uri!r})
model = mlflow.pyfunc.load_model({model_uri!r})
out = model.predict(pd.DataFrame({frame!r}))
print("RESULT " + json.dumps(out.to_dict(orient="records")))
"""


def predict_without_recflow(
    tracking_uri: str, model_uri: str, frame: dict[str, list], workdir: Path
) -> list[dict]:
    """A registered pyfunc's predictions where recflow is not installed."""
    import json
    import sys

    script = workdir / "load_pyfunc.py"
    root = str(Path(__file__).resolve().parents[1])
    script.write_text(
        _PYFUNC_DRIVER.format(
            root=root, tracking_uri=tracking_uri, model_uri=model_uri, frame=frame
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=workdir, timeout=300
    )
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(lines[-1].removeprefix("RESULT "))


ROOT = Path(__file__).resolve().parents[1]


def _first_error(output: str) -> str:
    """The first task error of a run (Airflow logs a lot; the cause is what matters)."""
    at = output.find("Traceback")
    return output[max(0, at - 500) : at + 4000] if at >= 0 else output[-3000:]


def run_airflow_driver(code: str, workdir: Path, timeout: float, **env: str) -> dict[str, Any]:
    """Run ``code`` as a script under its own Airflow home; returns its ``RESULT {json}``.

    Airflow reads AIRFLOW_HOME once per process, so a test that runs DAGs does it in a
    subprocess with a fresh SQLite metadata DB. The script gets the DAG folder as argv[1]
    and prints one ``RESULT {json}`` line; ``_error`` in the answer is the first task
    error of its output, for assertion messages. ``env`` adds to or overrides the
    defaults (a data root under ``workdir``, a small local Spark).
    """
    full = {
        **os.environ,
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "RECFLOW_DATA_ROOT": str(workdir / "var"),
        "RECFLOW_SPARK_MASTER": "local[2]",
        "RECFLOW_SPARK_SHUFFLE_PARTITIONS": "2",
        **env,
    }
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], env=full, check=True, capture_output=True)
    # A file, not ``python -c``: pyspark.sql.connect (imported by Great Expectations)
    # takes a __main__ without __file__ for a doctest run and calls sys.exit(0).
    driver = workdir / "driver.py"
    driver.write_text(code)
    done = subprocess.run(
        [sys.executable, str(driver), str(ROOT / "dags")],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    output = done.stdout + done.stderr
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, _first_error(output)
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["_error"] = _first_error(output)
    return result


def bento_env(root: Path) -> dict[str, str]:
    """The environment of a Bento built and served on ``root`` (no RECFLOW_ from the caller)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("RECFLOW_", "BENTOML_"))}
    return {
        **keep,
        "RECFLOW_DATA_ROOT": str(root),
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }


def serve_bento(
    base: Path,
    root: Path,
    ready_timeout: float = 120.0,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, str, dict[str, Any], Path]:
    """Build the champion's Bento (``jobs.serve.bento_build``) and serve it on 127.0.0.1.

    Returns the process, its URL once ``/readyz`` answers 200, the build's report and the
    server's log. A server that dies or is not ready in time is stopped and fails the test
    with its log's tail; the caller stops it (:func:`stop_process`) when done.
    ``extra_env`` adds settings (``RECFLOW_…``) to the build's and the server's environment.
    """
    import httpx
    import pytest

    env = {**bento_env(root), **(extra_env or {})}
    built = subprocess.run(
        [sys.executable, "-m", "jobs.serve.bento_build"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    build = json.loads(built.stdout.strip().splitlines()[-1])
    port = free_port()
    log_path = base / "serve.log"
    bentoml = str(Path(sys.executable).parent / "bentoml")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [bentoml, "serve", build["bento_tag"], "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=base,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc, timeout=30)
            pytest.fail(log_path.read_text()[-3000:])
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return proc, url, build, log_path
        except httpx.TransportError:
            pass  # not listening yet: the loop's deadline decides
        time.sleep(0.3)
