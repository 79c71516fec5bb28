"""recflow's online service: recommendations for whoever the CDN cannot answer.

Reads the champion model from the BentoML model store (imported from the MLflow registry
by ``jobs.serve.bento_build``, pinned by the build argument ``model_tag``), the Feast online
store (stock flags at start-up and every minute; recent items of unknown users) and the
deny list (:mod:`jobs.serve.access`). Writes the data access log (:mod:`jobs.access_log`):
one line per personal read. All request logic is in :mod:`jobs.serve.answers` and
:mod:`jobs.serve.access`; this module binds it to HTTP and Prometheus.

Endpoints: ``POST /recommend``, ``POST /similar``; BentoML's own ``/livez`` and
``/healthz`` (liveness), ``/readyz`` (readiness, answered here with JSON details) and
``/metrics`` (Prometheus, with the counters and histograms defined below).
"""

import asyncio
import contextlib
import json
import logging
import threading
import time
from typing import Any, TypeVar

import bentoml

with bentoml.importing():
    import anyio
    from starlette.responses import JSONResponse

    from jobs.access_log import AccessLog
    from jobs.answer_log import AnswerLog
    from jobs.config import get_settings
    from jobs.model import control
    from jobs.model.artifact import RecModel
    from jobs.serve import access, answers, feature_source, pauses, schemas
    from jobs.serve import metrics as service_metrics

log = logging.getLogger("recflow.service")

# The service module is the process's entry point: reading settings here fixes the
# request limits in the OpenAPI schema to what RECFLOW_SERVE_* say.
SETTINGS = get_settings()
RecommendRequest, SimilarRequest = schemas.request_types(schemas.Limits.from_settings(SETTINGS))
# `bentoml build --arg model_tag=…` bakes the tag into the Bento; in development pass it to
# `bentoml serve --arg model_tag=…`, or get the newest model of that name.
MODEL_TAG = getattr(bentoml.use_arguments(), "model_tag", None) or f"{SETTINGS.model_name}:latest"
API_ROUTES = {"/recommend": "recommend", "/similar": "similar"}
CORS = (
    {
        "enabled": True,
        "access_control_allow_origins": SETTINGS.serve_cors_origins,
        "access_control_allow_methods": ["GET", "POST", "OPTIONS"],
        "access_control_allow_headers": ["content-type"],
        "access_control_max_age": 600,
    }
    if SETTINGS.serve_cors_origins
    else None
)
# Online-store lookups in flight at once: a hung store holds at most this many threads.
LOOKUP_SLOTS = 16
T = TypeVar("T")

