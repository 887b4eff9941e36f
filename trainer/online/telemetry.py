"""Prometheus metrics of the stream trainer (default registry; served by ``metrics_port``)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREQ_RECALL = Gauge("t2diff_trainer_prequential_recall", "Prequential Recall@K (scored before training on it)",
                    ["k", "model", "scope"])
PREQ_MRR = Gauge("t2diff_trainer_prequential_mrr", "Prequential MRR@K (scored before training on it)",
                 ["k", "model", "scope"])
PREQ_EVENTS = Counter("t2diff_trainer_prequential_events_total", "Positives scored prequentially", ["model"])
RECORDS = Counter("t2diff_trainer_records_total", "Event-log records consumed by the stream trainer")
SAMPLES = Counter("t2diff_trainer_samples_trained_total", "New (non-replay) samples trained on")
STEPS = Counter("t2diff_trainer_steps_total", "Optimiser steps")
LOSS = Gauge("t2diff_trainer_loss", "Training loss of the last step")
THROUGHPUT = Gauge("t2diff_trainer_events_per_second", "Records consumed per second (last logging interval)")
LAG = Gauge("t2diff_trainer_lag_records", "Records produced but not yet committed by the trainer's group")
CATALOG = Gauge("t2diff_trainer_catalog_items", "Items in the model's catalogue (grows with cold items)")
COLD_ITEMS = Counter("t2diff_trainer_cold_items_total", "Items first seen on the stream and added to the model")
VERSION = Gauge("t2diff_trainer_published_version", "Last model version published (registry + index)")
PUBLISH_FAILURES = Counter("t2diff_trainer_publish_failures_total", "Publishes that failed (training went on)")
PUBLISH_S = Histogram("t2diff_trainer_publish_seconds", "Time to publish a version (registry + index)",
                      buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60))
FRESHNESS_S = Histogram("t2diff_trainer_event_to_searchable_seconds",
                        "Event produce time -> the version containing it is live in the index",
                        buckets=(1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 300))
CHECKPOINT_S = Histogram("t2diff_trainer_checkpoint_seconds", "Time to write a resumable checkpoint",
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
