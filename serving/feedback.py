"""Request ids and the feedback log.

A request id is ``<16 hex>.<arm>.<8 hex HMAC>``: any ingress replica can check that it issued the id and read
its arm without shared state. Feedback whose id fails that check is still written (``known: false``) and
counted, never dropped: the experiment team decides what to do with it.

The feedback log is JSONL, one record per event, appended and flushed per request; ``t2diff ab report``
reads it. Optionally the same records also go to the streaming event log.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from serving.metrics import ServingMetrics
from serving.schemas import FeedbackEvent

log = logging.getLogger(__name__)


def is_effective_view(long_view: Any, play_time_ms: Any, threshold_ms: float) -> Any:
    """The effective-view rule, one definition for serving's feedback and the demo's estimator: the app's
    long-view flag, or play time >= ``threshold_ms``. Scalars -> bool (a None flag or play time is "not set");
    numpy arrays -> a bool array, elementwise (a None flag there is False for all)."""
    if np.ndim(long_view) == 0 and np.ndim(play_time_ms) == 0:  # per event: plain Python, no array overhead
        return bool(long_view) or (play_time_ms is not None and bool(play_time_ms >= threshold_ms))
    lv = np.asarray(False if long_view is None else long_view, dtype=bool)
    return lv if play_time_ms is None else lv | (np.asarray(play_time_ms) >= threshold_ms)


class RequestIds:
    def __init__(self, secret: str, remember: int = 100_000) -> None:
        self._key = secret.encode()
        self._remember = remember
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()  # id -> served context (LRU)
        self._lock = threading.Lock()

    def _sig(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:8]

    def new(self, arm: str, **context: Any) -> str:
        body = f"{uuid.uuid4().hex[:16]}.{arm}"
        rid = f"{body}.{self._sig(body)}"
        if self._remember:
            with self._lock:
                self._recent[rid] = {"arm": arm, **context}
                if len(self._recent) > self._remember:
                    self._recent.popitem(last=False)
        return rid

    def resolve(self, rid: str) -> tuple[str | None, dict[str, Any]]:
        """(arm, served context) for an id this service issued, (None, {}) otherwise."""
        ctx = self._recent.get(rid)
        if ctx is not None:
            return ctx["arm"], ctx
        parts = rid.split(".")
        if len(parts) != 3:
            return None, {}
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sig(body), parts[2]):
            return None, {}
        return parts[1], {"arm": parts[1]}  # issued here, but evicted or served by another replica


class FeedbackLog:
    """Append-only JSONL, safe for concurrent writers in one process (a lock) and across processes
    (O_APPEND writes of one line each are atomic for lines under the pipe buffer size)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, records: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        with self._lock:
            os.write(self._fd, data)

    def close(self) -> None:
        os.close(self._fd)


def read_feedback(path: Path) -> list[dict[str, Any]]:
    """All records; a torn or garbled line is skipped with a warning (the writer only ever appends)."""
    out, bad = [], 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable lines", path, bad)
    return out


class FeedbackRecorder:
    """Validates request ids, writes the log, updates the engagement metrics."""

    def __init__(self, ids: RequestIds, flog: FeedbackLog, metrics: ServingMetrics, evr_threshold_s: float,
                 produce: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.ids, self.flog, self.metrics = ids, flog, metrics
        self.evr_threshold_ms = evr_threshold_s * 1000.0
        self.produce = produce

    def is_effective(self, ev: FeedbackEvent) -> bool:
        return is_effective_view(ev.long_view, ev.play_time_ms, self.evr_threshold_ms)

    def record(self, events: list[FeedbackEvent]) -> tuple[int, int]:
        now = int(time.time() * 1000)
        records, unknown = [], 0
        for ev in events:
            arm, ctx = self.ids.resolve(ev.request_id)
            known = arm is not None
            effective = ev.event == "play" and self.is_effective(ev)
            if not known:
                unknown += 1
                self.metrics.feedback_unknown.labels("unknown_request_id").inc()
            elif ctx.get("user_id") is not None and ctx["user_id"] != ev.user_id:
                # The id is ours but was served to another user: keep, but do not credit the arm.
                known = False
                unknown += 1
                self.metrics.feedback_unknown.labels("user_mismatch").inc()
            records.append({
                "ts_ms": ev.ts_ms if ev.ts_ms is not None else now, "received_ms": now,
                "request_id": ev.request_id, "known": known, "arm": arm if known else None,
                "model_version": ctx.get("model_version"), "source": ctx.get("source"),
                "user_id": ev.user_id, "item_id": ev.item_id, "event": ev.event,
                "play_time_ms": ev.play_time_ms, "long_view": ev.long_view, "effective": effective,
            })
            if known:
                self._count(arm, ev, effective)
        self.flog.append(records)
        if self.produce is not None:
            try:
                self.produce(records)
            except Exception as e:  # the JSONL log already holds them; the event log is a copy
                log.warning("feedback not produced to the event log: %s", e)
                self.metrics.errors.labels("ingress", "feedback_produce").inc()
        return len(records), unknown

    def _count(self, arm: str, ev: FeedbackEvent, effective: bool) -> None:
        m = self.metrics
        if ev.event == "impression":
            m.impressions.labels(arm).inc()
        elif ev.event == "play":
            m.plays.labels(arm).inc()
            if ev.play_time_ms is not None:
                m.play_duration.labels(arm).observe(ev.play_time_ms / 1000.0)
            if effective:
                m.effective_views.labels(arm).inc()
        elif ev.event == "follow":
            m.follows.labels(arm).inc()
