"""Secrets stay out of logs and artifacts along the publish and Bento-import path.

A driver (a file, run in a fresh interpreter with every log on stderr) registers a model
in a real MLflow store reached through a tracking URI with user:password@, publishes it
and imports it into BentoML; no marker may appear in its output or in any file of the
BentoML home (the model's metadata ships inside the Bento)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MARKERS = ("mk-ml-pass-51c0", "mk-ml-user-51c0", "mk-hmac-51c0", "MKAKID51C0", "mk-aws-51c0")

_DRIVER = """
import json, logging, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
for noisy in ("botocore", "urllib3", "alembic", "sqlalchemy", "git", "matplotlib", "PIL"):
    logging.getLogger(noisy).setLevel(logging.INFO)
from support import clustered_model, register_champion
from jobs.config import load_settings
from jobs.publish.steps import publish_all
from jobs.serve.bento_build import import_and_build
root = Path({root!r})
settings = load_settings(
    data_root=root / "var",
    mlflow_tracking_uri=f"file://mk-ml-user-51c0:mk-ml-pass-51c0@localhost{{root}}/mlruns",
    publish_secret="mk-hmac-51c0-long-enough",
    aws_access_key_id="MKAKID51C0",
    aws_secret_access_key="mk-aws-51c0",
    publish_k=5,
)
logging.getLogger("driver").info("settings %r", settings)
register_champion(settings, clustered_model(), root / "work")
publish_all(settings, in_stock={{}})
built = import_and_build(settings, bento=False)
import bentoml
print("META " + json.dumps(bentoml.models.get(built.model_tag).info.metadata))
"""


def test_no_credential_in_logs_or_bento_metadata(tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER.format(tests=str(REPO / "tests"), root=str(tmp_path)))
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("RECFLOW_", "BENTOML_"))}
    done = subprocess.run(
        [sys.executable, str(driver)],
        env={
            **keep,
            "PYTHONPATH": str(REPO),
            "BENTOML_HOME": str(tmp_path / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            # MLflow's file store is the one local backend whose URI carries userinfo.
            "MLFLOW_ALLOW_FILE_STORE": "true",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "settings Settings(" in output  # the logs were captured
    assert [m for m in MARKERS if m in output] == []
    meta = json.loads(done.stdout.split("META ", 1)[1].splitlines()[0])
    assert meta["tracking_uri"] == f"file://***@localhost{tmp_path}/mlruns"
    leaked = [
        str(path)
        for path in (tmp_path / "bentoml").rglob("*")
        if path.is_file() and any(m.encode() in path.read_bytes() for m in MARKERS)
    ]
    assert leaked == []
