"""Prometheus metrics of the online service that the alert rules and the dashboard read.

Reads and writes nothing: it defines metrics that ``bento/service.py`` updates and BentoML
serves on ``/metrics``. Kept apart from the service so the names the rules and the
dashboard (``infra/monitoring``) depend on live in one place, next to their buckets.

``bentoml.metrics`` wraps prometheus_client so that the samples of all workers are merged
(BentoML runs workers as processes with a shared multiprocess folder).
"""

from __future__ import annotations

import bentoml

# A ms-level service: most answers take 1-20 ms (scoring one user against the catalog);
# the alert threshold (250 ms p99) sits on a bucket edge so histogram_quantile is exact
# there instead of interpolating across a wide bucket.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

REQUEST_SECONDS = bentoml.metrics.Histogram(
    name="recflow_request_seconds",
    documentation="Wall time of every /recommend and /similar request, whatever its status"
    " (validation, scoring, Feast), by endpoint.",
    labelnames=["endpoint"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = bentoml.metrics.Counter(
    name="recflow_request_errors",
    documentation="Requests not answered 200, by endpoint and kind: invalid (422),"
    " not_found (404), internal (5xx or an exception).",
    labelnames=["endpoint", "kind"],
)
FEATURE_LOOKUP_FAILURES = bentoml.metrics.Counter(
    name="recflow_feature_lookup_failures",
    documentation="Online-store lookups that failed (the service fell back), by lookup"
    " (open: opening and probing the store, recent_items, stock).",
    labelnames=["lookup"],
)
# 0/1 per worker; "livemin" merges the live workers' values into one series that reads 0
# as soon as one of them runs without the store (a dead worker's last value is dropped).
FEATURE_STORE_AVAILABLE = bentoml.metrics.Gauge(
    name="recflow_feature_store_available",
    documentation="1 when the Feast online store opened and answered its probe, 0 while the"
    " service falls back (no recent items, no stock filter); re-tried every stock refresh.",
    multiprocess_mode="livemin",
)
# The info-metric idiom: constant 1, the facts in the labels. A Gauge rather than an Info
# because prometheus_client's multiprocess mode (BentoML's) does not support Info; "max"
# merges the workers' samples into one series instead of one per worker PID.
MODEL_INFO = bentoml.metrics.Gauge(
    name="recflow_model_info",
    documentation="The model this service answers with (value 1): registered name, version,"
    " MLflow run id and BentoML model tag.",
    labelnames=["model_name", "model_version", "run_id", "model_tag"],
    multiprocess_mode="max",
)

# Collector pauses stop the event loop (jobs/serve/pauses.py): a full collection of the
# service's heap took 250-300 ms before the heap was frozen at start-up.
GC_PAUSE_SECONDS = bentoml.metrics.Histogram(
    name="recflow_gc_pause_seconds",
    documentation="Time the event loop stood still in Python's cyclic garbage collector,"
    " by generation (2 = a full collection).",
    labelnames=["generation"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

ENDPOINTS: tuple[str, ...] = ("recommend", "similar")
ERROR_KINDS: tuple[str, ...] = ("invalid", "not_found", "internal")
LOOKUPS: tuple[str, ...] = (
    "open",
    "recent_items",
    "recent_items_timeout",
    "stock",
    "item_content",
    "item_content_timeout",
)


def started(model_name: str, model_version: str, run_id: str, model_tag: str) -> None:
    """Publish the model's info metric and create every known labelled series at 0.

    A labelled counter has no series until its first increment, so "no failures yet"
    would read as "no data" on the dashboard and in ``rate()``; created up front, the
    series exist from the first scrape (Prometheus's advice for known label values).
    """
    MODEL_INFO.labels(
        model_name=model_name, model_version=model_version, run_id=run_id, model_tag=model_tag
    ).set(1)
    for endpoint in ENDPOINTS:
        REQUEST_SECONDS.labels(endpoint=endpoint)
        for kind in ERROR_KINDS:
            ERRORS.labels(endpoint=endpoint, kind=kind)
    for lookup in LOOKUPS:
        FEATURE_LOOKUP_FAILURES.labels(lookup=lookup)
    for generation in ("0", "1", "2"):
        GC_PAUSE_SECONDS.labels(generation=generation)


def error_kind(status: int) -> str | None:
    """The ``kind`` label of an answer's HTTP status (None: not an error)."""
    if status < 400:
        return None
    if status == 404:
        return "not_found"
    if status < 500:
        return "invalid"
    return "internal"


def observe_request(endpoint: str, status: int, seconds: float) -> None:
    """Count one finished request: its latency, and its error kind if it failed."""
    REQUEST_SECONDS.labels(endpoint=endpoint).observe(seconds)
    kind = error_kind(status)
    if kind is not None:
        ERRORS.labels(endpoint=endpoint, kind=kind).inc()


def lookup_failed(lookup: str) -> None:
    """Count a failed online-store lookup (``FeatureSource.on_failure``)."""
    FEATURE_LOOKUP_FAILURES.labels(lookup=lookup).inc()


def feature_store_available(available: bool) -> None:
    """Record whether the online store is usable (``FeatureSource.on_availability``)."""
    FEATURE_STORE_AVAILABLE.set(1 if available else 0)


def gc_pause(generation: int, seconds: float) -> None:
    """Record one garbage collection (``pauses.GcPauseMeter``'s observer)."""
    GC_PAUSE_SECONDS.labels(generation=str(generation)).observe(seconds)
