"""Prometheus and the Pushgateway as plain processes on 127.0.0.1, started and stopped by PID.

Reads: ``infra/monitoring/prometheus.yml`` (a template) and its rules folder
(``RECFLOW_MONITORING_CONFIG_DIR``). Writes: the rendered configuration and Prometheus's
TSDB under a working folder the caller chooses (``recflow up``: ``<data_root>/prometheus``).

Debian's packages install both binaries with systemd units; the project does not use those
(a developer's box or CI has no systemd to speak of, and tests need several instances on
free ports at once), so each server here is one child process the caller owns.
"""

from __future__ import annotations

import shutil
import socket
import string
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from jobs.config import Settings
from jobs.procs import stop_process

READY_TIMEOUT = 30.0


class MissingBinaryError(RuntimeError):
    """A monitoring binary is not installed (`make monitoring-deps` installs them)."""


class MissingConfigError(RuntimeError):
    """The monitoring files (``infra/monitoring``) are not where the settings point."""


@dataclass
class Server:
    """One started server: its URL, its process (stop by PID) and its log file."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        """By PID (Prometheus flushes its head block first)."""
        stop_process(self.proc, timeout)


def binary(name: str) -> str:
    """Absolute path of ``name`` (a PATH name or a path), or a clear error."""
    found = shutil.which(name)
    if found is None:
        raise MissingBinaryError(
            f"{name!r} not found on PATH: install Debian's prometheus and prometheus-pushgateway"
            " (`make monitoring-deps`), or set RECFLOW_PROMETHEUS_BINARY /"
            " RECFLOW_PUSHGATEWAY_BINARY"
        )
    return found


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render_config(
    settings: Settings,
    service_target: str,
    pushgateway_target: str,
    scrape_interval: str | None = None,
) -> str:
    """``prometheus.yml`` for these targets, its rules read from the repository's folder.

    The files are read from a checkout (``infra/monitoring``), like the Bento's own
    bentofile: they are deployment configuration beside ``infra/terraform``, not package
    data, so an installed wheel has none of them and must be told where they are.
    """
    path = settings.monitoring_config_dir / "prometheus.yml"
    if not path.is_file():
        raise MissingConfigError(
            f"no Prometheus template at {path}: point RECFLOW_MONITORING_CONFIG_DIR at a"
            " recflow checkout's infra/monitoring (an installed package does not ship it)"
        )
    template = path.read_text()
    return string.Template(template).substitute(
        scrape_interval=scrape_interval or settings.prometheus_scrape_interval,
        service_target=service_target,
        pushgateway_target=pushgateway_target,
        rules_dir=str((settings.monitoring_config_dir / "rules").resolve()),
    )


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            # Not listening yet, or listening but still loading: both mean "wait".
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()  # reaped, not left a zombie
            tail = log.read_text()[-2000:]
            raise TimeoutError(f"{url} not ready after {READY_TIMEOUT} s: {tail}")
        time.sleep(0.1)


def _start(name: str, command: list[str], url: str, workdir: Path) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        _wait_ready(url, proc, log)
    except BaseException:
        # Not ready (or Ctrl-C while waiting): the caller never gets a Server to stop, so a
        # half-started process is ended here rather than left running.
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    return Server(name, url, proc, log)


def start_pushgateway(
    settings: Settings, workdir: Path, port: int = 0, persistence: Path | None = None
) -> Server:
    """A Pushgateway on 127.0.0.1 (``port`` 0: a free one).

    With ``persistence`` its groups are written to that file (every minute and on
    shutdown) and read back at start: the batch figures are pushed daily, so a restart
    that forgot them would leave the batch alerts nothing to read until the next push.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [binary(settings.pushgateway_binary), f"--web.listen-address=127.0.0.1:{port}"]
    if persistence is not None:
        persistence.parent.mkdir(parents=True, exist_ok=True)
        command += [f"--persistence.file={persistence}", "--persistence.interval=1m"]
    return _start("pushgateway", command, f"http://127.0.0.1:{port}", workdir)


def start_prometheus(
    settings: Settings,
    workdir: Path,
    service_target: str,
    pushgateway_target: str,
    port: int = 0,
    scrape_interval: str | None = None,
) -> Server:
    """Prometheus on 127.0.0.1 scraping the service and the Pushgateway, with recflow's rules.

    ``workdir`` holds the rendered configuration and the TSDB, so a restart on the same
    folder keeps the history the CTR baseline (a 7-day average) needs.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = workdir / "prometheus.yml"
    config.write_text(render_config(settings, service_target, pushgateway_target, scrape_interval))
    command = [
        binary(settings.prometheus_binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # Debian's build defaults its console templates to /etc/prometheus: not needed.
        "--web.console.templates=/dev/null",
        "--web.console.libraries=/dev/null",
    ]
    return _start("prometheus", command, f"http://127.0.0.1:{port}", workdir)
