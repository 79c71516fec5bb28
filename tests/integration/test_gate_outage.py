"""The gate during an MLflow outage: a real `mlflow server` on 127.0.0.1, stopped by PID
between the comparison and the promotion. "Cannot tell" must never read as "no champion
yet" (the first gate swallowed every MLflow error there and promoted unchallenged)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from support import free_port, wait_for_port

from jobs.airflow_local import stop_group
from jobs.config import Settings, load_settings
from jobs.model.registry import CHAMPION, alias_version, setup
from jobs.train.gate import Incumbent, apply_gate, gate
from jobs.train.trigger import registry_facts

pytestmark = pytest.mark.integration


def _start(db: Path, artifacts: Path, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow), "server",
            "--backend-store-uri", f"sqlite:///{db}",
            "--default-artifact-root", artifacts.as_uri(),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # MLflow 3's server also starts job consumers (seven processes): recflow uses no
        # server jobs, and every process of its group must go for the outage to be real.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )  # fmt: skip
    wait_for_port(port, proc, timeout=120)
    # The port opens before the app answers (first start migrates the store): ask it.
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as r:
                if r.status == 200:
                    return proc
        except OSError:
            # Not ready yet (refused, reset or slow under load): asked again until the
            # deadline, which fails the test with the last error.
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    # Fail fast instead of MLflow's default minutes of retries against a dead server.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    port = free_port()
    db, artifacts = tmp_path / "mlflow.db", tmp_path / "artifacts"
    state = {"proc": _start(db, artifacts, port), "port": port, "db": db, "art": artifacts}
    yield state
    stop_group(state["proc"], timeout=30)


def test_an_outage_between_comparison_and_promotion_promotes_nothing(
    server: dict[str, Any], tmp_path: Path
) -> None:
    settings: Settings = load_settings(
        data_root=tmp_path / "var", mlflow_tracking_uri=f"http://127.0.0.1:{server['port']}"
    )
    client = setup(settings)
    name = settings.model_name
    client.create_registered_model(name)
    run = client.create_run(client.get_experiment_by_name(settings.mlflow_experiment).experiment_id)
    run_id = run.info.run_id

    def register() -> str:  # a version without artifacts: the gate reads aliases and tags
        return str(client.create_model_version(name, f"runs:/{run_id}/model", run_id).version)

    v1 = register()
    client.set_registered_model_alias(name, CHAMPION, v1)
    v2 = register()
    expected = str(alias_version(client, name, CHAMPION).version)  # read at the run's start
    assert expected == v1

    stop_group(server["proc"], timeout=30)  # the tracking server goes away mid-run
    with pytest.raises(MlflowException):
        alias_version(client, name, CHAMPION)  # the old lookup said None: "no champion"
    with pytest.raises(MlflowException):
        registry_facts(client, settings, gold_version=3)
    decision = gate(0.2, 0.1, [Incumbent("champion", v1, 0.19)], settings)
    with pytest.raises(MlflowException):
        apply_gate(client, name, v2, decision, expected)

    # Back up on the same store: nothing moved, nothing was recorded as decided.
    server["proc"] = _start(server["db"], server["art"], server["port"])
    assert str(alias_version(client, name, CHAMPION).version) == v1
    assert "recflow.gate.decision" not in client.get_model_version(name, v2).tags
