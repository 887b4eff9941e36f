"""The replay side of the demo: KuaiRand rows -> events on the event log, and the HTTP client that asks every
arm for candidates and reports the logged engagement back as feedback.

Asking *every* arm for the *same* request moment (a paired design, far tighter CIs than a between-user split)
needs the serving app to answer for a chosen arm. Its router is sticky by user, so :class:`RecallClient` uses,
in order of preference: an ``arm`` field of ``POST /recall`` when the app's OpenAPI schema has one; else the
app's hot-reloaded experiment file (``serving.arms_file``): the arm asked for gets weight 1, the others 0, and
the answer's ``arm`` field confirms the switch (a mismatch is retried and counted); else the sticky arm alone
(the estimator then compares arms as independent samples).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml

from t2diff.demo.moments import RequestMoment

log = logging.getLogger(__name__)


# --- events ------------------------------------------------------------------------------------------------
def timed_events(frame: pd.DataFrame) -> Iterator[tuple[int, int, Any]]:
    """(time_ms, user_id, Event) over a slice of streaming.replay's event frame (its KuaiRand mapping: an
    impression per row, click, play on long views, like, follow; content-derived idempotency keys)."""
    from streaming.replay import frame_events

    for ev in frame_events(frame):
        yield ev.ts_ms, ev.user_id, ev


@dataclass
class Produced:
    """What the monitor needs of one flushed batch: the newest event time and when it became durable."""

    max_event_ts_ms: int
    user_id: int
    wall_s: float


class EventProducer:
    """Appends events to the event log through its public interface, flushing in batches."""

    def __init__(self, event_log: Any, topic: str, batch: int = 500) -> None:
        from streaming.events import encode, key_of

        self._log, self._topic, self._batch = event_log, topic, batch
        self._encode, self._key = encode, key_of
        self.count = 0
        self._pending = 0
        self._last: tuple[int, int] | None = None

    def produce(self, ts_ms: int, user_id: int, event: Any) -> Produced | None:
        self._log.produce(self._topic, self._key(event), self._encode(event))
        self.count += 1
        self._pending += 1
        self._last = (ts_ms, user_id)
        return self.flush() if self._pending >= self._batch else None

    def flush(self) -> Produced | None:
        if not self._pending or self._last is None:
            return None
        self._log.flush()
        self._pending = 0
        return Produced(self._last[0], self._last[1], time.time())


# --- HTTP ------------------------------------------------------------------------------------------------
@dataclass
class Answer:
    arm: str
    items: list[int]
    latency_ms: float
    model_version: str | None
    fallback: bool
    request_id: str


@dataclass
class RecallClient:
    base_url: str
    arms: list[dict[str, Any]]  # the experiment's arms: {"name", "source", "weight"}
    experiment: dict[str, Any] = field(default_factory=dict)  # name / salt of the experiment (kept on switch)
    arms_file: Path | None = None
    timeout_s: float = 30.0
    mode: str = "sticky"  # field | arms_file | sticky (decided by detect_mode)
    switch_retries: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        import httpx

        self.http = httpx.Client(base_url=self.base_url, timeout=self.timeout_s)
        self._forced: str | None = None

    def close(self) -> None:
        self.http.close()

    def healthy(self) -> bool:
        return self.http.get("/healthz").status_code == 200

    def detect_mode(self) -> str:
        try:
            schema = self.http.get("/openapi.json").json()
            props = schema["components"]["schemas"]["RecallRequest"]["properties"]
            if "arm" in props:
                self.mode = "field"
                return self.mode
        except Exception as e:  # noqa: BLE001 -- no schema: fall through to the file
            log.debug("no OpenAPI schema: %s", e)
        self.mode = "arms_file" if self.arms_file is not None and len(self.arms) > 1 else "sticky"
        return self.mode

    def _force(self, arm: str) -> None:
        if self._forced == arm:
            return
        doc = {"experiment": {**self.experiment,
                              "arms": [{**a, "weight": 1.0 if a["name"] == arm else 0.0} for a in self.arms]}}
        tmp = self.arms_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc))
        tmp.replace(self.arms_file)  # atomic: the router never reads half a file
        self._forced = arm

    def recall(self, user_id: int, k: int, arm: str | None) -> Answer | None:
        body: dict[str, Any] = {"user_id": int(user_id), "k": int(k), "exclude_seen": False}
        if self.mode == "field" and arm is not None:
            body["arm"] = arm
        for attempt in range(40):
            if self.mode == "arms_file" and arm is not None:
                self._force(arm)
            t0 = time.perf_counter()
            r = self.http.post("/recall", json=body)
            ms = 1000 * (time.perf_counter() - t0)
            if r.status_code != 200:
                self.errors += 1
                log.warning("recall user %s arm %s: HTTP %s %s", user_id, arm, r.status_code, r.text[:200])
                return None
            d = r.json()
            if arm is not None and self.mode == "arms_file" and d["arm"] != arm:
                self.switch_retries += 1  # the router has not re-read the file yet
                time.sleep(0.02 * (attempt + 1))
                continue
            return Answer(d["arm"], [int(c["item_id"]) for c in d["items"]], ms, d.get("model_version"),
                          bool(d.get("fallback")), d["request_id"])
        self.errors += 1
        log.warning("arm %s never took effect for user %s", arm, user_id)
        return None

    def feedback(self, moment: RequestMoment, answer: Answer) -> int:
        """Report the logged engagement of the candidates the user really watched next (impression, play with
        play time and long-view flag, follow). Candidates the user never watched are not reported: the logging
        policy never showed them, so nothing is known about them."""
        got = {w.item: w for w in moment.next if w.item in set(answer.items)}
        events = []
        for w in got.values():
            common = {"request_id": answer.request_id, "user_id": moment.user_id, "item_id": w.item, "ts_ms": w.ts_ms}
            events.append({**common, "event": "impression"})
            events.append({**common, "event": "play", "play_time_ms": min(w.play_ms, 86_400_000),
                           "long_view": bool(w.long_view)})
            if w.follow:
                events.append({**common, "event": "follow"})
        if not events:
            return 0
        r = self.http.post("/feedback", json={"events": events})
        if r.status_code != 200:
            self.errors += 1
            log.warning("feedback: HTTP %s %s", r.status_code, r.text[:200])
            return 0
        return len(events)


def rows_between(df: pd.DataFrame, times: np.ndarray, lo_ms: int, hi_ms: int) -> pd.DataFrame:
    """Rows with lo <= time_ms < hi of a time-sorted frame (``times`` = its time_ms column)."""
    a, b = np.searchsorted(times, lo_ms, side="left"), np.searchsorted(times, hi_ms, side="left")
    return df.iloc[a:b]
