"""``make screenshots``: the README's pictures, taken from the demo's data root.

What a newcomer sees after ``make demo``, photographed in the same headless Chromium the
browser tests use (:mod:`jobs.shop.browser`): the storefront page after a click (CDN
stand-in, the champion's Bento, the page), Airflow's DAG list and the ingest grid (its API
server alone on the demo's metadata DB, every user an admin, so no login and no
scheduler), MLflow's champion run with its plots and the registry page (``mlflow
server`` on the demo's store), and Great Expectations' Data Docs (a file). Every server is
started on a free port on 127.0.0.1 and stopped afterwards. Pictures are quantized to 256
colours (a third of the bytes) and written to ``docs/img``; a source that is missing (no
demo yet, say) is reported and skipped, the others are still taken.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from jobs.config import Settings, get_settings
from jobs.procs import stop_process
from jobs.stream.broker import free_port

OUT = Path(__file__).resolve().parents[1] / "docs" / "img"
BIN = Path(sys.executable).parent


def _wait(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass  # not listening yet: the deadline decides
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


@contextlib.contextmanager
def _server(args: list[str], env: dict[str, str], health: str, log: Path) -> Iterator[None]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait(health, 180, proc)
        yield
    finally:
        stop_process(proc, timeout=30)
        # mlflow server and airflow api-server run their work in child processes
        # (uvicorn, job consumers): the whole session goes, not only its leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing left in the group: done


def save(driver: Any, name: str) -> Path:
    """The browser's viewport as a 256-colour PNG under docs/img."""
    from io import BytesIO

    from PIL import Image

    OUT.mkdir(parents=True, exist_ok=True)
    image = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    path = OUT / f"{name}.png"
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"  {path.relative_to(OUT.parents[1])}  ({path.stat().st_size // 1024} KiB)")
    return path


def _shows(driver: Any, text: str, timeout: float = 60) -> None:
    """Until the page's visible text holds ``text`` (a UI drawn after its API calls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in driver.execute_script("return document.body.innerText"):
            time.sleep(1)  # the rest of the page's requests
            return
        time.sleep(0.25)
    raise RuntimeError(f"{driver.current_url} never showed {text!r}")


def _scroll(driver: Any, script: str) -> None:
    """Scrolls the element ``script`` returns to the top of the view (when there is one)."""
    driver.execute_script(f"const e = (() => {{ {script} }})(); if (e) e.scrollIntoView(true);")
    time.sleep(0.5)


def _settle(driver: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(
            "const s = window.recflowShop; return !!s && s.ready && s.busy === 0"
        ):
            return
        time.sleep(0.1)
    raise RuntimeError("the storefront page did not settle")


def storefront(settings: Settings, driver: Any, work: Path) -> None:
    """A signed-in demo user's page after a click: the service's row and "Because you viewed"."""
    from jobs.publish.cdn import serve_in_background
    from jobs.publish.steps import recs_for
    from jobs.shop.server import Running, demo_users, urls
    from jobs.stream.live import serve_champion

    user = next((u for u in demo_users(settings) if "/u/" in recs_for(settings, u)[0]), None)
    if user is None:
        raise RuntimeError("no demo user has a published list (run `make demo`)")
    with ExitStack() as stack:
        cdn, cdn_url = serve_in_background(settings)
        stack.callback(cdn.shutdown)
        service = serve_champion(settings, stack, work / "serve.log")
        # Events to a port nothing listens on: a picture's clicks are nobody's behaviour
        # (the page keeps them queued; nothing shows it).
        dead = f"http://127.0.0.1:{free_port()}"
        where = {**urls(settings), "cdn": cdn_url, "service": service, "collector": dead}
        page = Running(settings.model_copy(update={"shop_timeout_ms": 5000}), 0, where)
        stack.callback(page.stop)
        driver.get(f"{page.url}/?user={user}")
        _settle(driver)
        driver.find_element("css selector", "#personal .card:nth-child(2)").click()
        _settle(driver)
        save(driver, "storefront")


def airflow(settings: Settings, driver: Any, work: Path) -> None:
    """The DAG list and the ingest grid of the demo's runs (its metadata DB)."""
    from jobs.airflow_local import DAGS_DIR

    home = settings.data_root / "airflow"
    if not (home / "airflow.db").exists():
        raise RuntimeError(f"no Airflow metadata DB at {home} (run `make demo`)")
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home.resolve()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Read-only pictures: every visitor an admin, so the UI asks for no login.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    args = [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with _server(args, env, f"{base}/api/v2/monitor/health", work / "airflow.log"):
        for name, path, text in (
            ("airflow-dags", "/dags", "ingest"),
            ("airflow-grid", "/dags/ingest", "refine_silver"),
        ):
            driver.get(base + path)
            _shows(driver, text)
            save(driver, name)


def mlflow(settings: Settings, driver: Any, work: Path) -> None:
    """The champion's training run: its plots, and the registry page of the model."""
    from mlflow import MlflowClient

    from jobs.model.registry import CHAMPION

    client = MlflowClient(settings.tracking_uri)
    version = client.get_model_version_by_alias(settings.model_name, CHAMPION)
    experiment = client.get_run(version.run_id).info.experiment_id
    plots = [a.path for a in client.list_artifacts(version.run_id, "plots")]
    port = free_port()
    args = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    base = f"http://127.0.0.1:{port}/#"
    run = f"{base}/experiments/{experiment}/runs/{version.run_id}"
    pages = []
    if plots:
        pages.append(("mlflow-plots", f"{run}/artifacts/{plots[0]}", Path(plots[0]).name))
    else:
        pages.append(("mlflow-plots", run, "Parameters"))
    pages.append(("mlflow-registry", f"{base}/models/{settings.model_name}", "Versions"))
    # The store's URI through the environment: it may hold credentials `ps` would show.
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": settings.tracking_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # seven job processes it needs not
    }
    with _server(args, env, f"http://127.0.0.1:{port}/health", work / "mlflow.log"):
        for name, url, text in pages:
            driver.get(url)
            _shows(driver, text)
            _close_assistant(driver)
            if name == "mlflow-registry":  # the versions and their aliases, not the tags
                _scroll(
                    driver,
                    "return [...document.querySelectorAll('h2, h3, span, div')]"
                    ".find(e => e.childElementCount === 0 && e.textContent.trim() === 'Versions')",
                )
            save(driver, name)