# bentoml.metrics wraps prometheus_client so that metrics of all workers are merged.
RECOMMENDATIONS = bentoml.metrics.Counter(
    name="recflow_recommendations",
    documentation="Answered /recommend requests by source (als, fold_in, popular).",
    labelnames=["source"],
)
SCORING_SECONDS = bentoml.metrics.Histogram(
    name="recflow_scoring_seconds",
    documentation="Time to answer a valid request (feature lookup + scoring), by source.",
    labelnames=["endpoint", "source"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
REJECTED = bentoml.metrics.Counter(
    name="recflow_rejected_requests",
    documentation="Requests answered 422 (404: unknown /similar item), by first bad field"
    " (a request field, body or other: never a name a client made up).",
    labelnames=["endpoint", "field"],
)
UNKNOWN_RECENT_ITEMS = bentoml.metrics.Counter(
    name="recflow_unknown_recent_items",
    documentation="Recent item ids ignored because the model does not know them.",
)
FEATURE_LOOKUPS = bentoml.metrics.Counter(
    name="recflow_feature_lookups",
    documentation="Recent-item lookups in the online store by outcome (hit, empty).",
    labelnames=["outcome"],
)
PERSONAL_ACCESS = bentoml.metrics.Counter(
    name="recflow_personal_access",
    documentation="/recommend requests by access verdict: verified (personal answer), no_key,"
    " bad_key (answered as anonymous), denied (deny list), deny_list_unreadable.",
    labelnames=["outcome"],
)
ACCESS_LOG_DROPPED = bentoml.metrics.Counter(
    name="recflow_access_log_dropped",
    documentation="Data access records lost (the writer's queue was full, or a write failed).",
)
ANSWER_LOG_DROPPED = bentoml.metrics.Counter(
    name="recflow_answer_log_dropped",
    documentation="Answer log records lost (the writer's queue was full, or a write failed).",
)


@bentoml.service(
    name="recflow",
    workers=1,
    traffic={"timeout": 10, "concurrency": 256},
    # No line per request: /metrics counts them, and at hundreds of requests a second the
    # log costs CPU a 2-core box cannot spare. Turn it back on with BENTOML_CONFIG_OPTIONS=
    # "services.recflow.logging.access.enabled=true" (workers: "services.recflow.workers=2").
    logging={"access": {"enabled": False}},
    labels={"component": "online-recommendations"},
    # Browsers call /recommend and /similar from the shop's page (jobs/shop); no cookies are
    # involved (the user key travels in the body), so no credentials are allowed.
    http={"cors": CORS} if CORS else {},
)
class RecflowService:
    """The champion model, the stock mask and the feature store of one worker."""

    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        stored = self.model_ref
        meta = stored.info.metadata
        model = RecModel.load(stored.path_of("model.npz"), factor_dtype=SETTINGS.factor_dtype)
        self.online = answers.OnlineModel.of(
            model,
            name=str(meta.get("registered_name", stored.tag.name)),
            version=str(meta.get("version", stored.tag.version)),
            run_id=str(meta.get("run_id", "")),
        )
        self.model_tag = str(stored.tag)
        self.features = feature_source.FeatureSource(SETTINGS)
        # Online-store lookups in flight at once (see _recent_within).
        self.lookup_slots = threading.BoundedSemaphore(LOOKUP_SLOTS)
        # Content lookups for /similar have their own: they never starve /recommend's.
        self.content_slots = threading.BoundedSemaphore(LOOKUP_SLOTS)
        self.features.on_failure = service_metrics.lookup_failed
        self.features.on_availability = service_metrics.feature_store_available
        self.features.open()
        self.stock = self.features.load_stock(model)
        # Refuses to start (ConfigError) when the publish secret is refused here.
        self.access = access.PersonalAccess.from_settings(SETTINGS)
        self.actor = f"service:{self.online.version or self.model_tag}"
        self.access_log = AccessLog.open(
            SETTINGS, background=True, on_drop=lambda n: ACCESS_LOG_DROPPED.inc(n)
        )
        # The answer log (jobs.answer_log) and the control group (jobs.model.control): the
        # key is derived once, the decision is the one publishing makes.
        self.answer_log = AnswerLog.open(
            SETTINGS, background=True, on_drop=lambda n: ANSWER_LOG_DROPPED.inc(n)
        )
        self.control_key = control.control_key(SETTINGS) if SETTINGS.control_share > 0 else b""
        self._refresher: asyncio.Task[None] | None = None
        # Every collection timed (recflow_gc_pause_seconds): the tail's usual suspect.
        self.gc_meter = pauses.GcPauseMeter(service_metrics.gc_pause).install(flush_every=1.0)
        self.gc_frozen = 0
        service_metrics.started(
            self.online.name, self.online.version, self.online.run_id, self.model_tag
        )
        for outcome in ("hit", "empty"):  # series from the first scrape (see started())
            FEATURE_LOOKUPS.labels(outcome=outcome)
        log.info(
            "serving %s (registered %s v%s): %d users, %d items; feast %s; stock %s",
            self.model_tag,
            self.online.name,
            self.online.version,
            len(model.user_ids),
            len(model.item_ids),
            self.features.status,
            self.stock.source,
        )

    # -- lifecycle ------------------------------------------------------------------------

    @bentoml.on_startup
    async def start_stock_refresh(self) -> None:
        """Stock changes during the day; re-read it without blocking requests.

        Started even without the store: each round first retries opening it, so a Feast
        that was down at start-up is picked up once it answers.
        """
        self._refresher = asyncio.create_task(self._refresh_stock())
        if SETTINGS.serve_gc_freeze:
            # Last step before traffic: the model, the stores and BentoML's app are all
            # built now, and a full collection over them stalled requests for 250-300 ms.
            self.gc_frozen = pauses.freeze_heap()
            log.info("froze %d objects out of the garbage collector's reach", self.gc_frozen)

    @bentoml.on_shutdown
    async def stop_stock_refresh(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await anyio.to_thread.run_sync(self.access_log.close)
        await anyio.to_thread.run_sync(self.answer_log.close)

    async def _refresh_stock(self) -> None:
        while True:
            await asyncio.sleep(feature_source.STOCK_REFRESH_SECONDS)
            await anyio.to_thread.run_sync(self.features.ensure_open)
            state = await anyio.to_thread.run_sync(self.features.load_stock, self.online.model)
            self.stock = state  # one reference swap: requests see the old or the new mask

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once the model is loaded; Feast trouble degrades but does not block."""
        return True, {
            "ready": True,
            "model": {
                "tag": self.model_tag,
                "name": self.online.name,
                "version": self.online.version,
                "run_id": self.online.run_id,
                "users": len(self.online.model.user_ids),
                "items": len(self.online.model.item_ids),
            },
            "feast": {
                "status": self.features.status,
                "recent_items": "online store" if self.features.available else "none (fallback)",
                "stock": self.stock.as_dict(),
            },
            "gc": {"frozen": self.gc_frozen},
            # Still serving, but without recent items or stock filtering.
            "degraded": not self.features.available or self.stock.fallback,
        }

    # -- endpoints ------------------------------------------------------------------------

    @bentoml.api(route="/recommend")
    async def recommend(self, request: RecommendRequest, /) -> schemas.RecommendResponse:  # type: ignore[valid-type]
        """Top-K items for a user: als_session or als (known), fold_in (recent items) or
        popular.

        Personal (als, or fold-in of the user's recent items from Feast) only with the
        user's valid ``user_key`` and the user not on the deny list; else as a stranger.
        """
        started = time.perf_counter()
        mask = self.stock.mask
        verdict = self.access.check(request.user_id, request.user_key)
        PERSONAL_ACCESS.labels(outcome=verdict.outcome).inc()
        in_control = control.in_control_with_key(
            self.control_key, SETTINGS.control_share, request.user_id
        )
        group = control.CONTROL if in_control else control.TREATMENT
        # A control user's answer uses nothing about them (popularity, not even fold-in).
        personal = verdict.personal and not in_control
        request_id = answers.new_request_id()
        found: list[int] = []  # recent items the lookup returned, if it ran
        session = SETTINGS.session_aware
        lookup = None
        if (
            answers.needs_recent_lookup(self.online, request, personal, session)
            and self.features.available
        ):
            items = await self._recent_within(request.user_id)
            if items is not None:
                found.append(len(items))
                lookup = lambda _user: items  # noqa: E731 - the answer reads what was fetched
        response = answers.recommend(
            self.online,
            request,
            lookup,
            mask,
            request_id,
            personal=personal,
            group=group,
            session=session,
        )
        self._log_access(verdict, response, found)
        self._log_answer(verdict, request.user_id, response)
        RECOMMENDATIONS.labels(source=response.source).inc()
        SCORING_SECONDS.labels(endpoint="recommend", source=response.source).observe(
            time.perf_counter() - started
        )
        if response.unknown_recent_item_ids:
            UNKNOWN_RECENT_ITEMS.inc(len(response.unknown_recent_item_ids))
        return response

    @bentoml.api(route="/similar")
    async def similar(self, request: SimilarRequest, /) -> schemas.SimilarResponse:  # type: ignore[valid-type]
        """Items like ``item_id`` (cosine of item factors), in stock; 404 if unknown."""
        started = time.perf_counter()
        content = None
        if (
            self.online.model.content_map is not None
            and request.item_id not in self.online.model.item_index
        ):
            # Newer than the model: placed by its text, if the online store has it. A
            # store that fails or times out is an outage (503, retry), not "unknown".
            timed_out: list[bool] = []
            try:
                content = await feature_source.bounded_lookup(
                    lambda: self.features.content(request.item_id),
                    self.content_slots,
                    SETTINGS.feast_lookup_timeout_seconds,
                    lambda: (
                        timed_out.append(True),
                        service_metrics.lookup_failed("item_content_timeout"),
                    ),
                )
            except feature_source.LookupUnavailableError:
                timed_out.append(True)
            if timed_out:
                return JSONResponse(  # type: ignore[return-value]
                    {
                        "error": "item_id: the online store did not answer; retry",
                        "field": "item_id",
                    },
                    status_code=503,
                    headers={"Retry-After": "1"},
                )
        try:
            response = answers.similar(
                self.online, request.item_id, request.k, self.stock.mask, content=content
            )
        except answers.UnknownItemError:
            REJECTED.labels(endpoint="similar", field="item_id").inc()
            return JSONResponse(  # type: ignore[return-value]
                {"error": f"item_id: unknown item {request.item_id!r}", "field": "item_id"},
                status_code=404,
            )
        SCORING_SECONDS.labels(endpoint="similar", source="als").observe(
            time.perf_counter() - started
        )
        return response

    def _log_access(
        self, verdict: access.Access, response: schemas.RecommendResponse, found: list[int]
    ) -> None:
        for action, outcome in access.reads_to_log(verdict, response.source, found):
            assert verdict.subject is not None
            self.access_log.record(
                self.actor, action, verdict.subject, outcome, response.request_id
            )

    def _log_answer(
        self, verdict: access.Access, user_id: str, response: schemas.RecommendResponse
    ) -> None:
        """One answer log line, by subject hash; none for people being erased (the deny
        list, or a deny list that cannot be read): nothing new may be recorded about them."""
        if verdict.outcome in ("denied", "deny_list_unreadable"):
            return
        self.answer_log.record(
            response.request_id,
            verdict.subject or self.access.subject(user_id),
            response.model_version,
            response.source,
            response.group,
            [item.item_id for item in response.items],
        )

    async def _recent_within(self, user_id: str) -> list[str] | None:
        """The user's recent items from the online store, off the event loop, or None
        when the store takes longer than ``RECFLOW_FEAST_LOOKUP_TIMEOUT_SECONDS`` (or all
        lookup threads are still busy with a hung store): the answer then goes without
        them (the published list, or popular) instead of every personal request waiting.

        A lookup given up on keeps its thread until the store answers; the slots bound how
        many such threads a hung store can hold, and what they find is not counted.
        """
        items = await feature_source.bounded_lookup(
            lambda: self.features.recent(user_id),
            self.lookup_slots,
            SETTINGS.feast_lookup_timeout_seconds,
            lambda: service_metrics.lookup_failed("recent_items_timeout"),
        )
        if items is not None:
            FEATURE_LOOKUPS.labels(outcome="hit" if items else "empty").inc()
        return items


class RequestErrors:
    """ASGI middleware: 422 for invalid requests, JSON details on ``GET /readyz``.

    BentoML answers a request its pydantic input model rejects with a 400 whose body
    lists the errors; the contract of this service (and of FastAPI clients) is a 422
    naming the field, so those answers are rewritten here. BentoML's own request metrics
    sit outside this middleware and still count them as 400. ``/readyz`` is a system
    route BentoML answers with an empty body; here it also says what the service runs
    on and whether Feast is there.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/") or "/"
        if path == "/readyz" and scope["method"] in ("GET", "HEAD"):
            await self._readyz(scope, receive, send)
            return
        endpoint = API_ROUTES.get(path)
        if endpoint is None or scope["method"] != "POST":
            # A browser's CORS preflight (OPTIONS) is answered by BentoML's CORS middleware.
            await self.app(scope, receive, send)
            return
        # The endpoints take JSON only: a form-encoded or untyped body (curl -d) is parsed
        # as JSON too, so it is validated field by field instead of as one odd form key.
        scope = {
            **scope,
            "headers": [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            + [(b"content-type", b"application/json")],
        }

        held: dict[str, Any] | None = None
        body = bytearray()
        started, status = time.perf_counter(), 500  # no answer sent: an internal error

        async def rewrite(message: dict[str, Any]) -> None:
            nonlocal held, status
            if message["type"] == "http.response.start":
                status = 422 if message["status"] == 400 else message["status"]
                if message["status"] == 400:
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                await self._send_422(endpoint, held, bytes(body), send)
                return
            await send(message)

        try:
            await self.app(scope, receive, rewrite)
        finally:
            service_metrics.observe_request(endpoint, status, time.perf_counter() - started)

    @staticmethod
    async def _send_422(endpoint: str, start: dict[str, Any], body: bytes, send: Any) -> None:
        try:
            errors = json.loads(body).get("detail") or []
            if not isinstance(errors, list):
                raise ValueError("no error list")
        except (ValueError, AttributeError):
            errors = [{"loc": (), "msg": body.decode("utf-8", "replace")[:500]}]
        payload = schemas.validation_error_body(errors)
        field = schemas.metric_field(endpoint, payload["detail"][0]["field"])
        REJECTED.labels(endpoint=endpoint, field=field).inc()
        data = json.dumps(payload).encode()
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": 422, "headers": headers})
        await send({"type": "http.response.body", "body": data, "more_body": False})

    @staticmethod
    async def _readyz(scope: dict[str, Any], receive: Any, send: Any) -> None:
        instance = bentoml.get_current_service()
        if instance is None:
            ready, details = False, {"ready": False, "reason": "service not initialised"}
        else:
            ready, details = instance.readiness()
        response = JSONResponse(details, status_code=200 if ready else 503)
        await response(scope, receive, send)


RecflowService.add_asgi_middleware(RequestErrors)
