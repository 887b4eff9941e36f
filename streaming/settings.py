"""``stream`` section of the config file: which event log, where it lives, and validation limits.

Environment overrides use ``T2DIFF_STREAM__<FIELD>`` (nested: ``T2DIFF_STREAM__KAFKA__BOOTSTRAP_SERVERS``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from t2diff.config import Section
from t2diff.paths import runs_dir


class KafkaSettings(Section):
    """Client settings for a real Kafka cluster (kafka-python). Only used when ``backend: kafka``."""

    model_config = SettingsConfigDict(env_prefix="T2DIFF_STREAM__KAFKA__")

    bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"], min_length=1)
    client_id: str = "t2diff"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # "all": a produce is acknowledged only once every in-sync replica has it (no loss on broker failover).
    acks: Literal["all", "1", "0"] = "all"
    linger_ms: int = Field(5, ge=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    request_timeout_ms: int = Field(30_000, gt=0)
    # Pins the protocol versions kafka-python uses ("2.1": those of Kafka 2.1, which Kafka 4.x still serves) and
    # skips its ApiVersions probe at connect; None probes the broker. The tests' mock cluster needs it pinned.
    api_version: str | None = Field(None, pattern=r"^\d+\.\d+(\.\d+)?$")
    # Consumer group liveness (None: kafka-python's defaults, 45 s / 3 s). A restarted trainer's rejoin waits up to
    # the session timeout for the members of the last generation; the heartbeat must come well inside it.
    session_timeout_ms: int | None = Field(None, gt=0)
    heartbeat_interval_ms: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _heartbeat_inside_session(self) -> "KafkaSettings":
        hb, st = self.heartbeat_interval_ms or 3_000, self.session_timeout_ms or 45_000
        if hb >= st:
            raise ValueError(f"heartbeat_interval_ms ({hb}) must be below session_timeout_ms ({st})")
        return self

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, v: list[str]) -> list[str]:
        for s in v:
            host, _, port = s.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"bootstrap server {s!r} is not host:port")
        return v


class StreamSettings(Section):
    model_config = SettingsConfigDict(env_prefix="T2DIFF_STREAM__")

    backend: Literal["local", "kafka"] = "local"
    # Embedded log directory; default $T2DIFF_RUNS_DIR/eventlog (resolved at use, so tests get their tmp dir).
    log_dir: Path | None = None
    partitions: int = Field(8, ge=1, le=1024)
    # SQLite synchronous level of the embedded log: "full" fsyncs the WAL on every flush (survives power loss),
    # "normal" fsyncs at checkpoints (survives a killed process, may lose the last flushes on power loss).
    fsync: Literal["full", "normal", "off"] = "normal"
    # Producer batching: buffered records are written at most this long after the first one was produced.
    linger_ms: int = Field(5, ge=0)
    topic: str = "events"
    dead_letter_topic: str = "events.dlq"
    # Validation limits applied by streaming.events.decode.
    max_future_ms: int = Field(5 * 60_000, ge=0, description="event times further ahead of the wall clock are rejected")
    # Which ids count as known. "kuairand" / "ml-1m": the shared data files; "any": accept every id >= 0.
    known_items: Literal["kuairand", "ml-1m", "any"] = "kuairand"
    known_users: Literal["kuairand", "ml-1m", "any"] = "kuairand"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    def resolved_log_dir(self) -> Path:
        return Path(self.log_dir) if self.log_dir is not None else runs_dir() / "eventlog"
