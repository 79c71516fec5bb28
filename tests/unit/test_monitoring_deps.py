"""`make monitoring-deps` as the Makefile runs it, with apt-get and systemctl replaced by
recorders on PATH (installing packages is not something a test may do to its machine).

What is checked is the recipe's own logic: nothing happens when the binaries are there;
otherwise apt-get runs non-interactively under a policy-rc.d that forbids starting
services, the previous policy-rc.d comes back afterwards, and on a systemd host both
services are disabled and stopped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")

RECORDER = """#!/bin/sh
{{ echo "{name} $*"; echo "  DEBIAN_FRONTEND=$DEBIAN_FRONTEND"
   if [ -e "$POLICY" ]; then echo "  policy: $(tail -n 1 "$POLICY")"; fi; }} >> "$LOG"
"""


def _run(tmp_path: Path, binaries: str, systemd: bool) -> tuple[subprocess.CompletedProcess, str]:
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name in ("apt-get", "systemctl"):
        stub = stubs / name
        stub.write_text(RECORDER.format(name=name))
        stub.chmod(0o755)
    # sudo (when the test does not run as root) runs the command as it is.
    (stubs / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (stubs / "sudo").chmod(0o755)
    if systemd:
        (tmp_path / "systemd").mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    policy = tmp_path / "policy-rc.d"
    env = {
        **os.environ,
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "LOG": str(log),
        "POLICY": str(policy),
    }
    done = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(ROOT),
            "monitoring-deps",
            f"MONITORING_BINARIES={binaries}",
            f"POLICY_RC_D={policy}",
            f"SYSTEMD_RUN_DIR={tmp_path / 'systemd'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, log.read_text() if log.exists() else ""


def test_nothing_is_installed_when_both_binaries_are_there(tmp_path: Path) -> None:
    done, calls = _run(tmp_path, "sh make", systemd=True)
    assert done.returncode == 0, done.stderr
    assert calls == ""
    assert "already installed" in done.stdout


def test_install_starts_no_service_and_restores_the_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# the host's own\nexit 0\n")
    done, calls = _run(tmp_path, "no-such-recflow-binary", systemd=True)
    assert done.returncode == 0, done.stderr
    lines = calls.splitlines()
    install = lines.index(
        "apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway"
    )
    # Non-interactive even through sudo, and postinst's invoke-rc.d told "not allowed".
    assert lines[install + 1 : install + 3] == [
        "  DEBIAN_FRONTEND=noninteractive",
        "  policy: exit 101",
    ]
    assert "systemctl disable --now prometheus prometheus-pushgateway" in lines
    assert policy.read_text() == "#!/bin/sh\n# the host's own\nexit 0\n"


def test_without_systemd_nothing_is_disabled_and_no_policy_is_left(tmp_path: Path) -> None:
    done, calls = _run(tmp_path, "no-such-recflow-binary", systemd=False)
    assert done.returncode == 0, done.stderr
    assert "apt-get install" in calls and "systemctl" not in calls
    assert not (tmp_path / "policy-rc.d").exists()
