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
SERVE_GC_PAUSE = "t2diff_serve_gc_pause_seconds"  # histogram base name, label generation (ingress process)

# streaming/metrics.py (ingestion path)
DEAD_LETTERS = "t2diff_dead_letters_total"  # labels stage, reason
STREAM_PRODUCED = "t2diff_stream_events_produced_total"
STREAM_APPLIED = "t2diff_stream_events_applied_total"
STREAM_CONSUMER_LAG = "t2diff_stream_consumer_lag"
STREAM_APPLY_LATENCY = "t2diff_stream_apply_latency_seconds"  # histogram base: event produced -> features written

# trainer/online/telemetry.py (stream trainer: prequential test-then-train, registry + Milvus publishing)
TRAINER_RECORDS = "t2diff_trainer_records_total"  # event-log records consumed
TRAINER_SAMPLES = "t2diff_trainer_samples_trained_total"  # new (non-replay) samples trained on
TRAINER_PREQ_RECALL = "t2diff_trainer_prequential_recall"  # gauge, labels k, model (online|frozen), scope
TRAINER_LAG = "t2diff_trainer_lag_records"  # records not yet committed by the trainer's group
TRAINER_VERSION = "t2diff_trainer_published_version"
TRAINER_PUBLISH_SECONDS = "t2diff_trainer_publish_seconds"  # histogram base: model -> registry + index live
TRAINER_EVENT_TO_SEARCHABLE = "t2diff_trainer_event_to_searchable_seconds"  # histogram base: event -> in index

def hist(base: str, part: str = "bucket") -> str:
    return f"{base}_{part}"
