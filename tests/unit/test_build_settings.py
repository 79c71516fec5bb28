"""Small pieces of build and start-up configuration, each from one source of truth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.config import ConfigError, ingest_schedule, load_settings
from jobs.serve.bento_build import BENTOFILE, LOCK, pinned_bentofile
from jobs.spark import ivy_settings

ROOT = Path(__file__).resolve().parents[2]


def test_bento_packages_are_pinned_from_the_lock_with_their_extras() -> None:
    import yaml

    lock = (
        "numpy==2.4.6\n    # via x\n"
        "feast==0.67.0 ; python_version >= '3.10'\n"
        "pydantic-settings==2.16.3\n"
    )
    bentofile = "python:\n  packages:\n    - numpy\n    - Feast[redis]\n    - pydantic_settings\n"
    spec = yaml.safe_load(pinned_bentofile(bentofile, lock))
    assert spec["python"]["packages"] == [
        "numpy==2.4.6",
        "Feast[redis]==0.67.0",
        "pydantic_settings==2.16.3",
    ]
    with pytest.raises(LookupError, match=r"not in requirements\.txt"):
        pinned_bentofile("python:\n  packages: [left-pad]\n", lock)
    with pytest.raises(LookupError, match="without a version"):
        pinned_bentofile("python:\n  packages: ['numpy>=2']\n", lock)


def test_the_real_bentofile_resolves_against_the_real_lock() -> None:
    import yaml

    spec = yaml.safe_load(pinned_bentofile(BENTOFILE.read_text(), LOCK.read_text()))
    pins = dict(p.split("==") for p in spec["python"]["packages"])
    lock = dict(line.split("==") for line in LOCK.read_text().splitlines() if "==" in line)
    assert pins and all(lock[name] == version for name, version in pins.items())


def test_ivy_resolves_from_the_configured_repository_only(tmp_path: Path) -> None:
    settings = load_settings(
        data_root=tmp_path / "var",
        spark_ivy_dir=tmp_path / "ivy",
        spark_maven_repository='https://mirror.example/maven2/?a=1&b="2"',
    )
    path = ivy_settings(settings)
    import xml.etree.ElementTree as ET

    tree = ET.parse(path)
    resolvers = tree.getroot().find("resolvers")
    assert [r.get("root") for r in resolvers] == ['https://mirror.example/maven2/?a=1&b="2"']
    assert tree.getroot().find("settings").get("defaultResolver") == resolvers[0].get("name")
    before = path.stat().st_mtime_ns
    assert ivy_settings(settings) == path and path.stat().st_mtime_ns == before  # unchanged
    assert [p.name for p in path.parent.iterdir()] == ["ivysettings.xml"]  # no temp left


def test_parse_time_reads_only_the_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value of any other setting must not hide the ingest DAG from the scheduler."""
    monkeypatch.setenv("RECFLOW_SPARK_MASTER", "not-a-master")
    monkeypatch.setenv("RECFLOW_INGEST_SCHEDULE", "@daily")
    schedule = ingest_schedule()
    assert schedule.ingest_schedule == "@daily"
    monkeypatch.setenv("RECFLOW_INGEST_START", "2026-11-01T00:00:00")  # no zone
    with pytest.raises(ConfigError, match="time zone"):
        ingest_schedule()


def test_the_ingest_dag_parses_with_another_setting_broken(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "RECFLOW_SPARK_MASTER": "not-a-master",
        "RECFLOW_PUBLISH_K": "-1",
    }
    code = (
        "import runpy, sys\n"
        f"ns = runpy.run_path({str(ROOT / 'dags' / 'ingest.py')!r})\n"
        "print(ns['dag'].dag_id, len(ns['dag'].tasks))\n"
    )
    script = tmp_path / "parse.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["ingest", "7"]  # six stages and the metrics push
