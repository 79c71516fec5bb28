"""Feast definitions and configuration, built from recflow's settings.

Reads: ``feature_repo/recflow_features.py`` (the definitions) and the settings. Writes: the
Feast registry and online tables (``apply``). ``feature_repo/feature_store.yaml`` is the
same configuration for the Feast CLI; a test keeps the two in step.
"""

from __future__ import annotations

import runpy
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.config import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView, RepoConfig

REPO_DIR = Path(__file__).resolve().parents[2] / "feature_repo"
DEFINITIONS = REPO_DIR / "recflow_features.py"

# Feature view names, their join keys and the feature service the recommender reads.
USER_STATS = "user_stats"
USER_RECENT_ITEMS = "user_recent_items"
ITEM_STATS = "item_stats"
ITEM_STOCK = "item_stock"
ITEM_CONTENT = "item_content"
VIEW_KEYS: dict[str, str] = {
    USER_STATS: "user_id",
    USER_RECENT_ITEMS: "user_id",
    ITEM_STATS: "item_id",
    ITEM_STOCK: "item_id",
    ITEM_CONTENT: "item_id",
}
SERVICE = "recommender_v1"
# The push source the stream worker writes user_recent_items through.
USER_RECENT_ITEMS_PUSH = "user_recent_items_push"
TIMESTAMP_FIELD = "event_timestamp"

_BOUND: ContextVar[Settings | None] = ContextVar("recflow_feast_settings", default=None)


# -- definitions and the store --------------------------------------------------------------
def repo_settings() -> Settings:
    """Settings the definitions module is built with.

    ``apply(settings)`` binds its own settings while it runs the module; the Feast CLI
    (``feast -c feature_repo apply``) gets the process settings from ``RECFLOW_*``.
    """
    return _BOUND.get() or get_settings()


def sources_dir(settings: Settings) -> Path:
    return settings.feast_dir / "sources"


def source_path(settings: Settings, view: str) -> str:
    """Folder of one view's parquet snapshots (what its FileSource reads)."""
    return str(sources_dir(settings) / view)


def definitions(settings: Settings) -> list[Any]:
    """The Feast objects of ``feature_repo/``, built for ``settings``.

    The module is run afresh each time (not imported), so two settings in one process
    (tests, a CLI next to a service) never share objects built for the other.
    """
    from feast import Entity, FeatureService, FeatureView

    token = _BOUND.set(settings)
    try:
        namespace = runpy.run_path(str(DEFINITIONS), run_name="recflow_features")
    finally:
        _BOUND.reset(token)
    kinds = (Entity, FeatureView, FeatureService)
    return [obj for obj in namespace.values() if isinstance(obj, kinds)]


def repo_config(settings: Settings) -> RepoConfig:
    """Feast configuration from recflow's settings (the programmatic feature_store.yaml)."""
    from feast import RepoConfig

    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    if settings.feast_online_store == "redis":
        online: dict[str, Any] = {
            "type": "redis",
            "connection_string": settings.feast_redis_connection.get_secret_value(),
        }
    else:
        online = {"type": "sqlite", "path": str(settings.feast_dir / "online_store.db")}
    return RepoConfig(
        project=settings.feast_project,
        provider="local",
        registry={"path": str(settings.feast_dir / "registry.db"), "cache_ttl_seconds": 60},
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=settings.feast_dir,
    )


def store(settings: Settings) -> FeatureStore:
    """A FeatureStore on recflow's registry and online store (nothing read from YAML)."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feast_dir), config=repo_config(settings))


def apply(settings: Settings) -> None:
    """``feast apply`` of the definitions: register, create online tables, drop leftovers.

    Idempotent: applying unchanged definitions changes nothing (materialization progress
    is kept). Views, services and entities no longer defined are deleted, as the CLI does.
    """
    from feast import Entity, FeatureService, FeatureView

    fs = store(settings)
    objects = definitions(settings)
    names = {(type(o), o.name) for o in objects}
    registered: list[Any] = [
        *fs.list_feature_services(),
        *fs.list_feature_views(),
        *fs.list_entities(),
    ]
    stale = [
        o
        for o in registered
        if isinstance(o, Entity | FeatureView | FeatureService)
        and (type(o), o.name) not in names
        and o.name != "__dummy"
    ]
    fs.apply(objects, objects_to_delete=stale, partial=False)


def registered_views(fs: FeatureStore) -> dict[str, FeatureView]:
    views = {fv.name: fv for fv in fs.list_feature_views() if fv.name in VIEW_KEYS}
    missing = sorted(set(VIEW_KEYS) - set(views))
    if missing:
        raise RuntimeError(
            f"feature views {missing} are not registered: apply the definitions first"
        )
    return views
