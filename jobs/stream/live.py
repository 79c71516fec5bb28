"""The real-time path on one machine, for `make demo` and the benchmark: a local Kafka
broker, the stream worker, the event collector and the champion's Bento, all on 127.0.0.1.

What `recflow up` runs as separate long-lived processes, started here for a bounded
session and stopped by PID (or thread) when it ends: a click posted to ``collector_url``
goes to Kafka, the worker pushes the user's recent items to the Feast online store under
the settings' data root, and the service at ``service_url`` reads them on the next
``/recommend``. Needs a champion (``make demo`` trains one) and applied Feast definitions.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobs.config import Settings
from jobs.procs import stop_process
from jobs.stream.features import WorkerStats


@dataclass
class LiveStack:
    settings: Settings  # with the broker's bootstrap
    collector_url: str
    service_url: str
    worker: WorkerStats


def _thread_worker(settings: Settings, stack: ExitStack) -> WorkerStats:
    from jobs.stream.features import run

    stats = WorkerStats()
    stop, assigned = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def body() -> None:
        try:
            run(settings, stop.is_set, on_assigned=assigned.set, stats=stats)
        except BaseException as exc:  # noqa: BLE001 - reported by the waiting thread
            failed.append(exc)
            assigned.set()

    thread = threading.Thread(target=body, name="stream-worker", daemon=True)
    thread.start()
    stack.callback(lambda: (stop.set(), thread.join(30)))
    if not assigned.wait(60) or failed:
        raise RuntimeError(f"the stream worker did not start: {failed or 'no partitions'}")
    return stats


def _thread_collector(settings: Settings, stack: ExitStack) -> str:
    import uvicorn

    from jobs.stream.broker import free_port
    from jobs.stream.collector import make_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(make_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="collector", daemon=True)
    thread.start()
    stack.callback(lambda: (setattr(server, "should_exit", True), thread.join(30)))
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the collector did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def serve_champion(settings: Settings, stack: ExitStack, log: Path) -> str:
    """The champion's Bento built and served on a free port until ``stack`` closes; its URL."""
    import httpx

    from jobs.serve import bento_build
    from jobs.stream.broker import free_port

    tag = bento_build.import_and_build(settings).bento_tag
    port = free_port()
    bentoml = Path(sys.executable).parent / "bentoml"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(bentoml), "serve", str(tag), "--host", "127.0.0.1", "--port", str(port)],
            env=bento_build.serve_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stack.callback(lambda: stop_process(proc, timeout=30))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.25)
    raise RuntimeError(f"the service was not ready within 180 s; see {log}")


@contextmanager
def live_stack(settings: Settings) -> Iterator[LiveStack]:
    """Broker, topics, worker, collector and service up; all stopped on exit."""
    from jobs.stream.broker import start_broker
    from jobs.stream.client import ensure_topics

    work = settings.data_root / "live"
    work.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        broker = start_broker(settings, work / "kafka", 0)
        stack.callback(broker.stop)
        live = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
        ensure_topics(live)
        worker = _thread_worker(live, stack)
        collector = _thread_collector(live, stack)
        service = serve_champion(live, stack, work / "serve.log")
        yield LiveStack(live, collector, service, worker)
