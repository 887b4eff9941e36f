"""Feast objects, in dependency order: entities -> sources -> feature views -> feature services.

The consumer (``t2diff stream features``) writes user rows through the push source; item rows are
materialised from ``data/items.parquet``, which feature_store.repo builds from the shared data files.
Feature services are versioned: a change of meaning gets ``..._v2`` next to ``..._v1`` so old readers keep
working while new ones migrate.
"""
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Int64, String

# --- entities ------------------------------------------------------------------------------------------
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="raw user id")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="raw item id")

# --- sources -------------------------------------------------------------------------------------------
# The batch source behind the push source is only read for offline pushes / backfills.
user_events_batch = FileSource(name="user_events_batch", path="data/user_sessions.parquet",
                               timestamp_field="event_timestamp", created_timestamp_column="created")
user_events_push = PushSource(name="user_events_push", batch_source=user_events_batch)
item_source = FileSource(name="item_source", path="data/items.parquet", timestamp_field="event_timestamp")

# --- feature views -------------------------------------------------------------------------------------
USER_SESSION_FIELDS = [
    Field(name="last_items", dtype=Array(Int64), description="last <= 50 positive raw item ids, oldest first"),
    Field(name="last_ts_ms", dtype=Array(Int64), description="event times (ms) of last_items"),
    # The current session is last_items with last_ts_ms >= session_start_ms (FeatureClient returns it as
    # session_items); not stored twice, since array features dominate the cost of a stream write.
    Field(name="session_start_ms", dtype=Int64),
    Field(name="session_events", dtype=Int64, description="events of any type in the current session"),
    Field(name="last_event_ms", dtype=Int64, description="newest event time seen for the user"),
    # One array instead of five scalars: Feast's SQLite store writes one row per feature per user, so fewer
    # features is a faster stream write (the client turns it back into named counts).
    Field(name="counts", dtype=Array(Int64), description="[impressions, clicks, plays, likes, follows]"),
    # [partition, offset] of the last event applied for the user: lets a reader check that a given event is
    # reflected (the benchmark measures produce -> readable latency with last_event_ms the same way).
    Field(name="log_position", dtype=Array(Int64)),
]

user_session = FeatureView(
    name="user_session",
    entities=[user],
    ttl=timedelta(0),  # never expire: a user's history stays valid until they act again
    schema=USER_SESSION_FIELDS,
    source=user_events_push,
    online=True,
    tags={"owner": "feature_store", "writer": "t2diff stream features"},
)

item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="category", dtype=String, description="KuaiRand video_type / ML-1M first genre"),
        Field(name="tags", dtype=Array(Int64), description="tag / genre ids as in t2diff.data.Catalog (1-based)"),
        Field(name="tag_names", dtype=Array(String), description="ML-1M genre names; KuaiRand tag ids as text"),
        Field(name="duration_ms", dtype=Int64, description="KuaiRand video duration; 0 when unknown"),
    ],
    source=item_source,
    online=True,
)

# --- feature services ----------------------------------------------------------------------------------
user_session_v1 = FeatureService(name="user_session_v1", features=[user_session])
item_features_v1 = FeatureService(name="item_features_v1", features=[item_features])

OBJECTS = [user, item, user_events_push, item_source, user_session, item_features, user_session_v1,
           item_features_v1]
