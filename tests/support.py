"""Helpers shared by tests (importable as ``support``: pytest puts tests/ on the path)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np

from jobs.config import Settings
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
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
