"""HTTP request / response models. Strict types and ``extra="forbid"``: a wrong type or an unknown field is a
422 with pydantic's message, never a silent coercion (``"12"`` is not a user id)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RecallRequest(_In):
    user_id: StrictInt = Field(ge=0, description="raw user id (as in events and Feast)")
    k: StrictInt | None = Field(None, ge=1, description="candidates wanted; default and upper limit from config")
    exclude_seen: StrictBool = Field(True, description="drop items already in the user's recent history")


class Candidate(BaseModel):
    item_id: int
    score: float


class RecallResponse(BaseModel):
    request_id: str
    user_id: int
    arm: str
    source: str  # the source that produced the items (the fallback's name when fallback is true)
    model_version: str | None
    items: list[Candidate]
    fallback: bool = False
    fallback_reason: str | None = None  # unknown_user | empty_history | features_unavailable | ...


FeedbackKind = Literal["impression", "play", "follow"]


class FeedbackEvent(_In):
    request_id: str = Field(min_length=1, max_length=128)
    user_id: StrictInt = Field(ge=0)
    item_id: StrictInt = Field(ge=0)
    event: FeedbackKind
    play_time_ms: StrictInt | None = Field(None, ge=0, le=86_400_000)
    long_view: StrictBool | None = None  # the app's own long-view flag (KuaiRand's long_view)
    ts_ms: StrictInt | None = Field(None, ge=0, description="client event time; server time when absent")


class FeedbackRequest(_In):
    events: list[FeedbackEvent] = Field(min_length=1)


class FeedbackResponse(BaseModel):
    accepted: int
    unknown_request_ids: int  # kept in the log with known=false and counted, not dropped


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    arms: dict[str, str]  # arm -> source
    model_versions: dict[str, str | None]  # source -> version last seen
    fallbacks: int