def _close_assistant(driver: Any) -> None:
    """MLflow 3.17 opens an assistant panel beside every page; closed when it is there."""
    for button in driver.find_elements("css selector", "button[aria-label='Close']"):
        with contextlib.suppress(Exception):  # hidden or gone: the picture is still useful
            button.click()
            time.sleep(0.5)


def data_docs(settings: Settings, driver: Any, _: Path) -> None:
    """Great Expectations' Data Docs: the newest validation of silver events.

    The pages style themselves from a CDN this machine may not reach; offline they are
    plain HTML, but the table of expectations and observed values is all there.
    """
    site = settings.gx_dir / "uncommitted" / "data_docs" / "local_site"
    found = sorted(
        (site / "validations").rglob("*.html") if site.exists() else [],
        key=lambda p: p.stat().st_mtime,
    )
    silver = [p for p in found if "silver_events" in str(p)] or found
    if not silver:
        raise RuntimeError(f"no Data Docs validations under {site} (run `make demo`)")
    driver.get(silver[-1].resolve().as_uri())
    _shows(driver, "Expectation", timeout=20)
    _scroll(driver, "return document.querySelector('table')")  # expectations, observed values
    save(driver, "data-docs")


SOURCES: dict[str, Callable[[Settings, Any, Path], None]] = {
    "storefront": storefront,
    "airflow": airflow,
    "mlflow": mlflow,
    "data docs": data_docs,
}


def main() -> int:
    import tempfile

    from jobs.shop.browser import chromium

    settings = get_settings()
    print(f"pictures of {settings.data_root} into {OUT}")
    failed = []
    driver = chromium(1280, 800)
    try:
        with tempfile.TemporaryDirectory(prefix="recflow-shots-") as tmp:
            for name, take in SOURCES.items():
                print(name)
                try:
                    take(settings, driver, Path(tmp))
                except Exception as exc:  # noqa: BLE001 - reported; the other pictures go on
                    print(f"  skipped: {exc}")
                    failed.append(name)
    finally:
        driver.quit()
    if failed:
        print(f"not taken (their old pictures stay): {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
