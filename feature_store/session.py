"""Per-user session state and the rules that apply one event to it (pure logic, no I/O).

* Positive events (click / play / like / follow by default) enter ``items``/``ts`` in event-time order; a late
  event within the window is inserted where it belongs, so readers always see oldest -> newest. Several
  signals from one impression (click + like at the same instant on the same item) add the item once.
* Events older than ``newest - window`` are rejected as ``too_old``; idempotency keys are remembered for the
  same window, so a duplicate is either caught as ``duplicate`` or (when older) as ``too_old`` -- never applied.
* Sessions: a gap > ``session_gap_ms`` between consecutive events (any type) starts a new one. A late event
  joins the current session when it is within the gap of its start (extending it back), otherwise it belongs
  to an earlier session and only updates counts and the item list. (Limit: a late event that would bridge two
  sessions does not merge them; the earlier session's start is not kept.)

The state is a deterministic function of the events applied, which is what makes replays after a crash
idempotent: re-applying the uncommitted tail to the last saved state reproduces the same rows.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from streaming.events import Event, EventError

TYPES = ("impression", "click", "play", "like", "follow")


@dataclass(frozen=True)
class SessionRules:
    max_items: int = 50
    session_gap_ms: int = 30 * 60_000
    window_ms: int = 10 * 60_000
    positive_types: frozenset[str] = frozenset({"click", "play", "like", "follow"})


@dataclass
class UserState:
    items: list[int] = field(default_factory=list)  # positive raw item ids, event-time order
    ts: list[int] = field(default_factory=list)  # their event times
    session_start_ms: int = -1
    session_events: int = 0
    last_event_ms: int = -1  # newest event time applied (-1: none)
    counts: list[int] = field(default_factory=lambda: [0] * len(TYPES))
    keys: dict[str, int] = field(default_factory=dict)  # idempotency key -> event time, within the window
    log_partition: int = -1
    log_offset: int = -1

    def to_json(self) -> str:
        return json.dumps([self.items, self.ts, self.session_start_ms, self.session_events, self.last_event_ms,
                           self.counts, self.keys, self.log_partition, self.log_offset], separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str) -> "UserState":
        it, ts, ss, se, le, c, k, lp, lo = json.loads(s)
        return cls(it, ts, ss, se, le, c, k, lp, lo)

    def session_items(self) -> list[int]:
        if self.session_start_ms < 0:
            return []
        i = bisect.bisect_left(self.ts, self.session_start_ms)
        return self.items[i:]


def apply_event(st: UserState, ev: Event, rules: SessionRules) -> None:
    """Apply ``ev`` to ``st`` in place, or raise EventError(too_old | duplicate) leaving ``st`` unchanged."""
    t = ev.ts_ms
    if st.last_event_ms >= 0 and t < st.last_event_ms - rules.window_ms:
        raise EventError("too_old", f"ts_ms={t} is {st.last_event_ms - t} ms before the user's newest event "
                                    f"(window {rules.window_ms} ms)")
    if ev.idempotency_key in st.keys:
        raise EventError("duplicate", f"idempotency_key {ev.idempotency_key!r} already applied")
    etype = ev.event_type.value
    st.keys[ev.idempotency_key] = t
    st.counts[TYPES.index(etype)] += 1

    if etype in rules.positive_types:
        j = bisect.bisect_right(st.ts, t)
        same = any(st.ts[k] == t and st.items[k] == ev.item_id for k in range(bisect.bisect_left(st.ts, t), j))
        if not same:
            st.ts.insert(j, t)
            st.items.insert(j, ev.item_id)
            if len(st.items) > rules.max_items:
                del st.items[: len(st.items) - rules.max_items], st.ts[: len(st.ts) - rules.max_items]

    if st.last_event_ms < 0 or t >= st.last_event_ms:  # in order
        if st.last_event_ms < 0 or t - st.last_event_ms > rules.session_gap_ms:
            st.session_start_ms, st.session_events = t, 1
        else:
            st.session_events += 1
        st.last_event_ms = t
    elif t >= st.session_start_ms - rules.session_gap_ms:  # late, but part of the current session
        st.session_events += 1
        st.session_start_ms = min(st.session_start_ms, t)

    horizon = st.last_event_ms - rules.window_ms
    if len(st.keys) > 64 or any(v < horizon for v in st.keys.values()):
        st.keys = {k: v for k, v in st.keys.items() if v >= horizon}


ROW_COLUMNS = ("user_id", "event_timestamp", "created", "last_items", "last_ts_ms",
               "session_start_ms", "session_events", "last_event_ms", "counts", "log_position")


def feature_columns(rows: dict[int, "UserState"], created: datetime) -> dict[str, list]:
    """Column-wise user_session rows for a Feast push (names = definitions.USER_SESSION_FIELDS)."""
    cols: dict[str, list] = {c: [] for c in ROW_COLUMNS}
    for user_id, st in rows.items():
        cols["user_id"].append(user_id)
        cols["event_timestamp"].append(datetime.fromtimestamp(max(st.last_event_ms, 0) / 1000, tz=timezone.utc))
        cols["created"].append(created)
        cols["last_items"].append(list(st.items))
        cols["last_ts_ms"].append(list(st.ts))
        cols["session_start_ms"].append(st.session_start_ms)
        cols["session_events"].append(st.session_events)
        cols["last_event_ms"].append(st.last_event_ms)
        cols["counts"].append(list(st.counts))
        cols["log_position"].append([st.log_partition, st.log_offset])
    return cols


def feature_row(user_id: int, st: UserState, created: datetime) -> dict[str, Any]:
    """One user's row as a dict (tests, debugging)."""
    return {k: v[0] for k, v in feature_columns({user_id: st}, created).items()}
