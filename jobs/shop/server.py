"""``recflow shop``: the storefront page and the little backend a shop's page needs.

The page (``static/``: plain HTML, CSS and JavaScript, no build step) does what a shop's
front end does with recflow: it reads ``recs/latest.json`` and the user's object from the
CDN, falls back to ``popular.json`` on a 404, posts view/click/impression events to the
collector and asks the online service when the session has new events. Everything it
talks to is one of recflow's real servers; this module serves only the page and the part
of a shop's backend the page cannot do itself:

- ``GET /config.json?user=<id>``: where the CDN, the service and the collector are, and,
  for a signed-in user, their user key (:func:`jobs.subjects.user_key`). Only a backend
  holding the publish secret can compute it; a real shop does so for its signed-in
  customer. Here anyone may "sign in" as any id, which is why ``recflow shop`` refuses to
  run with ``RECFLOW_ENV=prod``: it is a demonstration, not a shop.
- ``POST /client-errors``: the page counts what it hid from the shopper (a service that
  timed out, a CDN or collector that failed) here; ``GET /metrics`` exposes the counts
  for Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from jobs.config import ConfigError, Settings
from jobs.contracts import MAX_ID_LENGTH
from jobs.publish import layout

STATIC = Path(__file__).with_name("static")
# What the page may report as failed (a Prometheus label: a fixed set, anything else "other").
ERROR_KINDS: tuple[str, ...] = ("cdn", "service", "similar", "collector", "other")
MAX_ERROR_BODY = 4096
CATALOG_TIMEOUT_MS = 10_000
# Addresses `recflow shop` may listen on: its demo sign-in must not reach a network.
LOOPBACK = ("127.0.0.1", "localhost")
# Items per row on the page (the published lists hold more; a row shows a screenful).
ROW_ITEMS = 8


def urls(settings: Settings) -> dict[str, str]:
    """Where the browser reaches the CDN, the service and the collector (no trailing /)."""
    return {
        "cdn": (settings.shop_cdn_url or f"http://{settings.cdn_host}:{settings.cdn_port}"),
        "service": (
            settings.shop_service_url or f"http://{settings.serve_host}:{settings.serve_port}"
        ),
        "collector": (settings.shop_collector_url or f"http://127.0.0.1:{settings.collector_port}"),
    }


def demo_users(settings: Settings) -> list[str]:
    """Users of the generated shop offered by the page's sign-in (``make demo``'s shop)."""
    from jobs.sources.shop import user_id

    return [user_id(i) for i in range(min(settings.shop_demo_users, settings.gen_users))]


def signed_in(user: str | None) -> str | None:
    """The id a ``?user=`` names, or None for an anonymous visitor; ValueError when bad."""
    if user is None or user == "":
        return None
    if len(user) > MAX_ID_LENGTH or not user.isprintable() or user != user.strip():
        raise ValueError(f"not a user id: {user[:40]!r}")
    return user


def page_config(settings: Settings, user: str | None, where: dict[str, str]) -> dict[str, Any]:
    """What the page needs to start; the user key only for a signed-in user."""
    prefix = settings.publish_prefix
    return {
        **{k: v.rstrip("/") for k, v in where.items()},
        "latest": layout.latest_key(prefix),
        "user": (
            {"id": user, "key": layout.user_key(settings.hmac_secret(), user)} if user else None
        ),
        "demo_users": demo_users(settings),
        "timeout_ms": settings.shop_timeout_ms,
        # The catalog may be megabytes; the row is drawn without it meanwhile.
        "catalog_timeout_ms": max(settings.shop_timeout_ms, CATALOG_TIMEOUT_MS),
        # Longer than the collector may take to answer (its broker wait plus margin): a
        # page that gave up earlier would resend events the broker already has.
        "collector_timeout_ms": int(settings.collector_timeout_seconds * 1000) + 5000,
        "collector_max_events": settings.collector_max_events,
        "collector_max_body_bytes": settings.collector_max_body_bytes,
        "k": ROW_ITEMS,
    }


def make_app(settings: Settings, where: dict[str, str] | None = None) -> Starlette:
    """The page's app; ``where`` overrides :func:`urls` (tests start servers on free ports)."""
    demo = "recflow shop signs anyone in (it hands out any user's key): a demonstration,"
    if settings.env == "prod" or settings.publish_target == "s3":
        raise ConfigError(f"{demo} refused in prod and next to a real bucket")
    if settings.shop_host not in LOOPBACK:
        raise ConfigError(f"{demo} served on 127.0.0.1 only, not {settings.shop_host}")
    settings.hmac_secret()  # a refused secret stops the server here, not at the first page
    where = where or urls(settings)
    registry = CollectorRegistry()
    errors = Counter(
        "recflow_shop_client_errors",
        "Failures the storefront page hid from the shopper, by what failed.",
        ["kind"],
        registry=registry,
    )
    for kind in ERROR_KINDS:
        errors.labels(kind=kind)  # every series exists from the start (rate() needs it)

    async def index(_: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def config(request: Request) -> JSONResponse:
        try:
            user = signed_in(request.query_params.get("user"))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(
            page_config(settings, user, where), headers={"Cache-Control": "no-store"}
        )

    async def client_errors(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_ERROR_BODY:
            return JSONResponse({"error": "too large"}, status_code=413)
        try:
            kind = json.loads(body).get("kind")
        except (ValueError, AttributeError, RecursionError):
            return JSONResponse({"error": "a JSON object with a kind"}, status_code=400)
        errors.labels(kind=kind if kind in ERROR_KINDS else "other").inc()
        return JSONResponse({"counted": True}, status_code=202)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/", index, methods=["GET", "HEAD"]),
            Route("/config.json", config, methods=["GET"]),
            Route("/client-errors", client_errors, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ]
    )


class Running:
    """A page server on a thread (``recflow up``, tests): its URL and how to stop it."""

    def __init__(self, settings: Settings, port: int, where: dict[str, str] | None) -> None:
        import socket
        import threading
        import time

        import uvicorn

        app = make_app(settings, where)  # a refusal before any port is taken
        # Bound here, so port 0 gets a free port and a busy one fails at once.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((settings.shop_host, port))
        except OSError:
            sock.close()
            raise
        self.url = f"http://{settings.shop_host}:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="recflow-shop", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the storefront page server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
