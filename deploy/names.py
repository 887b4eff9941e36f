"""The exposed Prometheus series that deploy/ (dashboards, alerts) reads, in one place.

Each name is what a scrape returns (counters end in ``_total``, histograms in ``_bucket``/``_sum``/``_count``);
tests/deploy checks every one against the metric definitions found in the code by deploy.metrics_scan, so a
rename in streaming/, trainer/ or serving/ fails CI here instead of leaving an empty panel.
"""
from __future__ import annotations

# serving/metrics.py (ServingMetrics, one registry per ingress replica; labels: arm | deployment, stage/kind)
SERVE_REQUESTS = "t2diff_serve_requests_total"
SERVE_CANDIDATES = "t2diff_serve_candidates_total"
SERVE_IMPRESSIONS = "t2diff_serve_impressions_total"
SERVE_PLAYS = "t2diff_serve_plays_total"
SERVE_EFFECTIVE_VIEWS = "t2diff_serve_effective_views_total"
SERVE_FOLLOWS = "t2diff_serve_follows_total"
SERVE_PLAY_SECONDS = "t2diff_serve_play_duration_seconds"  # histogram base name
SERVE_LATENCY = "t2diff_serve_latency_seconds"  # histogram base name, labels deployment, stage
SERVE_ERRORS = "t2diff_serve_errors_total"
SERVE_FALLBACKS = "t2diff_serve_fallbacks_total"
SERVE_BAD_REQUESTS = "t2diff_serve_bad_requests_total"
SERVE_MODEL_VERSION = "t2diff_serve_model_version_info"

# streaming/metrics.py (ingestion path)
DEAD_LETTERS = "t2diff_dead_letters_total"  # labels stage, reason
STREAM_PRODUCED = "t2diff_stream_events_produced_total"
STREAM_APPLIED = "t2diff_stream_events_applied_total"
STREAM_CONSUMER_LAG = "t2diff_stream_consumer_lag"
STREAM_APPLY_LATENCY = "t2diff_stream_apply_latency_seconds"  # histogram base: event produced -> features written

# trainer/online (stream trainer, registry publishing, Milvus index)
TRAINER_EVENTS = "t2diff_trainer_events_total"
TRAINER_PREQ_RECALL = "t2diff_trainer_prequential_recall"
TRAINER_MODEL_LAG = "t2diff_trainer_model_lag_seconds"  # newest event in a published version -> publish time
INDEX_PUBLISH_LAG = "t2diff_index_publish_lag_seconds"  # model version created -> index alias switched


def hist(base: str, part: str = "bucket") -> str:
    return f"{base}_{part}"
