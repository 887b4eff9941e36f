"""The one event schema on the bus (versioned), its JSON encoding, and syntactic validation.

``decode`` turns raw bytes into an :class:`Event` or raises :class:`EventError` whose ``reason`` is one of
:data:`REASONS` -- the label of the dead-letter counter. Checks that need state (unknown ids, duplicates,
events older than the out-of-order window) are done by the consumer and use the same reasons.
"""
from __future__ import annotations

import time
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

SCHEMA_VERSION = 1
INT64_MAX = 2**63 - 1

# Every reason an event can be dead-lettered for. Kept closed so the prometheus label set stays bounded.
REASONS = (
    "malformed_json", "missing_field", "wrong_type", "invalid_value", "unsupported_version",
    "negative_ts", "future_ts", "unknown_item", "unknown_user", "duplicate", "too_old",
)


class EventType(str, Enum):
    impression = "impression"
    click = "click"
    play = "play"
    like = "like"
    follow = "follow"


class Event(BaseModel):
    """One user action. Strict types: ``"42"`` is not a user id, ``true`` is not a timestamp."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    # Bounded to int64: ids and times are stored as Feast Int64 / SQLite integers downstream.
    user_id: StrictInt = Field(ge=0, le=INT64_MAX)
    item_id: StrictInt = Field(ge=0, le=INT64_MAX)
    event_type: EventType
    ts_ms: StrictInt = Field(le=INT64_MAX)  # event time, ms since the epoch; the sign is checked in decode for a precise reason
    play_time_ms: StrictInt | None = Field(None, ge=0, le=INT64_MAX)
    duration_ms: StrictInt | None = Field(None, ge=0, le=INT64_MAX)
    request_id: StrictStr | None = Field(None, max_length=128)  # set when the event answers a recommendation
    arm: StrictStr | None = Field(None, max_length=64)  # A/B arm that served request_id
    idempotency_key: StrictStr = Field(min_length=1, max_length=256)


class EventError(ValueError):
    """An event that cannot be applied. ``reason`` is one of :data:`REASONS`; ``detail`` is for humans."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # pickles as (reason, detail): decode workers send these back to the consumer
        return (type(self), (self.reason, self.detail))


def encode(event: Event) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def key_of(event: Event) -> bytes:
    """Partition key: the user id, so one user's events stay in order on one partition."""
    return str(event.user_id).encode()


def _reason_of(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    kind, loc = first["type"], ".".join(str(x) for x in first.get("loc", ()))
    if kind in ("json_invalid", "json_type"):
        return "malformed_json", first["msg"]
    if kind == "missing":
        return "missing_field", f"missing {loc}"
    if loc == "schema_version":
        return "unsupported_version", f"schema_version {first.get('input')!r}, expected {SCHEMA_VERSION}"
    if kind.endswith("_type") or kind in ("model_type", "dict_type"):
        return "wrong_type", f"{loc}: {first['msg']}"
    return "invalid_value", f"{loc}: {first['msg']}"


def decode(data: bytes | str, now_ms: int | None = None, max_future_ms: int = 5 * 60_000) -> Event:
    """Parse and validate one encoded event. Raises :class:`EventError` (never anything else) on bad input."""
    try:
        ev = Event.model_validate_json(data)
    except ValidationError as e:
        reason, detail = _reason_of(e)
        raise EventError(reason, detail) from None
    except (UnicodeDecodeError, ValueError, TypeError) as e:  # undecodable bytes
        raise EventError("malformed_json", str(e)[:200]) from None
    if ev.ts_ms < 0:
        raise EventError("negative_ts", f"ts_ms={ev.ts_ms}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if ev.ts_ms > now + max_future_ms:
        raise EventError("future_ts", f"ts_ms={ev.ts_ms} is {ev.ts_ms - now} ms ahead of now")
    return ev


def decode_batch(values: list[bytes], now_ms: int | None = None,
                 max_future_ms: int = 5 * 60_000) -> list[Event | EventError]:
    """:func:`decode` over many values with one clock reading; each item is the Event or its EventError."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out: list[Event | EventError] = []
    for v in values:
        try:
            out.append(decode(v, now, max_future_ms))
        except EventError as e:
            out.append(e)
    return out
