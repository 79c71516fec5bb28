"""Time to the first personal row of the storefront page, in headless Chromium.

A champion (the oracle of a generated shop) registered in MLflow and published with its
catalog to the local bucket, the CDN stand-in over it, the champion's Bento and the page
server, all on 127.0.0.1; the browser's cache is disabled, so every load is cold (page,
script, latest.json, the user's object and the catalog all fetched again). Two paths,
measured alternately in one browser:

- **CDN**: a signed-in user with a published list; the row is their object on the CDN.
- **service**: the same user in a session that already clicked an item; the page asks
  ``/recommend`` first with the session's items (the CDN's list would only be replaced)
  and draws its session-aware answer. Timed to that row.

Times are ``performance.now()`` at the row's rendering, i.e. from the navigation's start.
The page's events go to a port nothing listens on (the collector is not part of what is
timed; their failure is counted by the page after the row is drawn).

Run: .venv/bin/python bench/bench_shop.py [--loads 20 --users 2000 --items 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from jobs.config import load_settings
from jobs.publish.cdn import serve_in_background
from jobs.shop.browser import chromium
from jobs.shop.server import Running
from jobs.sources.shop import ShopSpec, build_world, user_id
from jobs.sources.storefront import reference_model
from jobs.stream.broker import free_port
from jobs.stream.live import serve_champion


def _publish(settings, workdir: Path) -> None:
    import mlflow

    from jobs.model.registry import CHAMPION, log_model, setup
    from jobs.publish.steps import publish_all

    world = build_world(ShopSpec.from_settings(settings))
    client = setup(settings)
    with mlflow.start_run():
        info = log_model(reference_model(world, "oracle"), workdir, settings.model_name)
    client.set_registered_model_alias(
        settings.model_name, CHAMPION, str(info.registered_model_version)
    )
    rows = world.items.to_dict("records")
    stock = {r["item_id"]: bool(r["in_stock"]) for r in rows}
    publish_all(settings, generated_at=datetime.now(UTC), in_stock=stock, catalog_rows=rows)


def _load(driver, url: str, key: str) -> float:
    """One load; waits inside the page (polling over WebDriver would load the machine)."""
    driver.get(url)
    got = driver.execute_async_script(
        """const done = arguments[arguments.length - 1];
        const t0 = Date.now();
        (function wait() {
          const s = window.recflowShop;
          if (s && s.ready && s.busy === 0) return done(s.timings);
          if (Date.now() - t0 > 30000) return done(null);
          setTimeout(wait, 5);
        })();"""
    )
    if got is None or key not in got:
        raise RuntimeError(f"the page rendered no {key} row: {got}")
    return float(got[key])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shop-") as tmp, ExitStack() as stack:
        root = Path(tmp) / "var"
        settings = load_settings(data_root=root, gen_users=args.users, gen_items=args.items)
        _publish(settings, Path(tmp) / "work")
        cdn, cdn_url = serve_in_background(settings)
        stack.callback(cdn.shutdown)
        service = serve_champion(settings, stack, Path(tmp) / "serve.log")
        where = {
            "cdn": cdn_url,
            "service": service,
            "collector": f"http://127.0.0.1:{free_port()}",
        }
        page = Running(settings, 0, where)
        stack.callback(page.stop)
        driver = chromium()
        stack.callback(driver.quit)
        driver.set_script_timeout(40)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        user = user_id(1)
        url = f"{page.url}/?user={user}"
        _load(driver, url, "firstRow")  # the browser's own start-up is not measured
        session = json.dumps({"id": "benchsession", "recent": ["i00003"]})
        cdn_ms, service_ms = [], []
        for _ in range(args.loads):
            driver.execute_script("sessionStorage.clear()")
            cdn_ms.append(_load(driver, url, "firstRow"))
            driver.execute_script(
                "sessionStorage.setItem('recflow.session', arguments[0])", session
            )
            service_ms.append(_load(driver, url, "serviceRow"))
        driver.execute_script("sessionStorage.clear()")
        _load(driver, url, "firstRow")
        steps = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => [e.name.split('/').pop(),"
            " Math.round(e.startTime), Math.round(e.duration)])"
        )
        nav = driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            " return [Math.round(n.responseEnd), Math.round(n.domContentLoadedEventEnd)]"
        )
    print(f"one CDN load: page response end, DOMContentLoaded (ms): {nav}")
    print("  resources (name, start ms, duration ms): " + ", ".join(map(str, steps)))
    print(
        f"storefront page, {args.users:,} users, {args.items:,} items, cache disabled, "
        f"{args.loads} loads each"
    )
    for name, values in (("CDN row", cdn_ms), ("service row (session)", service_ms)):
        q = statistics.quantiles(values, n=10)
        print(
            f"{name:<24} median {statistics.median(values):7.1f} ms  "
            f"p10 {q[0]:7.1f}  p90 {q[-1]:7.1f}  min {min(values):7.1f}"
        )
    ratio = statistics.median(service_ms) / statistics.median(cdn_ms)
    print(f"service row / CDN row (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
