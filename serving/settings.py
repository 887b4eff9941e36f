"""Serving settings: the ``serving`` section of the one config YAML (see docs/ARCHITECTURE.md).

Candidate *sources* are named once (``sources``); experiment *arms* point at a source by name and carry a
weight. Arms may also come from a separate small YAML (``arms_file``) that the router re-reads when it
changes, so the experiment team can move traffic without a restart.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from t2diff.config import Section

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_name(v: str) -> str:
    # Arm / source names travel inside request ids and metric labels: keep them to a safe alphabet.
    if not NAME_RE.match(v):
        raise ValueError(f"name {v!r} must match {NAME_RE.pattern}")
    return v


class ArmConfig(_Strict):
    name: str
    weight: float = Field(ge=0.0)
    source: str  # key of ServingSettings.sources

    _n = field_validator("name", "source")(_check_name)


class ExperimentConfig(_Strict):
    """Arms and the salt of the sticky hash. Changing the salt reshuffles every user (a new experiment)."""

    name: str = "t2diff_recall"
    salt: str = "exp-2025-01"
    arms: list[ArmConfig] = Field(default_factory=lambda: [
        ArmConfig(name="treatment", weight=0.5, source="t2diff"),
        ArmConfig(name="control", weight=0.5, source="baseline"),
    ])

    @model_validator(mode="after")
    def _arms_ok(self) -> "ExperimentConfig":
        if not self.arms:
            raise ValueError("experiment needs at least one arm")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate arm names: {names}")
        if sum(a.weight for a in self.arms) <= 0:
            raise ValueError("arm weights sum to 0")
        return self


class SourceConfig(_Strict):
    """One candidate source.

    ``model``: a user tower + item index. The model comes from the registry (``registry: true``, follows
    ``latest`` unless ``version`` pins one) or from a checkpoint file (any arch, e.g. a SASRec control).
    Its item vectors live in a Milvus collection (``index: milvus``, the shared ItemIndex for registry
    models, or one named by ``collection_prefix``) or are searched exactly in process (``index: exact``).
    ``popularity``: most-played items from a data set or the feedback log; the fallback of every arm.
    """

    kind: Literal["model", "popularity"] = "model"
    registry: bool = True
    version: str | None = None  # pin a registry version (rollback); None = follow latest
    checkpoint: Path | None = None  # used when registry is False
    index: Literal["milvus", "exact"] = "milvus"
    index_uri: str | None = None  # None = the shared index section's uri
    collection_prefix: str | None = None  # separate Milvus collections for a checkpoint source
    dataset: str = "ml-1m"  # popularity counts come from this data set ...
    counts_path: Path | None = None  # ... or from a JSON {item_id: score} file
    poll_s: float = 5.0  # how often the encoder checks the registry for a new version

    @model_validator(mode="after")
    def _ok(self) -> "SourceConfig":
        if self.kind == "model" and not self.registry and self.checkpoint is None:
            raise ValueError("a model source needs registry: true or a checkpoint path")
        return self


class FeatureSourceConfig(_Strict):
    """Where session features come from: the Feast online store (production) or a data set replayed into
    memory (``static``: each user's last items from the data set; benches and demos without Feast)."""

    kind: Literal["feast", "static", "file"] = "feast"
    dataset: str = "ml-1m"  # static
    path: Path | None = None  # file: JSONL of {"user_id", "items", "ts_ms"}

    @model_validator(mode="after")
    def _ok(self) -> "FeatureSourceConfig":
        if self.kind == "file" and self.path is None:
            raise ValueError("features.kind 'file' needs a path")
        return self


class BatchConfig(_Strict):
    # 1 = no batching: each request goes straight to a worker thread, skipping Ray's batch queue
    max_batch_size: int = Field(32, ge=1, le=1024)
    wait_ms: float = Field(2.0, ge=0.0, le=100.0)
    # Run each batch (user tower + search) in a worker thread, so the replica's event loop keeps taking
    # requests meanwhile. False runs it on the event loop: no GIL hand-offs between the loop and the worker
    # (a thread waiting for the GIL can wait a whole switch interval, 5 ms), for batches that are CPU work anyway.
    in_thread: bool = True
    # Worker threads for those batches: 0 = asyncio's default executor (min(32, cores + 4) threads). A few
    # threads suffice (the user tower and the search release the GIL, the rest is Python that one GIL runs
    # one at a time); more only contend for the GIL when a burst puts every one of them to work at once.
    threads: int = Field(0, ge=0, le=64)


class ServingSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    config_path: Path | None = None  # the full YAML, so deployments can read features/registry/index sections
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)
    arms_file: Path | None = None  # optional YAML holding an `experiment` mapping; re-read when it changes
    arms_reload_s: float = Field(2.0, gt=0)
    sources: dict[str, SourceConfig] = Field(default_factory=lambda: {
        "t2diff": SourceConfig(),
        "baseline": SourceConfig(registry=False, checkpoint=Path("baselines/sasrec.pt"), index="exact"),
        "popularity": SourceConfig(kind="popularity"),
    })
    fallback_source: str = "popularity"
    features: FeatureSourceConfig = Field(default_factory=FeatureSourceConfig)
    k_default: int = Field(20, ge=1)
    k_max: int = Field(200, ge=1)
    max_body_bytes: int = Field(16_384, ge=256)
    max_feedback_events: int = Field(500, ge=1)
    evr_threshold_s: float = Field(7.0, gt=0)  # effective view: play time >= this, or the log's long_view flag
    request_secret: str = "t2diff-dev-secret"  # signs request ids so any replica can trust an id's arm
    recent_requests: int = Field(100_000, ge=0)  # request ids kept in memory to validate feedback
    feedback_log: Path | None = None  # JSONL; None = $T2DIFF_RUNS_DIR/feedback/feedback.jsonl
    feedback_to_event_log: bool = False  # also produce feedback to the streaming event log
    batch: BatchConfig = Field(default_factory=BatchConfig)
    # "split": Ingress -> UserEncoder and Ingress -> Retriever, two hops per request (encoder on a GPU replica,
    # index scaled apart). "fused": one Recaller replica per source runs both, one hop: on a few CPU cores the
    # second hop's CPU and batching window are what keep p99 up (serving/recaller.py, benchmarks/serve.md).
    # "local": no backend hop at all; each model source's Recaller runs inside the ingress replica (scale the
    # ingress to scale the model; the encoder's GPU and user_config go to the ingress).
    topology: Literal["split", "fused", "local"] = "split"
    # Ray Serve's per-request access log line in every replica. Off by default: each request is already counted
    # in Prometheus (by arm, deployment, outcome) and logged with its id in the feedback log, and on a small
    # box the log lines cost CPU on every hop.
    access_log: bool = False
    # After start-up each replica freezes its objects for Python's cyclic GC and runs gen-0 collections every
    # this many net allocations (components.settle_gc: a full collection over the unfrozen heap stalled requests
    # ~113 ms). 0 keeps Python's defaults.
    gc_threshold: int = Field(50_000, ge=0)
    # Python's GIL switch interval in every replica (ms; None = Python's 5 ms). A thread returning from a call that
    # released the GIL (the compiled user tower, a Milvus search) waits until the thread holding it (the event
    # loop) reaches the interval, so at 5 ms each batch could wait up to 5 ms per release twice.
    switch_interval_ms: float | None = Field(None, gt=0)
    encoder_replicas: int = Field(1, ge=1)
    retriever_replicas: int = Field(1, ge=1)
    ingress_replicas: int = Field(1, ge=1)
    # Ray Serve's default (5) caps a replica at 5 requests in flight: the encoder could never fill a batch
    # and the proxy would queue everything else. Batching needs many requests in flight per replica.
    max_ongoing_requests: int = Field(256, ge=1)
    # Reverse diffusion steps at serving (None = the model's own, T=50). Paper Table 4: T=10 loses ~0.005
    # R@20 and is 3x faster; the latency budget decides.
    encoder_steps: int | None = Field(None, ge=1)
    # AOT-compile the whole user tower on CPU and run it without the GIL (serving/encoder.py compile_user_tower,
    # t2diff/model/aot.py), for ~45 s of CPU (a niced child process) per architecture and step count before its
    # first version goes live; later versions of it only load their weights. Speed: benchmarks/encode.md.
    encoder_compile: bool = False
    # GPU encoder: the reverse process as the PyTorch loop in a CUDA graph ("torch") or as one Triton kernel in
    # that graph ("triton", t2diff/model/triton_reverse.py: 4.9x faster at T = 50 on an H200; the official
    # U-Net shape only, other shapes stay on the loop). No effect on CPU.
    encoder_reverse: Literal["torch", "triton"] = "torch"
    torch_threads: int = Field(1, ge=1)  # per encoder replica; more threads only fight on small batches
    num_gpus_encoder: float = Field(0.0, ge=0.0)  # > 0 puts the user tower on a GPU replica
    timeout_s: float = Field(1.0, gt=0)  # per backend call; past it the request falls back
    # A user with no session features: answer from the fallback (a new user in a feed still needs
    # candidates) or answer 404 (callers that must know). Either way it is counted.
    unknown_user: Literal["fallback", "reject"] = "fallback"

    @model_validator(mode="after")
    def _refs(self) -> "ServingSettings":
        for name in self.sources:
            _check_name(name)
        for a in self.experiment.arms:
            if a.source not in self.sources:
                raise ValueError(f"arm {a.name!r} names unknown source {a.source!r}; have {sorted(self.sources)}")
        if self.fallback_source not in self.sources or self.sources[self.fallback_source].kind != "popularity":
            raise ValueError(f"fallback_source {self.fallback_source!r} must name a popularity source")
        if self.k_default > self.k_max:
            raise ValueError("k_default > k_max")
        return self

    def model_sources(self) -> dict[str, SourceConfig]:
        return {n: s for n, s in self.sources.items() if s.kind == "model"}

    def feedback_path(self) -> Path:
        from t2diff.paths import runs_dir

        return Path(self.feedback_log) if self.feedback_log else runs_dir() / "feedback" / "feedback.jsonl"
