"""Prometheus metrics of the ingestion path (prometheus-client, default registry; served on /metrics by
whichever process exposes it, e.g. ``t2diff stream features --metrics-port``)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DEAD_LETTERS = Counter("t2diff_dead_letters", "events sent to the dead-letter sink", ["stage", "reason"])
EVENTS_PRODUCED = Counter("t2diff_stream_events_produced", "events produced to the event log", ["topic"])
EVENTS_APPLIED = Counter("t2diff_stream_events_applied", "events applied to session features", ["group"])
CONSUMER_LAG = Gauge("t2diff_stream_consumer_lag", "records produced but not committed by the group",
                     ["topic", "group"])
APPLY_LATENCY = Histogram(
    "t2diff_stream_apply_latency_seconds", "record produce time -> its features written to the online store",
    ["group"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
