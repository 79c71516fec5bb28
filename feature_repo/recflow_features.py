"""Feast definitions of recflow: the features the online recommender reads.

``feast -c feature_repo apply`` imports this file (with ``RECFLOW_*`` settings from the
environment); ``jobs.features.definitions.apply(settings)`` runs it bound to the settings
it is given.
Only definitions belong here: feast imports every ``.py`` file of this folder. How the
sources are filled and materialized is in ``jobs/features/export.py``.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float32, Float64, Int64, String, UnixTimestamp

from jobs.features.definitions import (
    ITEM_CONTENT,
    ITEM_STATS,
    ITEM_STOCK,
    SERVICE,
    TIMESTAMP_FIELD,
    USER_RECENT_ITEMS,
    USER_RECENT_ITEMS_PUSH,
    USER_STATS,
    repo_settings,
    source_path,
)

settings = repo_settings()

# A feature view's TTL bounds how far back a point-in-time lookup searches for a row and
# where the first materialization starts. The export rewrites unchanged rows every half
# TTL, so a live user or item always has a row within it.
ttl = timedelta(days=settings.feast_ttl_days)

# -- entities ------------------------------------------------------------------------------
# An entity is the primary key features are looked up by; its join key is the column name
# in the sources and in online requests.
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A shopper, as identified in the clickstream.",
)
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="A catalog item.",
)

# -- sources -------------------------------------------------------------------------------
# Parquet snapshots that jobs.features.export writes from the Delta lake. Each row is stamped
# with the end of the run that exported it (the instant its values are valid from); only
# changed rows are exported, so materialization reads just the new ones.
user_stats_source = FileSource(
    name="user_stats_source",
    path=source_path(settings, USER_STATS),
    timestamp_field=TIMESTAMP_FIELD,
    description="gold/user_stats",
)
user_recent_items_source = FileSource(
    name="user_recent_items_source",
    path=source_path(settings, USER_RECENT_ITEMS),
    timestamp_field=TIMESTAMP_FIELD,
    description="Top items per user by last interaction, from gold/interactions",
)
# The stream worker (``recflow stream worker``, jobs/stream/features.py) pushes a user's
# list here as each click arrives; materialization keeps reading the batch source.
user_recent_items_push = PushSource(
    name=USER_RECENT_ITEMS_PUSH,
    batch_source=user_recent_items_source,
    description="user_recent_items from the clickstream, within a second of the event",
)
item_stats_source = FileSource(
    name="item_stats_source",
    path=source_path(settings, ITEM_STATS),
    timestamp_field=TIMESTAMP_FIELD,
    description="gold/item_stats",
)
item_stock_source = FileSource(
    name="item_stock_source",
    path=source_path(settings, ITEM_STOCK),
    timestamp_field=TIMESTAMP_FIELD,
    description="silver/items.in_stock",
)

item_content_source = FileSource(
    name="item_content_source",
    path=source_path(settings, ITEM_CONTENT),
    timestamp_field=TIMESTAMP_FIELD,
    description="gold/item_content (items with text)",
)


# -- feature views -------------------------------------------------------------------------
# A feature view is a typed group of features of one entity from one source; online=True
# lets materialization copy its latest values into the online store.
user_stats = FeatureView(
    name=USER_STATS,
    entities=[user],
    ttl=ttl,
    schema=[
        Field(name="n_events", dtype=Int64, description="All events, impressions included."),
        Field(name="impressions", dtype=Int64),
        Field(name="clicks", dtype=Int64),
        Field(name="add_to_carts", dtype=Int64),
        Field(name="purchases", dtype=Int64),
        Field(name="revenue", dtype=Float64, description="Sum of price x quantity bought."),
        Field(
            name="last_event_ts", dtype=UnixTimestamp, description="Newest event (whole seconds)."
        ),
    ],
    online=True,
    source=user_stats_source,
    tags={"layer": "gold", "table": "user_stats"},
)
user_recent_items = FeatureView(
    name=USER_RECENT_ITEMS,
    entities=[user],
    ttl=ttl,
    schema=[
        Field(
            name="recent_item_ids",
            dtype=Array(String),
            description="Items the user interacted with, most recent first "
            "(RECFLOW_FEAST_RECENT_ITEMS of them at most); the service folds them in.",
        ),
        Field(
            name="recent_item_ts",
            dtype=Array(Int64),
            description="Epoch milliseconds of each item's newest interaction (same order).",
        ),
    ],
    online=True,
    source=user_recent_items_push,
    tags={"layer": "gold", "table": "interactions"},
)
item_stats = FeatureView(
    name=ITEM_STATS,
    entities=[item],
    ttl=ttl,
    schema=[
        Field(name="impressions", dtype=Int64),
        Field(name="clicks", dtype=Int64),
        Field(name="ctr", dtype=Float64, description="clicks / impressions (null: none)."),
        Field(name="purchases", dtype=Int64),
        Field(name="revenue", dtype=Float64),
        Field(name="weight_1d", dtype=Float64, description="Interaction weight, last day."),
        Field(name="weight_7d", dtype=Float64),
        Field(name="weight_30d", dtype=Float64),
        Field(name="purchases_7d", dtype=Int64),
    ],
    online=True,
    source=item_stats_source,
    tags={"layer": "gold", "table": "item_stats"},
)
item_stock = FeatureView(
    name=ITEM_STOCK,
    entities=[item],
    ttl=ttl,
    schema=[Field(name="in_stock", dtype=Bool, description="From the latest catalog row.")],
    online=True,
    source=item_stock_source,
    tags={"layer": "silver", "table": "items"},
)

item_content = FeatureView(
    name=ITEM_CONTENT,
    entities=[item],
    ttl=ttl,
    schema=[
        Field(
            name="content_embedding",
            dtype=Array(Float32),
            description="Unit vector of the item's text (jobs.content); the service maps it"
            " to factors for an item newer than its model.",
        ),
        Field(name="content_model", dtype=String, description="The embedding model's id."),
    ],
    online=True,
    source=item_content_source,
    tags={"layer": "gold", "table": "item_content"},
)


# -- feature services ----------------------------------------------------------------------
# A feature service names what one model reads; version it with the model's reader.
recommender_v1 = FeatureService(
    name=SERVICE,
    features=[user_stats, user_recent_items, item_stats, item_stock, item_content],
    description="What the online recommender (bento/) reads: fold-in items, stock, stats.",
)
