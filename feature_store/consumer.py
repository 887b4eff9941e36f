"""The feature consumer (``t2diff stream features``): event log -> validation -> per-user session state ->
Feast push source -> online store, with dead letters for everything that cannot be applied.

One step: poll a batch; decode and validate each record (bad ones go to the dead-letter sink with a reason);
apply the good ones to their user's state in log order; flush the dead letters; push the changed users' rows
to Feast; save states + offsets in one transaction; commit the offsets to the log. A crash anywhere in
that sequence loses nothing (offsets only move after effects are durable) and double-applies nothing
(restart resumes from the offsets saved *with* the state; rows are recomputed from state, so re-pushing
is idempotent). Dead letters are at-least-once; their ``source`` (partition, offset) identifies repeats.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import pandas as pd

from feature_store.repo import PUSH_SOURCE, USER_SERVICE, open_store
from feature_store.session import SessionRules, UserState, apply_event, feature_columns
from feature_store.settings import FeatureSettings
from feature_store.state import StateStore
from streaming.deadletter import DeadLetterSink
from streaming.events import EventError, decode
from streaming.log import EventLog, open_event_log
from streaming.metrics import APPLY_LATENCY, CONSUMER_LAG, EVENTS_APPLIED
from streaming.settings import StreamSettings
from streaming.vocab import Vocabulary

log = logging.getLogger(__name__)

_CACHE_MAX_USERS = 500_000  # states are saved every step, so dropping the cache is always safe


@dataclass
class ConsumerStats:
    records: int = 0
    applied: int = 0
    dead: dict[str, int] = field(default_factory=dict)
    pushes: int = 0
    users_written: int = 0
    push_s: float = 0.0

    @property
    def dead_total(self) -> int:
        return sum(self.dead.values())


class FeatureConsumer:
    def __init__(self, stream: StreamSettings | None = None, features: FeatureSettings | None = None,
                 event_log: EventLog | None = None, store: Any = None, vocab: Vocabulary | None = None,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.stream = stream or StreamSettings()
        self.features = features or FeatureSettings()
        self._own_log = event_log is None
        self.log = event_log or open_event_log(self.stream)
        self.store = store if store is not None else open_store(self.features)
        self.vocab = vocab or Vocabulary.from_sources(self.stream.known_items, self.stream.known_users)
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        f = self.features
        self.rules = SessionRules(f.max_items, f.session_gap_ms, f.out_of_order_window_ms,
                                  frozenset(f.positive_types))
        self.consumer = self.log.consumer(self.stream.topic, f.group)
        self.state = StateStore(f.resolved_state_path(), self.stream.topic, f.group, fsync=self.stream.fsync)
        self.dlq = DeadLetterSink(self.log, self.stream.dead_letter_topic, stage="features")
        self.cache: dict[int, UserState] = {}
        self.stats = ConsumerStats()
        self._lag_at = 0.0
        self._last_step = 0.0
        self._backlog = False  # the last poll returned a full batch: go on without waiting
        self._rewind_to_saved()
        self.push_views = self._push_views()
        self._warm_up()

    def _push_views(self) -> list[str] | None:
        """The feature views fed by the push source, looked up once. ``store.push`` looks them up in the registry
        on every call, which is about half of Feast's ~10 ms fixed cost per write; writing those views with
        ``write_to_online_store`` is the same operation without it. None (use ``push``) if a feature service
        precomputes online vectors, since only ``push`` refreshes those. Registry changes need a restart."""
        names = [fv.name for fv in self.store.list_feature_views()
                 if fv.stream_source is not None and fv.stream_source.name == PUSH_SOURCE]
        if not names or any(getattr(s, "precompute_online", False) for s in self.store.list_feature_services()):
            return None
        return names

    def _warm_up(self) -> None:
        """Load the registry and open the online store now, so the first event does not pay for it."""
        try:
            self.store.get_online_features(features=self.store.get_feature_service(USER_SERVICE),
                                           entity_rows=[{"user_id": 0}])
        except Exception:  # the first step will retry and report the real error
            log.warning("online store warm-up failed", exc_info=True)

    def _rewind_to_saved(self) -> None:
        """Resume from the offsets saved with the state: they are never behind the log's committed offsets."""
        for p, o in self.state.offsets().items():
            try:
                self.consumer.seek(p, o)  # Kafka: applied when the group assigns p
            except ValueError:
                pass  # a partition this consumer does not own
        self.cache.clear()

    def _validate(self, value: bytes):
        ev = decode(value, now_ms=self.clock_ms(), max_future_ms=self.stream.max_future_ms)
        if not self.vocab.known_user(ev.user_id):
            raise EventError("unknown_user", f"user_id {ev.user_id} not in {self.stream.known_users}")
        if not self.vocab.known_item(ev.item_id):
            raise EventError("unknown_item", f"item_id {ev.item_id} not in {self.stream.known_items}")
        return ev

    def step(self) -> int:
        """One poll -> apply -> push -> save -> commit cycle; returns the number of records consumed."""
        if not self._backlog:
            wait = self._last_step + self.features.min_batch_interval_ms / 1000 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self._last_step = time.monotonic()
        recs = self.consumer.poll(self.features.batch_size, self.features.poll_timeout_s)
        self._backlog = len(recs) >= self.features.batch_size
        now = time.monotonic()
        if now - self._lag_at > 1.0:
            self._lag_at = now
            CONSUMER_LAG.labels(self.stream.topic, self.features.group).set(self.consumer.lag())
        if not recs:
            return 0
        good = []
        for r in recs:
            try:
                good.append((r, self._validate(r.value)))
            except EventError as e:
                self._dead(r, e)
        missing = list({ev.user_id for _, ev in good} - self.cache.keys())
        if missing:
            self.cache.update(self.state.load(missing))
        dirty: dict[int, UserState] = {}
        applied = []
        for r, ev in good:
            st = self.cache.get(ev.user_id)
            if st is None:
                st = self.cache[ev.user_id] = UserState()
            try:
                apply_event(st, ev, self.rules)
            except EventError as e:
                self._dead(r, e)
                continue
            st.log_partition, st.log_offset = r.partition, r.offset
            dirty[ev.user_id] = st
            applied.append(r)
        self.log.flush()  # dead letters durable before the offsets that skip them move
        if dirty:
            t0 = time.perf_counter()
            created = datetime.now(timezone.utc)
            df = pd.DataFrame(feature_columns(dirty, created))
            if self.push_views is None:
                self.store.push(PUSH_SOURCE, df)
            else:
                for name in self.push_views:
                    self.store.write_to_online_store(name, df)
            self.stats.push_s += time.perf_counter() - t0
            self.stats.pushes += 1
            self.stats.users_written += len(dirty)
        pos = self.consumer.position()
        self.state.save(dirty, pos)
        self.consumer.commit(pos)
        done_ms = time.time() * 1000
        hist = APPLY_LATENCY.labels(self.features.group)
        for r in applied:
            hist.observe(max(0.0, done_ms - r.timestamp_ms) / 1000)
        EVENTS_APPLIED.labels(self.features.group).inc(len(applied))
        self.stats.records += len(recs)
        self.stats.applied += len(applied)
        if len(self.cache) > _CACHE_MAX_USERS:
            self.cache.clear()
        return len(recs)

    def _dead(self, r, e: EventError) -> None:
        self.dlq.send(r.value, e.reason, e.detail, record=r)
        self.stats.dead[e.reason] = self.stats.dead.get(e.reason, 0) + 1

    def run(self, stop: threading.Event | None = None, max_records: int | None = None,
            idle_exit_s: float | None = None, report_every_s: float = 10.0) -> ConsumerStats:
        """Loop until ``stop`` is set, ``max_records`` consumed, or nothing arrived for ``idle_exit_s``.
        Infrastructure errors (online store down, disk full) are retried from the last saved state."""
        stop = stop or threading.Event()
        t_start = last_data = last_report = time.monotonic()
        n_report = 0
        while not stop.is_set():
            try:
                n = self.step()
            except Exception:
                log.exception("feature consumer step failed; rewinding to the last saved state and retrying")
                self._rewind_to_saved()
                stop.wait(1.0)
                continue
            now = time.monotonic()
            if n:
                last_data = now
            if now - last_report >= report_every_s:
                rate = (self.stats.records - n_report) / (now - last_report)
                log.info("consumed %d records (%.0f/s), applied %d, dead letters %s, lag %d",
                         self.stats.records, rate, self.stats.applied, self.stats.dead, self.consumer.lag())
                last_report, n_report = now, self.stats.records
            if max_records is not None and self.stats.records >= max_records:
                break
            if idle_exit_s is not None and now - last_data >= idle_exit_s:
                break
        log.info("feature consumer stopped after %.1fs: %s", time.monotonic() - t_start, self.stats)
        return self.stats

    def close(self) -> None:
        self.consumer.close()
        self.state.close()
        if self._own_log:
            self.log.close()
        else:
            self.log.flush()
