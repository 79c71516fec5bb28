"""The one configuration object of recflow.

Every path, endpoint and knob is read here from environment variables prefixed
``RECFLOW_`` (or a ``.env`` file), with embedded defaults so that a fresh checkout runs
on one machine with no servers. Settings are read when a task runs (``get_settings()``),
never at import time, so DAG files stay cheap to parse and tests can override them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.contracts import MAX_LINE_BYTES

_MASTER = re.compile(
    r"^(local(\[(\*|[0-9]+)(,[0-9]+)?\])?|spark://.+|k8s://.+|yarn|mesos://.+)$", re.ASCII
)
_MEMORY = re.compile(r"^[0-9]+[kmgt]?$", re.IGNORECASE | re.ASCII)

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

# The HMAC key a fresh checkout publishes with: public (it is in this file), so lists keyed
# with it can be enumerated by anyone; accepted only for the local bucket in development.
DEV_PUBLISH_SECRET = "recflow-dev-secret"
MIN_SECRET_CHARS = 16
REDACTED = "***"

# user:password@ of a URI: everything from "://" up to the LAST "@" of the text, so a
# password holding an (unencoded) "@", "/", "?", "#", "," or a space is hidden whole
# (SQLAlchemy accepts postgresql://mlflow:pa#ss@db/mlflow). Over-redacting a host and
# path before an "@" later in the text is the price of never showing part of a password.
_URI_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://).*@", re.DOTALL)
# "user:password@host:6379" without a scheme (a bare Redis address). In a setting's value
# up to its last "@" whatever the password holds; at the start of a message (which may go
# on to quote "@hourly") only a first word holding an "@".
_BARE_USERINFO = re.compile(r"^.*@", re.DOTALL)
_BARE_USERINFO_WORD = re.compile(r"^[^\s/@]*@")
# password=…, token=…, X-Amz-Signature=…, sig=… (Azure SAS), auth=… in a query string or
# a Feast Redis connection string ("host:6379,password=…,ssl=true").
_SECRET_PARAM = re.compile(
    r"(?i)\b([a-z0-9_.-]*(?:password|passwd|pwd|secret|token|signature|credential|key"
    r"|sig|auth|sas))=[^&,;\s]*"
)


def redact(text: str, value: bool = False) -> str:
    """``text`` with the credentials of every URI or connection string in it replaced.

    Used for values of credential-bearing settings (``value``: ``text`` is one setting's
    whole value) and for any message that may quote one (a validation error), so logs and
    ``recflow config`` show where, never who.
    """
    out = _URI_USERINFO.sub(rf"\1{REDACTED}@", text)
    if "://" not in out:
        bare = _BARE_USERINFO if value else _BARE_USERINFO_WORD
        out = bare.sub(f"{REDACTED}@", out)
    return _SECRET_PARAM.sub(rf"\1={REDACTED}", out)


class SecretUri(SecretStr):
    """A URI or connection string that may carry credentials.

    Like ``SecretStr`` the real value comes only from ``get_secret_value()``; unlike it,
    ``str()``, ``repr()`` and ``recflow config`` show the value with its credentials
    redacted, since the host and path are what an operator needs to see.
    """

    def _display(self) -> str:
        return redact(self.get_secret_value(), value=True)


def secret_value(secret: SecretStr | None) -> str | None:
    """The real value of an optional secret setting (for the clients that need it)."""
    return secret.get_secret_value() if secret is not None else None


class ConfigError(ValueError):
    """Raised with a readable message when the environment holds invalid settings."""


class Settings(BaseSettings):
    """recflow settings; each field maps to ``RECFLOW_<FIELD NAME IN CAPS>``."""

    model_config = SettingsConfigDict(
        env_prefix="RECFLOW_", env_file=".env", extra="ignore", validate_default=True
    )

    # -- where things live ----------------------------------------------------------
    env: Literal["dev", "prod"] = Field(
        "dev",
        description="dev (a checkout, `make demo`, tests) or prod (a deployment): prod refuses"
        " the development RECFLOW_PUBLISH_SECRET whatever the target; S3 always does.",
    )
    data_root: Path = Field(Path("var"), description="Root of all runtime data.")
    landing_dir: Path | None = Field(
        None, description="Landing files; default <data_root>/landing."
    )
    lake_dir: str | None = Field(
        None, description="Delta lake root (a folder or an s3a:// URI); default <data_root>/lake."
    )

    # -- Spark ------------------------------------------------------------------------
    spark_master: str = Field("local[*]", description="local[*], spark://host:7077, k8s://…, yarn.")
    spark_driver_memory: str = Field("2g", description="JVM heap of the driver, e.g. 2g.")
    spark_shuffle_partitions: PositiveInt = Field(4, description="Small data wants few partitions.")
    spark_ui: bool = Field(False, description="Start the Spark UI (off for tests and demo).")
    spark_log_level: str = Field("WARN", description="Log level of Spark's JVM (WARN, INFO, …).")
    spark_local_ip: str = Field("127.0.0.1", description="Driver bind address in local mode.")
    spark_ivy_dir: Path = Field(
        Path.home() / ".cache" / "recflow" / "ivy",
        description="Ivy cache of Delta's jars, shared by checkouts so starts after the first"
        " download nothing.",
    )
    spark_delta_version: str = Field(
        "4.4.0", description="Version of Delta's jar (io.delta:delta-spark_<spark>_2.13)."
    )
    spark_maven_repository: SecretUri = Field(
        SecretUri("https://repo1.maven.org/maven2/"),
        description="The one Maven repository Ivy resolves Spark's jars from (a mirror in prod;"
        " user:password@ in it is a secret, shown redacted).",
    )
    spark_extra_packages: list[str] = Field(
        default_factory=list,
        description="More Maven coordinates, e.g. org.apache.hadoop:hadoop-aws:3.5.0 for s3a://.",
    )
    # Tiny reads and writes (an audit row, a table's version, the trigger's two sums, the
    # newest drift run) without a JVM, through delta-rs on the same tables (jobs.lake_light).
    light_delta: bool = Field(
        True,
        description="Read and write tiny lake facts with delta-rs instead of Spark where the"
        " lake is a local folder (a task then starts no JVM); off: Spark everywhere.",
    )

    # -- ingest (bronze → silver → gold) -------------------------------------------
    ingest_schedule: str = Field("@hourly", description="Airflow schedule of the ingest DAG.")
    ingest_start: str = Field(
        "2026-11-01T00:00:00+00:00", description="First data interval of the ingest DAG."
    )
    airflow_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        8080, description="Port of the API server and UI `recflow airflow` starts (127.0.0.1)."
    )
    ingest_end: str | None = Field(
        None,
        description="Last instant the ingest DAG schedules (its end_date); none: no end."
        " `recflow airflow` sets it to the end of the generated shop.",
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "impression": 0.0,
            "view": 1.0,
            "click": 2.0,
            "add_to_cart": 4.0,
            "purchase": 8.0,
        },
        description="Implicit-feedback weight of each event type (0 leaves it out).",
    )
    recency_half_life_days: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Half-life of interaction weights by last_ts age; 0 turns decay off."
    )
    min_event_ts: str = Field(
        "1995-01-01T00:00:00+00:00", description="Older events are implausible (quarantined)."
    )
    max_future_skew_hours: Annotated[float, Field(ge=0.0)] = Field(
        24.0, description="How far past its interval's end an event may be stamped."
    )
    late_data_hours: Annotated[int, Field(ge=0)] = Field(
        48,
        description="Each ingest run re-scans the landing folders of the intervals done in the"
        " last this many hours and reloads those that gained files since (0: never).",
    )
    max_line_bytes: PositiveInt = Field(
        MAX_LINE_BYTES,
        description="Longest landing line (UTF-8 bytes) that is parsed; longer lines are"
        " quarantined as line_too_long.",
    )
    vacuum_retention_hours: Annotated[float, Field(ge=168.0)] = Field(
        168.0,
        description="VACUUM keeps removed files this long (at least Delta's 168 h): gold's"
        " change feed and time travel to pinned versions (training) need them.",
    )
    quality_enabled: bool = Field(
        True, description="Run the Great Expectations gates (jobs.ingest.quality) in ingest."
    )
    quality_row_ratio: Annotated[float, Field(gt=1.0)] = Field(
        10.0, description="Warn when a batch is this many times smaller/larger than the last."
    )
    quality_freshness_hours: Annotated[float, Field(ge=0.0)] = Field(
        6.0, description="Warn when a batch's newest event is older than its interval by this."
    )

    # -- training (ALS), MLflow and the registry gate -----------------------------------
    mlflow_tracking_uri: SecretUri | None = Field(
        None,
        description="MLflow tracking/registry URI; default SQLite under the data root"
        " (credentials in it are shown redacted).",
    )
    mlflow_experiment: str = Field("recflow-als", description="MLflow experiment name.")
    model_name: str = Field("recflow-als", description="Registered model name.")
    retrain_threshold: PositiveInt = Field(
        10_000, description="New gold interactions (events) since the last training to retrain."
    )
    max_model_age_hours: Annotated[float, Field(gt=0)] = Field(
        168.0,
        description="Retrain when the champion was promoted longer ago than this (once per"
        " stale champion: a rejected retry waits for new data).",
    )
    # Defaults tuned on MovieLens 100K (BENCHMARKS.md): with confidence 1 + alpha * weight
    # and weights up to 8, a small alpha and a firm (ALS-WR scaled) regulariser win.
    als_rank: PositiveInt = Field(32, description="ALS: latent factors per user and item.")
    als_reg: Annotated[float, Field(ge=0.0)] = Field(
        0.3, description="ALS: regularisation (scaled by each row's count, ALS-WR)."
    )
    als_alpha: Annotated[float, Field(gt=0.0)] = Field(
        1.0, description="ALS: confidence 1 + alpha x weight of an interaction."
    )
    als_iterations: PositiveInt = Field(15, description="ALS: alternating sweeps.")
    als_weighting: Literal["none", "log", "bm25", "tfidf"] = Field(
        "none",
        description="ALS: how gold weights become confidences (jobs.train.weighting).",
    )
    als_half_life_days: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="ALS: recency half-life applied before the weighting; 0 is off."
    )
    # Which ALS solver fits (issue 17): Spark's, which scales out, or `implicit`'s CPU
    # conjugate gradient on this machine (jobs.train.als_implicit), ~20x faster where the
    # data fits. Both solve the same ALS-WR problem (a test holds their NDCG together);
    # `auto` takes implicit up to both limits below and Spark beyond either. Training
    # already collects gold's pairs to the driver as a pandas frame (~40 bytes a pair), so
    # 50 M pairs (~2.4 GB more for implicit, ~1 min a fit at the measured rate) is still
    # one machine's work; beyond it Spark's solve scales out.
    # Spark by default: on the demo's shop the implicit engine's time-based NDCG@10 was
    # 0.225 against Spark's 0.257 on the same data (popularity 0.2125), which the gate
    # rejects; it matches Spark on MovieLens and the 489 k-pair set (BENCHMARKS.md).
    als_engine: Literal["auto", "spark", "implicit"] = Field(
        "spark", description="ALS engine: spark, implicit (one machine), or auto (by data size)."
    )
    als_engine_max_pairs: PositiveInt = Field(
        50_000_000,
        description="auto: implicit up to this many (user, item) pairs in one fit, Spark beyond.",
    )
    als_engine_max_memory_mb: PositiveInt = Field(
        4096,
        description="auto: implicit only while its sparse matrices and factors (~32 bytes a"
        " pair plus ~24 bytes a factor value) fit in this many MiB of the driver.",
    )
    als_implicit_threads: Annotated[int, Field(ge=0)] = Field(
        0, description="implicit engine: OpenMP threads (0: all cores; results do not change)."
    )
    search_trials: Annotated[int, Field(ge=1)] = Field(
        12,
        description="Search budget: ALS fits per protocol. The defaults and the grid entries"
        " are tried first, then Optuna's TPE proposes the rest.",
    )
    search_timeout_seconds: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Search budget in wall time per protocol (0: trials only)."
    )
    search_ranks: list[int] = Field(
        default_factory=lambda: [16, 32, 64, 128], description="Search: ranks TPE may pick."
    )
    search_weightings: list[Literal["none", "log", "bm25", "tfidf"]] = Field(
        default_factory=lambda: ["none", "log", "bm25", "tfidf"],
        description="Search: weighting schemes TPE may pick.",
    )
    search_half_lives: list[float] = Field(
        default_factory=lambda: [0.0, 30.0, 180.0],
        description="Search: recency half-lives (days, 0 off) TPE may pick.",
    )
    ease_lambdas: list[float] = Field(
        default_factory=lambda: [100.0, 300.0, 1000.0],
        description="EASE baseline: penalties tried on the validation split.",
    )
    ease_max_items: PositiveInt = Field(
        20_000, description="EASE baseline only up to this many items (dense inverse)."
    )
    gate_bootstrap_samples: Annotated[int, Field(ge=100)] = Field(
        2000, description="Bootstrap resamples of users for metric intervals and the gate."
    )
    gate_confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = Field(
        0.95, description="Level of the bootstrap intervals the gate decides on."
    )
    als_grid: list[dict[str, float | str]] = Field(
        default_factory=lambda: [
            # The best the TPE search found on MovieLens 100K (BENCHMARKS.md): tried
            # early by every search, so a small budget starts from it.
            {"reg": 0.08, "alpha": 0.07, "half_life_days": 30.0},
            {"rank": 64, "reg": 0.1, "alpha": 0.3},
            {"reg": 0.1, "alpha": 0.5},
            {"rank": 16, "reg": 0.1},
        ],
        description="Search: each entry overrides the ALS defaults (rank, reg, alpha,"
        " iterations) for one nested run; the defaults are always tried.",
    )
    eval_k: PositiveInt = Field(10, description="K of precision/recall/NDCG/MAP@K.")
    test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(
        0.1, description="Latest slice of interactions held out for the test (time split)."
    )
    validation_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = Field(
        0.1, description="Latest slice of the training part used to pick hyperparameters."
    )
    eval_stratified: bool = Field(
        True, description="Also evaluate on a per-user stratified 75/25 random split."
    )
    gate_min_lift: Annotated[float, Field(ge=0.0)] = Field(
        0.1, description="Challenger must beat popularity's NDCG@K by this relative margin."
    )
    gate_max_relative_drop: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.05,
        description="Margin of the gate: the champion is replaced only if the lower end of the"
        " paired bootstrap interval of the challenger's relative NDCG@K difference to each"
        " incumbent (champion and `best`, their recipes refit on the same split) is at least"
        " minus this fraction.",
    )
    min_train_interval_hours: Annotated[float, Field(ge=0.0)] = Field(
        1.0,
        description="No training starts sooner than this after the last one started"
        " (finished, failed or rejected); 0 turns the pause off.",
    )
    review_mode: bool = Field(
        False, description="Only a reviewer moves the champion alias (in the MLflow UI)."
    )

    # -- publishing (per-user JSON on S3 behind a CDN) -----------------------------------
    publish_k: Annotated[int, Field(ge=1, le=500)] = Field(
        50, description="Items in each user's published list."
    )
    publish_block: PositiveInt = Field(
        256, description="Users scored per matrix product (memory ~ block x items x 4 B)."
    )
    publish_target: Literal["local", "s3"] = Field(
        "local", description="Where objects go: a local folder standing in for the bucket, or S3."
    )
    publish_dir: Path | None = Field(
        None, description="The local bucket (target local); default <data_root>/cdn."
    )
    publish_bucket: str = Field("recflow-recs", description="S3 bucket (target s3).")
    publish_prefix: str = Field("", description="Key prefix inside the bucket, e.g. shop1/.")
    publish_secret: SecretStr = Field(
        SecretStr(DEV_PUBLISH_SECRET),
        description="HMAC key that turns user ids into object keys (at least 16 characters);"
        " the development default is refused for S3 and in RECFLOW_ENV=prod.",
    )
    publish_workers: Annotated[int, Field(ge=1, le=256)] = Field(
        16, description="Concurrent uploads (bounded thread pool)."
    )
    publish_max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        8, description="Attempts per request; throttling and 5xx back off exponentially."
    )
    publish_keep: Annotated[int, Field(ge=1)] = Field(
        3, description="Publishes kept; older ones are deleted (never the live one)."
    )
    publish_cache_seconds: PositiveInt = Field(
        60,
        description="Cache lifetime of recs/latest.json and of the slots' user objects"
        " (objects under recs/v/<publish_id>/ are immutable).",
    )

    # -- publishing at scale (issue 17): slots, skipped PUTs, parallel encoding ----------
    publish_slots: Annotated[int, Field(ge=2, le=16)] | None = Field(
        None,
        description="Folders the users' objects rotate through; a publish writes into one"
        " that is not live and skips objects whose bytes that folder already holds."
        " Default: RECFLOW_PUBLISH_KEEP (at least 2), so a rollback reaches every kept"
        " publish.",
    )
    publish_encode_workers: Annotated[int, Field(ge=0, le=64)] = Field(
        2,
        description="Processes building the users' gzip JSON (0: in the uploading process;"
        " publishes under 4,000 users always build in-process).",
    )
    publish_gzip_level: Annotated[int, Field(ge=1, le=9)] = Field(
        3, description="gzip level of published objects (6: ~1.6x the time, ~2 % fewer bytes)."
    )
    s3_endpoint_url: SecretUri | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto); default AWS."
    )
    aws_region: str = Field("us-east-1", description="AWS region of the bucket and CloudFront.")
    aws_access_key_id: SecretStr | None = Field(
        None, description="Default: boto3's credential chain; never printed."
    )
    aws_secret_access_key: SecretStr | None = Field(
        None, description="Default: boto3's credential chain; never printed."
    )
    cloudfront_distribution_id: str | None = Field(
        None, description="When set, each flip invalidates recs/latest.json there."
    )
    cloudfront_endpoint_url: SecretUri | None = Field(None, description="For tests against moto.")
    cdn_host: str = Field("127.0.0.1", description="Bind address of `recflow cdn`.")
    cdn_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8765, description="Port of `recflow cdn`."
    )
    cdn_cors_origin: str = Field("*", description="Access-Control-Allow-Origin of `recflow cdn`.")
    publish_catalog_max_items: PositiveInt = Field(
        20_000,
        description="Largest model (items) whose publish writes recs/v/<publish_id>/catalog.json"
        " (the cards a CDN-only page draws; above it a shop's own catalog service does).",
    )

    # -- the storefront page (`recflow shop`, jobs/shop) ------------------------------------
    shop_host: str = Field("127.0.0.1", description="Bind address of `recflow shop`.")
    shop_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8780, description="Port of `recflow shop` (the storefront page)."
    )
    shop_cdn_url: str | None = Field(
        None,
        description="Base URL the page reads the published JSON from; default the CDN"
        " stand-in (http://RECFLOW_CDN_HOST:RECFLOW_CDN_PORT).",
    )
    shop_service_url: str | None = Field(
        None,
        description="Base URL the page asks /recommend and /similar; default"
        " http://RECFLOW_SERVE_HOST:RECFLOW_SERVE_PORT.",
    )
    shop_collector_url: str | None = Field(
        None,
        description="Base URL the page posts events to; default"
        " http://127.0.0.1:RECFLOW_COLLECTOR_PORT.",
    )
    shop_timeout_ms: Annotated[int, Field(ge=50, le=60_000)] = Field(
        1500,
        description="How long the page waits for the service or the CDN before it keeps what"
        " it shows (or falls back) and counts an error.",
    )
    shop_demo_users: int = Field(
        6, ge=0, le=50, description="Users of the generated shop the page offers to sign in as."
    )
    serve_cors_origin: str = Field(
        "*",
        description="Origins allowed to call the online service and the event collector from"
        " a browser (the storefront page does): '*', or a comma-separated list; '' turns"
        " CORS off.",
    )

    # -- features (Feast) and the online service (BentoML) -------------------------------
    feast_project: str = Field("recflow", description="Feast project name.")
    feast_online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Online store: SQLite file (default) or Redis."
    )
    feast_redis_connection: SecretUri = Field(
        SecretUri("127.0.0.1:6379"),
        description="Redis connection string when the online store is redis (its password="
        " and user:password@ are shown redacted).",
    )
    feast_recent_items: PositiveInt = Field(
        20, description="Most recent item ids kept per user as a feature (for fold-in)."
    )
    feast_ttl_days: PositiveInt = Field(30, description="TTL of the feature views.")
    feast_lookup_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        0.1,
        description="Longest the service waits for a user's recent items from the online"
        " store; past it the answer goes without them (counted as recent_items_timeout).",
    )
    serve_host: str = Field("127.0.0.1", description="Bind address of the Bento service.")
    serve_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        3000, description="Port of the Bento service."
    )
    serve_max_k: Annotated[int, Field(ge=1, le=500)] = Field(
        100, description="Largest k a /recommend or /similar request may ask for."
    )
    serve_max_recent_items: PositiveInt = Field(
        200, description="Most recent_item_ids a request may carry."
    )

    # -- the online service's tail (issue 17; jobs/serve/pauses.py) ----------------------
    # A full garbage collection of the loaded service stopped the event loop for
    # 250-300 ms; freezing the start-up heap keeps the collector off those objects.
    serve_gc_freeze: bool = Field(
        True,
        description="Freeze the service's heap once it is loaded (gc.freeze) so the cyclic"
        " collector never walks the model, the modules and the server again.",
    )

    # -- factor precision (issue 17): the item factors publishing and the service score --
    # The artifact stays float32; this is applied when a model is loaded to score
    # (jobs/model/quantize.py). float32 stays the default: see BENCHMARKS.md, "Quantized
    # item factors" (issue 17), for the lists, memory and latency.
    factor_dtype: Literal["float32", "float16", "int8"] = Field(
        "float32",
        description="Precision of the item factors when scoring: float32, float16 or int8"
        " (with a per-item scale); the published and served lists use the same one.",
    )

    # -- privacy: erasure, consent, retention --------------------------------------------
    privacy_dir: Path | None = Field(
        None,
        description="Deny list and erasure working files; default <data_root>/privacy (shared"
        " storage in a deployment: every service worker reads the deny list).",
    )
    subject_secret: SecretStr | None = Field(
        None,
        description="Key of the subject hashes that name people in the deny list, consent"
        " table and privacy logs; default: derived from RECFLOW_PUBLISH_SECRET. Set it once and"
        " never change it: rotating the publish secret then leaves those records intact.",
    )
    erasure_batch_limit: PositiveInt = Field(
        10_000, description="Most erasure requests one privacy run takes (the rest wait)."
    )
    # The public popular list (popular.json, the service's `popular` answer) is released
    # with user-level differential privacy (jobs/model/dp.py, README "Privacy budget of
    # popular.json"); drawn once per trained model, so these apply at training.
    popular_epsilon: Annotated[float, Field(gt=0, le=10)] = Field(
        1.0,
        description="Privacy budget ε of the public popular list, per trained model (Laplace"
        " scale = popular_max_items_per_user / ε).",
    )
    popular_delta: Annotated[float, Field(gt=0, lt=1e-3)] = Field(
        1e-6,
        description="δ of the public popular list: chance an item only one person touched is"
        " shown; keep it well below 1 / number of users.",
    )
    popular_max_items_per_user: Annotated[int, Field(ge=1, le=100)] = Field(
        3,
        description="Most items one person counts for in the public popular list (their"
        " highest-weight ones): the L1 sensitivity of the counts.",
    )
    # Retention (jobs.privacy.retention, run by the maintenance DAG; README "Retention").
    # 0 keeps a store for ever; the minimums are checked in _check_retention.
    retention_landing_days: Annotated[int, Field(ge=0)] = Field(
        30,
        description="Landing hour and catalog folders older than this are deleted once bronze"
        " holds every file in them (0: kept for ever). More than RECFLOW_LATE_DATA_HOURS, at"
        " most RECFLOW_RETENTION_BRONZE_DAYS.",
    )
    retention_bronze_days: Annotated[int, Field(ge=0)] = Field(
        90,
        description="bronze_events days (_dt) older than this are deleted (0: kept for ever);"
        " more than RECFLOW_LATE_DATA_HOURS, since late reloads re-read bronze.",
    )
    retention_quarantine_days: Annotated[int, Field(ge=0)] = Field(
        30, description="Quarantine days (_dt) older than this are deleted (0: kept for ever)."
    )
    retention_answers_days: Annotated[int, Field(ge=0)] = Field(
        90,
        description="Answer-log day folders (dt=) and monitor/rec_answers days older than"
        " this are deleted (0: kept for ever); they name people by subject hash.",
    )
    retention_quality_days: Annotated[int, Field(ge=0)] = Field(
        30,
        description="Great Expectations validation results and their Data Docs pages older"
        " than this are deleted (0: kept for ever).",
    )
    retention_feast_snapshot_days: Annotated[int, Field(ge=0)] = Field(
        60,
        description="Feast parquet snapshots older than this are deleted, never a view's newest"
        " (0: kept for ever); more than RECFLOW_FEAST_TTL_DAYS.",
    )
    retention_staging_hours: Annotated[int, Field(ge=0)] = Field(
        72,
        description="Staged publish scores older than this are deleted, never the live"
        " publish's (0: only pruning removes them); at least 24.",
    )
    retention_model_versions: Annotated[int, Field(ge=0)] = Field(
        10,
        description="Registered model versions kept: the newest this many, plus every aliased"
        " one, the live publish's and the champion's predecessor (0: all kept).",
    )

    # -- monitoring: attribution, the answer log and the control group (issue 15) -------
    answers_dir: Path | None = Field(
        None,
        description="The online service's answer log (one JSON line per /recommend answer);"
        " default <data_root>/landing/answers.",
    )
    attribution_window_hours: Annotated[float, Field(gt=0.0)] = Field(
        24.0,
        description="A click counts for the recommended impression of the same user and item"
        " this long before it (and a cart or purchase for that click likewise).",
    )
    control_share: Fraction = Field(
        0.05,
        description="Share of users in the control group, served popularity instead of their"
        " personal list so the lift of personalization is measured (0 disables it).",
    )

    # -- the synthetic shop -----------------------------------------------------------
    seed: int = Field(42, description="Seed of the generator, the splits and ALS.")
    gen_users: PositiveInt = Field(2_000, description="Synthetic shop: users.")
    gen_items: PositiveInt = Field(200, description="Synthetic shop: catalog items.")
    gen_days: PositiveInt = Field(7, description="Synthetic shop: days of events.")
    gen_sessions_per_user_day: Annotated[float, Field(gt=0)] = Field(
        0.6, description="Synthetic shop: mean sessions per user and day."
    )
    gen_start: str = Field("2026-11-01T00:00:00+00:00", description="First generated instant.")
    gen_malformed_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="Synthetic shop: share of malformed lines (quarantine drills)."
    )
    gen_duplicate_fraction: Fraction = Field(
        0.0, description="Synthetic shop: share of events delivered twice."
    )
    # -- the reacting storefront and injected drift (jobs/sources/storefront.py) ------------
    gen_react: bool = Field(
        False,
        description="Synthetic shop: fill the first impression slots of each session with the"
        " live recommendations (the current publish; `recflow generate --react`).",
    )
    gen_rec_slots: Annotated[int, Field(ge=1, le=50)] = Field(
        4, description="Reacting shop: impression slots per session shown from the user's list."
    )
    gen_recs_url: str | None = Field(
        None,
        description="Reacting shop: base URL of the CDN (stand-in) to read recs/latest.json and"
        " the lists from; default: the publish store itself (RECFLOW_PUBLISH_TARGET).",
    )
    gen_service_url: str | None = Field(
        None,
        description="Reacting shop: base URL of the online service; users without a published"
        " list get its /recommend answer instead of popular.json.",
    )
    gen_drift_day: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="Synthetic shop: from this day (0 = the first) users' tastes and the catalog"
        " mix shift (`recflow generate --drift DAY`); unset: no drift.",
    )
    gen_drift_share: Fraction = Field(
        0.6, description="Drift: share of users whose favourite categories move to others."
    )
    gen_drift_boost: Annotated[float, Field(ge=1.0, le=100.0)] = Field(
        5.0, description="Drift: factor on the exposure (popularity) of one trending category."
    )

    # -- metrics and alerts: Prometheus, the Pushgateway (issue 15) -----------------------
    pushgateway_url: str | None = Field(
        None,
        description="Pushgateway the batch metrics (jobs.monitor.export) are pushed to, e.g."
        " http://127.0.0.1:9091; unset: computed and logged, not pushed.",
    )
    metrics_job: str = Field(
        "recflow_batch", description="Pushgateway job name of the batch metrics (one group)."
    )
    quarantine_window_runs: PositiveInt = Field(
        24, description="Ingest runs before the last one whose quarantine rate is the baseline."
    )
    monitoring_config_dir: Path = Field(
        Path(__file__).resolve().parents[1] / "infra" / "monitoring",
        description="prometheus.yml template, alert rules and dashboards (infra/monitoring).",
    )
    prometheus_binary: str = Field("prometheus", description="Prometheus server binary.")
    pushgateway_binary: str = Field(
        "prometheus-pushgateway", description="Pushgateway binary (Debian's name)."
    )
    # Not Debian's 9090: its packaged Prometheus may already run there as a service.
    prometheus_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        9095, description="Port of the Prometheus `recflow up` starts (0: any free port)."
    )
    pushgateway_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        9091,
        description="Port of the Pushgateway `recflow up` starts (0: any free port). Fixed by"
        " default so the RECFLOW_PUSHGATEWAY_URL it prints stays right across restarts.",
    )
    prometheus_scrape_interval: str = Field(
        "15s", description="Scrape and rule evaluation interval of that Prometheus."
    )

    # -- Kafka (jobs.stream; README "Real time") ----------------------------------------
    kafka_bootstrap: str = Field(
        "",
        description="host:port[,host:port…] of the Kafka cluster; empty: no Kafka (`recflow up`"
        " and the tests start a local broker and pass its address).",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka client security.protocol (SASL/TLS for a real cluster)."
    )
    kafka_sasl_mechanism: str | None = Field(
        None, description="Kafka sasl.mechanism (PLAIN, SCRAM-SHA-512, …) when SASL is on."
    )
    kafka_sasl_username: str | None = Field(None, description="Kafka SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="Kafka SASL password (a secret, shown redacted)."
    )
    kafka_ssl_ca_location: Path | None = Field(
        None, description="CA bundle the Kafka client trusts for TLS (ssl.ca.location)."
    )
    kafka_version: str = Field(
        "4.4.0", description="Version of org.apache.kafka:kafka_2.13 the local broker runs."
    )
    kafka_local_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        9092, description="Port of the local broker `recflow up` starts (0: any free port)."
    )
    kafka_jars_dir: Path = Field(
        Path.home() / ".cache" / "recflow" / "kafka",
        description="Where the local broker's jars are resolved to (once per machine).",
    )
    kafka_events_topic: str = Field("recflow.events", description="Topic of raw events.")
    kafka_catalog_topic: str = Field("recflow.catalog", description="Topic of catalog changes.")
    kafka_partitions: PositiveInt = Field(
        3, description="Partitions of the topics recflow creates (consumers scale up to this)."
    )
    kafka_retention_hours: PositiveInt = Field(
        168,
        description="Retention of the topics recflow creates: how long the landing consumer"
        " may be down without losing events.",
    )
    kafka_landing_group: str = Field(
        "recflow-landing", description="Consumer group of `recflow stream landing`."
    )
    kafka_landing_instance: str | None = Field(
        None,
        description="Static group membership id of this landing consumer (unique per process,"
        " e.g. the host name): a restarted consumer takes its partitions back at once instead"
        " of after the group's session timeout.",
    )
    collector_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        3001, description="Port of the event collector (`recflow collector`, POST /events)."
    )
    collector_max_events: PositiveInt = Field(
        500, description="Most events one POST /events may carry (more: 413)."
    )
    collector_max_body_bytes: PositiveInt = Field(
        1_048_576, description="Largest POST /events body in bytes (more: 413)."
    )
    collector_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        5.0,
        description="How long the collector waits for the broker to acknowledge a request's"
        " events before answering 503 (the client retries).",
    )
    kafka_batch_max: PositiveInt = Field(
        10_000, description="Messages the landing consumer gathers before writing files."
    )
    kafka_batch_seconds: Annotated[float, Field(gt=0)] = Field(
        2.0, description="Longest the landing consumer waits to fill a batch."
    )
    kafka_features_group: str = Field(
        "recflow-features",
        description="Consumer group of `recflow stream worker` (events into Feast).",
    )
    stream_push_seconds: Annotated[float, Field(gt=0)] = Field(
        0.05,
        description="Longest the stream worker gathers events before one push to Feast"
        " (the click-to-feature latency it adds at most).",
    )
    stream_users_cached: PositiveInt = Field(
        100_000,
        description="Users whose recent items the stream worker keeps in memory (older ones"
        " are read back from the online store when they return).",
    )
    content_embeddings: bool = Field(
        True,
        description="Embed each catalog item's text (title, category, brand, description)"
        " into item_content at ingest, for cold-start items and content similarity.",
    )
    cold_items_per_list: Annotated[int, Field(ge=0)] = Field(
        2,
        description="At most this many items without interactions (ranked by factors mapped"
        " from their content) in one list; 0 keeps them out of lists.",
    )
    hybrid_weights: list[Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [0.0, 0.05, 0.15, 0.4, 1.0],
        description="Search: weights of the content term (an item's content similarity to"
        " the user's latest items) each trial's factors are scored with on the validation"
        " slice; the best becomes part of the recipe. 0 is ALS alone; [0] switches the"
        " hybrid off.",
    )
    hybrid_min_gain: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = Field(
        0.0,
        description="A content weight above 0 enters the recipe only if the paired"
        " bootstrap interval of its validation NDCG gain over ALS alone (relative; the"
        " gate's samples and level) lies above this fraction, so noise never adds it.",
    )
    hybrid_dims: Annotated[int, Field(ge=1, le=256)] = Field(
        32,
        description="Principal directions of the catalog's content the hybrid score keeps"
        " (extra dimensions of every scoring product).",
    )
    hybrid_recent_items: Annotated[int, Field(ge=1)] = Field(
        20,
        description="A user's content profile is the mean of their this many latest items.",
    )
    session_eval_users: PositiveInt = Field(
        2_000,
        description="Users (a seeded sample) the training run replays as sessions to score"
        " session-aware answers against the static list (test_session_* metrics).",
    )
    session_aware: bool = Field(
        True,
        description="Answer a known user from their stored vector moved by the items they"
        " interacted with since the model was trained (source `als_session`).",
    )

    # -- drift monitoring (jobs.monitor; README "Drift") ----------------------------------
    # PSI thresholds: the credit-scoring convention (< 0.1 stable, 0.1-0.2 moderate shift,
    # >= 0.2 significant shift; see jobs/monitor/drift.py for the sources).
    monitor_window_days: PositiveInt = Field(
        1,
        description="Drift: days of silver events up to the run's date compared with the"
        " champion's training window.",
    )
    monitor_reference_days: PositiveInt = Field(
        7,
        description="Drift: the reference is the last this many days of the silver events"
        " the champion was trained on.",
    )
    drift_psi_warn: Annotated[float, Field(gt=0)] = Field(
        0.1, description="Drift: PSI at or above this is a warning."
    )
    drift_psi_alert: Annotated[float, Field(gt=0)] = Field(
        0.2, description="Drift: PSI at or above this is an alert (schedules training)."
    )
    drift_ks_alpha: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.01, description="Drift: KS p-values below this are significant (a warning)."
    )
    drift_ks_alert: Annotated[float, Field(gt=0, le=1)] = Field(
        0.1,
        description="Drift: a significant KS statistic D at or above this is an alert"
        " (effect size: on millions of events any difference is significant).",
    )
    drift_unknown_share_alert: Annotated[float, Field(gt=0, le=1)] = Field(
        0.2,
        description="Drift: a rise of the share of events by users unknown to the"
        " champion of at least this (absolute, e.g. 0.05 -> 0.25) is an alert; half is a"
        " warning.",
    )
    drift_ctr_drop_alert: Annotated[float, Field(gt=0, le=1)] = Field(
        0.25,
        description="Drift: a relative drop of the champion's recommendation CTR against its"
        " own trailing RECFLOW_MONITOR_REFERENCE_DAYS of at least this (0.25: a quarter of"
        " the clicks lost) is an alert when significant; half is a warning.",
    )
    drift_ctr_alpha: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.01,
        description="Drift: the CTR drop must be significant at this level (one-sided"
        " two-proportion z-test) to count.",
    )
    drift_score_sample: PositiveInt = Field(
        2_000,
        description="Drift: users sampled per window for the champion's top-1 score distribution.",
    )

    @field_validator("spark_master")
    @classmethod
    def _check_master(cls, value: str) -> str:
        if not _MASTER.match(value):
            raise ValueError(
                f"{value!r} is not a Spark master URL "
                "(local[*], local[N], spark://…, k8s://…, yarn)"
            )
        return value

    @field_validator("lake_dir")
    @classmethod
    def _check_lake_dir(cls, value: str | None) -> str | None:
        # Hadoop's s3a refuses secrets in the URI, and the lake path is logged and stored
        # in Delta's and MLflow's metadata: credentials go in the AWS chain instead.
        if value is not None and redact(value) != value:
            raise ValueError(
                "holds credentials (user:password@ or password=); give s3a its keys"
                " through the AWS credential chain instead"
            )
        return value

    @field_serializer(
        "spark_maven_repository",
        "mlflow_tracking_uri",
        "s3_endpoint_url",
        "cloudfront_endpoint_url",
        "feast_redis_connection",
        when_used="json",
    )
    def _show_uri(self, value: SecretUri | None) -> str | None:
        """`recflow config` shows where a URI points, with its credentials redacted."""
        return str(value) if value is not None else None

    @field_validator("spark_driver_memory")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        if not _MEMORY.match(value):
            raise ValueError(f"{value!r} is not a JVM memory size such as 512m or 2g")
        return value

    @field_validator("event_weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float]) -> dict[str, float]:
        from jobs.contracts import EVENT_TYPES

        unknown = set(value) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types {sorted(unknown)}; known: {EVENT_TYPES}")
        if any(w < 0 for w in value.values()):
            raise ValueError("weights must be >= 0")
        if not any(w > 0 for w in value.values()):
            raise ValueError("at least one event type needs a positive weight")
        return {t: float(value.get(t, 0.0)) for t in EVENT_TYPES}

    @field_validator("ingest_start", "ingest_end", "min_event_ts", "gen_start")
    @classmethod
    def _check_instant(cls, value: str | None) -> str | None:
        from datetime import datetime

        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 instant") from None
        if parsed.tzinfo is None:
            raise ValueError(f"{value!r} needs a time zone, e.g. +00:00")
        return value

    @field_validator("ingest_schedule")
    @classmethod
    def _check_ingest_schedule(cls, value: str) -> str:
        """Landing is partitioned by hour: intervals must start and end on whole hours."""
        hourly_presets = {"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
        fields = value.split()
        if value in hourly_presets or (len(fields) == 5 and fields[0] == "0"):
            return value
        raise ValueError(
            f"{value!r}: the ingest schedule must fire on whole hours (landing is partitioned "
            f"by hour): one of {sorted(hourly_presets)} or a 5-field cron whose minute is 0"
        )

    @field_validator("spark_log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        levels = {"ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF", "TRACE"}
        if value.upper() not in levels:
            raise ValueError(f"{value!r} is not one of {sorted(levels)}")
        return value.upper()

    @model_validator(mode="after")
    def _check_retention(self) -> Settings:
        """Retention may not remove what a running pipeline still reads back."""
        late_days = self.late_data_hours / 24
        problems = []
        for name in ("retention_landing_days", "retention_bronze_days"):
            days = getattr(self, name)
            if days and days <= late_days:
                # Late reloads re-scan landing and re-read bronze over this window.
                problems.append(
                    f"RECFLOW_{name.upper()}={days} must exceed RECFLOW_LATE_DATA_HOURS"
                    f" ({self.late_data_hours} h), or be 0 (kept for ever)"
                )
        landing, bronze = self.retention_landing_days, self.retention_bronze_days
        if landing and bronze and landing > bronze:
            # Landing goes only once bronze holds its files: after bronze dropped a day,
            # its landing files would look never loaded and stay for ever.
            problems.append(
                f"RECFLOW_RETENTION_LANDING_DAYS={landing} must be at most"
                f" RECFLOW_RETENTION_BRONZE_DAYS={bronze} (landing is checked against bronze)"
            )
        feast = self.retention_feast_snapshot_days
        if feast and feast <= self.feast_ttl_days:
            # Live entities are re-exported every half TTL: only older snapshots are spare.
            problems.append(
                f"RECFLOW_RETENTION_FEAST_SNAPSHOT_DAYS={feast} must exceed"
                f" RECFLOW_FEAST_TTL_DAYS ({self.feast_ttl_days}), or be 0 (kept for ever)"
            )
        if 0 < self.retention_staging_hours < 24:
            problems.append(
                f"RECFLOW_RETENTION_STAGING_HOURS={self.retention_staging_hours} must be at"
                " least 24 (an upload may be retried a day later), or 0"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if self.publish_slots is None:
            # A publish whose slot was reused can no longer be rolled back to: as many
            # slots as kept publishes keeps every one of them reachable.
            self.publish_slots = max(2, min(16, self.publish_keep))
        self.data_root = self.data_root.expanduser().absolute()
        if self.landing_dir is None:
            self.landing_dir = self.data_root / "landing"
        if self.lake_dir is None:
            self.lake_dir = str(self.data_root / "lake")
        if self.publish_dir is None:
            self.publish_dir = self.data_root / "cdn"
        if self.privacy_dir is None:
            self.privacy_dir = self.data_root / "privacy"
        if self.answers_dir is None:
            self.answers_dir = self.landing_dir / "answers"
        self.publish_prefix = (
            self.publish_prefix.strip("/") + "/" if self.publish_prefix.strip("/") else ""
        )
        return self

    # -- derived locations --------------------------------------------------------------
    def table_path(self, layer: str, name: str) -> str:
        """Location of one Delta table, e.g. ``table_path("silver", "events")``."""
        return f"{str(self.lake_dir).rstrip('/')}/{layer}/{name}"

    @property
    def serve_cors_origins(self) -> list[str]:
        """``serve_cors_origin`` as a list (empty: no CORS)."""
        return [o.strip() for o in self.serve_cors_origin.split(",") if o.strip()]

    @property
    def gx_dir(self) -> Path:
        """Great Expectations project: suites, results and rendered Data Docs."""
        return self.data_root / "gx"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking and registry store (SQLite under the data root by default).

        The real value, credentials included, for MLflow's clients only: anything shown,
        logged or stored elsewhere takes :attr:`tracking_uri_shown`.
        """
        if self.mlflow_tracking_uri is not None:
            return self.mlflow_tracking_uri.get_secret_value()
        return f"sqlite:///{self.data_root / 'mlflow' / 'mlflow.db'}"

    @property
    def tracking_uri_shown(self) -> str:
        """The tracking URI with its credentials redacted (for messages and metadata)."""
        return redact(self.tracking_uri, value=True)

    def publish_secret_problem(self) -> str | None:
        """Why the publish secret must not be used here, or None when it may.

        The development default is public (it is in the source), so lists keyed with it
        can be enumerated: it is accepted only for the local bucket in development. A
        short secret is refused in the same places, for the same reason.
        """
        if self.publish_target != "s3" and self.env != "prod":
            return None
        where = "publishing to S3" if self.publish_target == "s3" else "RECFLOW_ENV=prod"
        secret = self.publish_secret.get_secret_value()
        if secret == DEV_PUBLISH_SECRET:
            return (
                f"RECFLOW_PUBLISH_SECRET is the public development value, refused for {where}:"
                " set it to a random secret of at least"
                f" {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)"
            )
        if len(secret) < MIN_SECRET_CHARS:
            return (
                f"RECFLOW_PUBLISH_SECRET is shorter than {MIN_SECRET_CHARS} characters,"
                f" refused for {where}: use a random one (e.g. `openssl rand -hex 32`)"
            )
        return None

    def subject_secret_value(self) -> str:
        """The key subject hashes derive from (its own setting, else the publish secret)."""
        if self.subject_secret is not None:
            return self.subject_secret.get_secret_value()
        return self.hmac_secret()

    def hmac_secret(self) -> str:
        """The key user ids are hashed with, or ConfigError when it must not be used."""
        problem = self.publish_secret_problem()
        if problem is not None:
            raise ConfigError(problem)
        return self.publish_secret.get_secret_value()

    @property
    def artifact_root(self) -> str:
        return str(self.data_root / "mlflow" / "artifacts")

    @property
    def drift_reports_dir(self) -> Path:
        """One standalone HTML drift report per monitor run (``<run_id>.html``)."""
        return self.data_root / "reports" / "drift"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.data_root / "feast"

    @property
    def catalog_dir(self) -> Path:
        assert self.landing_dir is not None
        return self.landing_dir / "catalog"

    @property
    def events_dir(self) -> Path:
        assert self.landing_dir is not None
        return self.landing_dir / "events"


