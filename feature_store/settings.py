"""``features`` section of the config file: the Feast repo, online store, and session rules of the consumer.

Environment overrides use ``T2DIFF_FEATURES__<FIELD>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from t2diff.config import Section
from t2diff.paths import runs_dir


class FeatureSettings(Section):
    model_config = SettingsConfigDict(env_prefix="T2DIFF_FEATURES__")

    # Run-time copy of feature_store/feature_repo (registry, SQLite files, item parquet live there).
    # Default $T2DIFF_RUNS_DIR/feature_repo, resolved at use so each test gets its own.
    repo_dir: Path | None = None
    project: str = Field("t2diff", pattern=r"^[a-z][a-z0-9_]*$")
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "localhost:6379"
    # Which data files the item feature view is materialised from (and which ids the consumer knows).
    dataset: Literal["kuairand", "ml-1m"] = "kuairand"
    # Consumer rules.
    group: str = "features"
    max_items: int = Field(50, ge=1, le=1000)
    session_gap_ms: int = Field(30 * 60_000, gt=0, description="inactivity gap that starts a new session")
    # Events up to this much older than the newest event of the same user are still applied (in event-time
    # order); older ones are dead-lettered as too_old. Idempotency keys are remembered for this long.
    out_of_order_window_ms: int = Field(10 * 60_000, ge=0)
    positive_types: list[Literal["click", "play", "like", "follow"]] = Field(
        default_factory=lambda: ["click", "play", "like", "follow"])
    batch_size: int = Field(5000, ge=1, description="max records per poll / online-store write")
    poll_timeout_s: float = Field(0.05, gt=0)
    # When the last batch was not full (no backlog), wait this long between batches so a trickle of events
    # is written in batches: each online-store write has ~10 ms of fixed Feast cost, which at 2k events/s in
    # 20-event batches would cost more CPU than the events themselves. Adds at most this much latency.
    min_batch_interval_ms: int = Field(100, ge=0)
    # Consumer state (per-user session state, idempotency keys, offsets); default <repo_dir>/consumer_state.sqlite
    state_path: Path | None = None

    @field_validator("positive_types")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("positive_types must not be empty")
        return v

    def resolved_repo_dir(self) -> Path:
        return Path(self.repo_dir) if self.repo_dir is not None else runs_dir() / "feature_repo"

    def resolved_state_path(self) -> Path:
        return Path(self.state_path) if self.state_path is not None else self.resolved_repo_dir() / "consumer_state.sqlite"
