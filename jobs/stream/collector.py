"""The event collector: ``POST /events`` validates with silver's own rules and produces to Kafka.

A storefront posts one event (a JSON object) or a batch (a JSON array of up to
``RECFLOW_COLLECTOR_MAX_EVENTS``). Every event is judged by
:func:`jobs.ingest.validate.parse_event` against the time window the ingest will apply to
the hour it arrives in, so what the collector accepts, silver accepts (bar a consent
withdrawn in between). A batch is all or nothing: the first bad event answers 422 with
its index, the reason (the quarantine's vocabulary) and the field at fault, and nothing of
the batch is produced, so a client can fix and resend the batch without duplicating any
of it.

The answer is 202 only after the broker has acknowledged every event (``acks=all``,
idempotent producer): a client that gets a 5xx or no answer retries, and silver's
dedupe by ``event_id`` absorbs the copy a retry may add. When the broker is down the
collector answers 503 with ``Retry-After`` instead of holding requests.

Why a small separate service and not a route of the Bento: collectors scale with traffic
of every page view, scorers with recommendation calls; and the Bento keeps no Kafka
dependency. Events are keyed by user so one person's events stay in order in one
partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jobs import tables
from jobs.config import Settings
from jobs.contracts import Reason
from jobs.ingest.silver import time_window
from jobs.ingest.validate import Rejected, parse_event, read_line
from jobs.stream.client import client_config


class BadBatch(Exception):
    """An event of the body breaks the contract: the whole body is refused."""

    def __init__(self, index: int | None, rejected: Rejected) -> None:
        super().__init__(rejected.detail)
        self.index = index
        self.rejected = rejected

    def body(self) -> dict[str, Any]:
        return {
            "error": self.rejected.reason.value,
            "field": self.rejected.field,
            "detail": self.rejected.detail,
            "index": self.index,
        }


class TooLarge(Exception):
    """More events (or bytes) than one request may carry: 413, split the batch."""


def live_window(settings: Settings, now: datetime) -> Any:
    """The window silver will judge an event by when it lands now: its hour's interval."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return time_window(settings, tables.Interval(hour, hour + timedelta(hours=1)))


def split_events(body: bytes, settings: Settings, now: datetime) -> list[tuple[bytes, str]]:
    """The body as (landing line, user id) per event, every one valid, or :class:`BadBatch`.

    One object is landed as the bytes sent (exactly what silver will parse); the events of
    an array are serialized one by one (compact JSON: the same values, one line each).
    """
    window = live_window(settings, now)
    limit = settings.max_line_bytes
    try:
        text = read_line(body, max(limit, len(body)))
        document = json.loads(text)
    except Rejected as exc:
        raise BadBatch(None, exc) from None
    except (ValueError, RecursionError) as exc:
        raise BadBatch(None, Rejected(Reason.UNPARSEABLE, f"not JSON: {str(exc)[:80]}")) from None
    if isinstance(document, list):
        # Each event of an array is serialized again, so what would be lost in that round
        # trip is refused instead: a key given twice (bronze judges a line's raw text, e.g.
        # two ``consent`` keys) and a number beyond a double (it would become Infinity).
        try:
            document = json.loads(text, object_pairs_hook=_no_repeats, parse_float=_finite)
        except Rejected as exc:
            raise BadBatch(None, exc) from None
        if not document:
            raise BadBatch(None, Rejected(Reason.EMPTY_LINE, "an empty array: no event"))
        if len(document) > settings.collector_max_events:
            raise TooLarge(f"{len(document)} events, over {settings.collector_max_events}")
        lines = []
        for event in document:
            try:
                lines.append(json.dumps(event, ensure_ascii=False).encode("utf-8"))
            except UnicodeEncodeError:
                lines.append(json.dumps(event).encode("ascii"))  # parse_event rejects it
        indexed: list[tuple[int | None, bytes]] = list(enumerate(lines))
    else:
        indexed = [(None, body)]
    out = []
    for index, line in indexed:
        try:
            record = parse_event(line, window, limit)
        except Rejected as exc:
            raise BadBatch(index, exc) from None
        out.append((line, str(record["user_id"])))
    return out


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})[0]
        raise Rejected(Reason.UNPARSEABLE, f"{twice} given twice in one event of the array")
    return dict(pairs)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise Rejected(Reason.OUT_OF_RANGE, f"the number {text[:40]} is beyond a double")
    return value


