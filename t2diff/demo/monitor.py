"""Freshness, measured from outside through the components' public read paths while the replay runs.

* event -> feature: after a flush, the newest event's user is read back from Feast (FeatureClient) until its
  ``last_event_ms`` reaches that event; lag = read-back wall time - flush wall time (one probe in flight).
* event -> model version: a registry version whose ``max_event_ts_ms`` covers a flushed event; lag = the
  version's ``created_at`` - the event's flush wall time.
* model -> index: the wall time the index alias (``ItemIndex.live_version``) is first seen on a version,
  minus the version's ``created_at``. Resolution = the poll interval.
* model -> serving: the first ``/recall`` answer carrying a version, minus its ``created_at``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from t2diff.demo.replay import Produced

log = logging.getLogger(__name__)


class FreshnessMonitor(threading.Thread):
    def __init__(self, features: Callable[[], Any] | None, registry: Any | None, index: Callable[[], Any] | None,
                 poll_s: float = 0.2, probe_timeout_s: float = 60.0) -> None:
        super().__init__(daemon=True, name="freshness")
        self._features_factory, self._index_factory = features, index
        self.registry = registry
        self.poll_s, self.probe_timeout_s = poll_s, probe_timeout_s
        self.samples: dict[str, list[float]] = {"event_to_feature": [], "event_to_model_version": [],
                                                "model_to_index": [], "model_to_serving": []}
        self.censored: dict[str, int] = {k: 0 for k in self.samples}
        self.versions: dict[int, dict[str, Any]] = {}  # version -> meta (created_at, max_event_ts_ms, metrics)
        self.errors: dict[str, str] = {}  # last error per probe
        self.error_counts: dict[str, int] = {}
        self._probe: Produced | None = None
        self._pending_model: deque[Produced] = deque()
        self._live: int | None = None
        self._served: set[str] = set()
        self._lock = threading.Lock()
        self._halt = threading.Event()

    # --- called from the replay loop -------------------------------------------------------------------------
    def on_flush(self, p: Produced) -> None:
        with self._lock:
            if self._probe is None:
                self._probe = p
            if not self._pending_model or self._pending_model[-1].wall_s + 1.0 < p.wall_s:
                self._pending_model.append(p)  # at most one model sample a second keeps the list short

    def on_answer(self, version: str | None) -> None:
        if version is None or version in self._served:
            return
        self._served.add(version)
        meta = self.versions.get(_as_int(version))
        if meta is not None:
            self.samples["model_to_serving"].append(1000 * (time.time() - meta["created_at"]))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    # --- thread ----------------------------------------------------------------------------------------------
    def run(self) -> None:
        feats = self._open("features", self._features_factory)
        index = self._open("index", self._index_factory)
        while not self._halt.is_set():
            if feats is not None:
                self._step(self._probe_features, feats, "features")
            if self.registry is not None:
                self._step(self._poll_registry, None, "registry")
            if index is not None:
                self._step(self._poll_index, index, "index")
            self._halt.wait(self.poll_s)

    def _open(self, what: str, factory: Callable[[], Any] | None) -> Any:
        if factory is None:
            return None
        try:
            return factory()
        except Exception as e:  # noqa: BLE001 -- the report says what could not be measured, and why
            self.errors[what] = f"{type(e).__name__}: {str(e)[:160]}"
            self.error_counts[what] = self.error_counts.get(what, 0) + 1
            log.warning("freshness monitor: cannot open %s: %s", what, e)
            return None

    def _step(self, fn: Callable[[Any], None], arg: Any, what: str) -> None:
        try:
            fn(arg)
        except Exception as e:  # noqa: BLE001 -- a busy Milvus / Feast: count it, try again next poll
            self.errors[what] = f"{type(e).__name__}: {str(e)[:160]}"
            self.error_counts[what] = self.error_counts.get(what, 0) + 1
            log.debug("freshness monitor %s: %s", what, e)

    def _probe_features(self, client: Any) -> None:
        p = self._probe
        if p is None:
            return
        (f,) = client.get_user_features([p.user_id])
        now = time.time()
        if f is not None and f.last_event_ms >= p.max_event_ts_ms:
            self.samples["event_to_feature"].append(1000 * (now - p.wall_s))
        elif now - p.wall_s > self.probe_timeout_s:
            self.censored["event_to_feature"] += 1
        else:
            return
        with self._lock:
            self._probe = None

    def _poll_registry(self, _: Any) -> None:
        for v in self.registry.versions():
            if v in self.versions:
                continue
            meta = self.registry.meta(v)
            self.versions[v] = meta
            cover = meta.get("max_event_ts_ms")
            if cover is None:
                continue
            with self._lock:
                while self._pending_model and self._pending_model[0].max_event_ts_ms <= cover:
                    p = self._pending_model.popleft()
                    lag = 1000 * (float(meta["created_at"]) - p.wall_s)
                    if lag >= 0:
                        self.samples["event_to_model_version"].append(lag)

    def _poll_index(self, index: Any) -> None:
        live = index.live_version()
        if live is None or live == self._live:
            return
        self._live = live
        meta = self.versions.get(int(live))
        if meta is not None and self._seen_after_start(meta):
            self.samples["model_to_index"].append(1000 * (time.time() - float(meta["created_at"])))

    def _seen_after_start(self, meta: dict[str, Any]) -> bool:
        # A version published before the monitor started was not watched going live: no sample.
        return float(meta["created_at"]) >= self._t_start

    def start(self) -> None:  # noqa: D102
        self._t_start = time.time()
        super().start()

    def trainer_prequential(self) -> list[dict[str, Any]]:
        """The trainer's own prequential figure, one point per version it published (meta.json ``metrics``:
        ``online_window`` = its sliding window of recent events, ``online`` = cumulative; Recall@100 preferred)."""
        out = []
        for v, meta in sorted(self.versions.items()):
            metrics = meta.get("metrics") or {}
            if not meta.get("max_event_ts_ms") or meta.get("source") != "online":
                continue
            for part in ("online_window", "online"):
                d = metrics.get(part) if isinstance(metrics.get(part), dict) else None
                if not d:
                    continue
                key = next((k for k in ("recall@100", "recall@20", "recall@10") if k in d), None)
                if key is not None and d[key] == d[key]:
                    out.append({"version": v, "event_ts_ms": int(meta["max_event_ts_ms"]), "recall": float(d[key]),
                                "metric": f"{part} {key}", "n": metrics.get("n")})
                    break
        return out


def _as_int(v: str) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None