def settings_table() -> str:
    """Every setting as a Markdown table row: variable, default, description.

    ``recflow config --table`` prints it; a test keeps every setting described.
    """
    rows = ["| variable | default | what it is |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        factory = field.default_factory
        default = factory() if factory is not None else field.default  # type: ignore[call-arg]
        if isinstance(default, SecretUri):
            default = str(default)  # where it points, credentials redacted
        elif isinstance(default, SecretStr):
            default = "(a development value)"
        shown = "unset" if default is None else f"`{default}`"
        rows.append(f"| `RECFLOW_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment plus overrides, with one readable error."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            # Messages may quote the bad value: a URI's credentials must not reach a log.
            msg = redact(str(err["msg"]))
            field = ".".join(str(p) for p in err["loc"])
            # A check across settings (no loc) names the settings in its message.
            lines.append(f"  RECFLOW_{field.upper()}: {msg}" if field else f"  {msg}")
        raise ConfigError("invalid recflow configuration:\n" + "\n".join(lines)) from None


class IngestSchedule(BaseSettings):
    """The settings the ingest DAG's schedule needs when Airflow parses the file.

    Parsing reads these and nothing else, so an invalid value of any other setting fails
    the task that uses it (with a readable error) instead of hiding the DAG.
    """

    model_config = SettingsConfigDict(env_prefix="RECFLOW_", env_file=".env", extra="ignore")

    ingest_schedule: str = Settings.model_fields["ingest_schedule"].default
    ingest_start: str = Settings.model_fields["ingest_start"].default
    ingest_end: str | None = None

    _check_start = field_validator("ingest_start", "ingest_end")(Settings._check_instant.__func__)
    _check_schedule = field_validator("ingest_schedule")(Settings._check_ingest_schedule.__func__)


def ingest_schedule() -> IngestSchedule:
    """Schedule and first interval of the ingest DAG, read at parse time."""
    try:
        return IngestSchedule()
    except ValidationError as exc:
        raise ConfigError(f"invalid ingest schedule: {exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process, read once at first use (never at import time)."""
    return load_settings()