class KafkaOut:
    """An idempotent producer whose deliveries resolve asyncio futures.

    librdkafka calls delivery callbacks from ``poll()``; one daemon thread polls, and each
    callback hands its result to the event loop that waits for it.
    """

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Producer

        self.topic = settings.kafka_events_topic
        self.timeout = settings.collector_timeout_seconds
        self.producer = Producer(
            client_config(
                settings,
                **{
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 2,
                    "message.timeout.ms": int(self.timeout * 1000),
                },
            )
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def send(self, events: list[tuple[bytes, str]]) -> None:
        """Produce every event and wait until the broker has them all (or raise)."""
        from confluent_kafka import KafkaException

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        futures = []
        for value, key in events:
            future: asyncio.Future[None] = loop.create_future()

            def done(err: Any, _msg: Any, future: asyncio.Future[None] = future) -> None:
                def settle() -> None:
                    if future.done():
                        return
                    if err is None:
                        future.set_result(None)
                    else:
                        future.set_exception(KafkaException(err))

                loop.call_soon_threadsafe(settle)

            while True:
                try:
                    self.producer.produce(
                        self.topic, value=value, key=key.encode("utf-8"), on_delivery=done
                    )
                    break
                except BufferError:
                    # The local queue is full (the broker is slow or down): wait for it to
                    # drain, within the request's deadline.
                    if loop.time() > deadline:
                        raise TimeoutError("the producer's queue stayed full") from None
                    await asyncio.sleep(0.05)
                except KafkaException as exc:
                    if _too_large(exc):
                        raise TooLarge(f"an event over the broker's message size: {exc}") from None
                    raise
            futures.append(future)
        try:
            await asyncio.wait_for(
                asyncio.gather(*futures), timeout=max(0.1, deadline - loop.time()) + 5
            )
        except KafkaException as exc:
            if _too_large(exc):
                raise TooLarge(f"an event over the broker's message size: {exc}") from None
            raise

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=5)
        self.producer.flush(self.timeout)


def _too_large(exc: Exception) -> bool:
    from confluent_kafka import KafkaError

    error = exc.args[0] if exc.args else None
    # The client's own size check (_MSG_SIZE_TOO_LARGE) or the broker's (MSG_SIZE_TOO_LARGE).
    codes = {KafkaError.MSG_SIZE_TOO_LARGE, getattr(KafkaError, "_MSG_SIZE_TOO_LARGE", None)}
    return isinstance(error, KafkaError) and error.code() in codes


def make_app(settings: Settings) -> Starlette:
    """The collector app; the producer starts with the app and flushes when it stops."""
    state: dict[str, KafkaOut] = {}

    async def events(request: Request) -> JSONResponse:
        limit = settings.collector_max_body_bytes
        too_large = {"error": "too_large", "detail": f"a body over {limit} bytes"}
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return JSONResponse(too_large, status_code=413)
        body = bytearray()
        try:
            async for chunk in request.stream():  # bounded even without a declared length
                body += chunk
                if len(body) > limit:
                    return JSONResponse(too_large, status_code=413)
        except ClientDisconnect:
            # The client went away mid-body: nothing was produced, and nobody reads an
            # answer (499 as nginx names it, for the access log only).
            return JSONResponse({"error": "client_disconnected"}, status_code=499)
        try:
            # Off the event loop: a 1 MB batch takes tens of milliseconds to judge.
            accepted = await run_in_threadpool(
                split_events, bytes(body), settings, datetime.now(UTC)
            )
        except BadBatch as exc:
            return JSONResponse(exc.body(), status_code=422)
        except TooLarge as exc:
            return JSONResponse({"error": "too_large", "detail": str(exc)}, status_code=413)
        try:
            await state["out"].send(accepted)
        except TooLarge as exc:
            return JSONResponse({"error": "too_large", "detail": str(exc)}, status_code=413)
        except Exception as exc:  # noqa: BLE001 - any delivery failure is "retry later"
            return JSONResponse(
                {"error": "unavailable", "detail": str(exc)[:200]},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse({"accepted": len(accepted)}, status_code=202)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        state["out"] = KafkaOut(settings)
        try:
            yield
        finally:
            state.pop("out").close()

    # The storefront page posts from the browser (jobs/shop): CORS, without credentials.
    middleware = (
        [
            Middleware(
                CORSMiddleware,
                allow_origins=settings.serve_cors_origins,
                allow_methods=["POST", "OPTIONS"],
                allow_headers=["content-type"],
                max_age=600,
            )
        ]
        if settings.serve_cors_origins
        else []
    )
    return Starlette(
        routes=[
            Route("/events", events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
