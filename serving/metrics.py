"""Prometheus metrics of the recall service (prometheus-client, exposed on the ingress's ``/metrics``).

Each Ray Serve replica is its own process, so each instance owns a ``CollectorRegistry``; the ingress
replica records everything per request, including the encode / search latencies that the encoder and
retriever replicas measure and return with their results (one scrape target shows the whole path).
Rates are left to PromQL: EVR = effective_views / impressions, follow rate = follows / impressions.
"""
from __future__ import annotations

import gc
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)
PLAY_BUCKETS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 45, 60, 120, 300, 600)


class GcTimer:
    """Calls ``on_pause(generation, seconds)`` after every garbage collection of this process, between
    ``start()`` and ``stop()`` (both idempotent)."""

    def __init__(self, on_pause) -> None:
        self.on_pause = on_pause
        self._t = 0.0

    def start(self) -> None:
        if self._cb not in gc.callbacks:
            gc.callbacks.append(self._cb)

    def stop(self) -> None:
        if self._cb in gc.callbacks:
            gc.callbacks.remove(self._cb)

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.on_pause(info["generation"], time.perf_counter() - self._t)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "t2diff_serve_"
        self.requests = Counter(p + "requests", "recall requests answered", ["arm"], registry=r)
        self.candidates = Counter(p + "candidates", "candidates served", ["arm"], registry=r)
        self.impressions = Counter(p + "impressions", "impressions reported by the app", ["arm"], registry=r)
        self.plays = Counter(p + "plays", "plays reported by the app", ["arm"], registry=r)
        self.effective_views = Counter(p + "effective_views", "plays >= threshold or long-view flag", ["arm"],
                                       registry=r)
        self.follows = Counter(p + "follows", "follows reported by the app", ["arm"], registry=r)
        self.play_duration = Histogram(p + "play_duration_seconds", "play duration", ["arm"],
                                       buckets=PLAY_BUCKETS, registry=r)
        self.latency = Histogram(p + "latency_seconds", "latency by deployment and stage",
                                 ["deployment", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter(p + "errors", "errors by deployment and kind", ["deployment", "kind"], registry=r)
        self.fallbacks = Counter(p + "fallbacks", "requests answered by the fallback source", ["arm", "reason"],
                                 registry=r)
        self.bad_requests = Counter(p + "bad_requests", "4xx answers", ["endpoint", "reason"], registry=r)
        self.feedback_unknown = Counter(p + "feedback_unknown_request", "feedback for request ids not issued here",
                                        ["reason"], registry=r)
        self.arm_reloads = Counter(p + "arm_config_reloads", "arms file reloads", ["result"], registry=r)
        self.model_version = Gauge(p + "model_version_info", "1 for the model version a source serves",
                                   ["source", "version"], registry=r)
        self.gc_pause = Histogram(p + "gc_pause_seconds", "garbage-collector pauses of the replica serving /metrics",
                                  ["generation"], buckets=LATENCY_BUCKETS, registry=r)
        self._versions: dict[str, str] = {}
        self._gc = GcTimer(lambda generation, s: self.gc_pause.labels(str(generation)).observe(s))

    def watch_gc(self) -> None:
        """Time every garbage collection of this process into ``gc_pause`` (a collection stalls every request in
        flight: reference cycles made per request once cost the ingress 12-75 ms every few seconds at 200 rps,
        most of its p99; benchmarks/serve.md). ``unwatch_gc`` undoes it."""
        self._gc.start()

    def unwatch_gc(self) -> None:
        self._gc.stop()

    def set_version(self, source: str, version: str | None) -> None:
        """Keep exactly one ``model_version_info`` series per source at 1."""
        v = version or "none"
        old = self._versions.get(source)
        if old == v:
            return
        if old is not None:
            self.model_version.remove(source, old)
        self.model_version.labels(source, v).set(1)
        self._versions[source] = v

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def render(self) -> bytes:
        return generate_latest(self.registry)
