"""``online_trainer`` section of the config file (``t2diff train stream --config``).

The ``trainer`` section belongs to the offline harness (trainer.settings); the stream trainer reads its own key
so the two can evolve separately. Env overrides: ``T2DIFF_ONLINE__<FIELD>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from t2diff.config import Section
from t2diff.paths import runs_dir


class OnlineTrainerSettings(Section):
    model_config = SettingsConfigDict(env_prefix="T2DIFF_ONLINE__")

    group: str = "trainer-online"  # its own consumer group on the event log
    work_dir: Path | None = None  # checkpoint + prequential log; default $T2DIFF_RUNS_DIR/online
    # Start: an offline checkpoint (t2diff train offline, extra["catalog"]) or, when empty, from scratch with
    # the catalogue of `dataset` (every video with features for KuaiRand, so unseen videos are not cold).
    init_checkpoint: str | None = None
    dataset: str = "kuairand"
    arch: str = "t2diff"
    model: dict[str, Any] = Field(default_factory=dict)  # ModelConfig overrides for a scratch start
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    threads: int | None = None  # torch CPU threads

    positive_types: list[str] = Field(default_factory=lambda: ["click"])  # event types that are positives
    min_history: int = Field(1, ge=0)  # positives with fewer earlier items are neither scored nor trained
    dedup_window: int = Field(200_000, ge=0)  # recent idempotency keys remembered (duplicate -> dead letter)
    cold_tags: Literal["kuairand", "ml-1m", "none"] = "kuairand"  # side features of items first seen online

    lr: float = 3e-3
    clip_norm: float = 110.0  # per-parameter, as the official code
    batch_size: int = Field(256, ge=1)  # new samples per optimisation step
    replay_capacity: int = Field(20_000, ge=0)
    replay_ratio: float = Field(1.0, ge=0)  # replayed samples per new sample in each step
    poll_max: int = Field(4096, ge=1)
    poll_timeout_s: float = 0.2
    # Python's cyclic GC: allocations between gen-0 collections while run() runs (0 = interpreter default, 700).
    # The trainer keeps hundreds of thousands of long-lived objects (histories, dedup keys), which every older-
    # generation pass walks; at the default the collector took ~60 % of the host time per event (measured).
    gc_threshold: int = Field(100_000, ge=0)
    decode_workers: int = Field(0, ge=0)  # processes decoding events while this one trains (0 = decode in process)

    prequential: bool = True
    eval_ks: list[int] = Field(default_factory=lambda: [10, 20, 100])
    # Reverse diffusion steps when scoring (None = the model's T). Fewer steps cost less per scored event; the
    # recall they give is measured by `t2diff bench trainer prequential --eval-steps` (benchmarks/trainer.md).
    eval_num_steps: int | None = Field(None, ge=1)
    compile_train: bool = True  # on CUDA: torch.compile the training loss (fewer, fused kernels; ~1 min to compile)
    fast_scoring: bool = True  # on CUDA: score through a CUDA graph of the torch.compile'd U-Net (t2diff.model.graphed)
    window: int = Field(5_000, ge=1)  # events in the sliding-window figure (beside the cumulative one)
    score_log: bool = True  # per-event JSONL (offset, user, item, rank, ...) for recomputation and audits
    compare_frozen: bool = False  # also score every event with the frozen start model (same run baseline)

    checkpoint_every_s: float = 30.0
    checkpoint_every_events: int = 50_000
    publish_every_s: float = 30.0
    publish_every_events: int = 0  # 0 = time only
    publish_index: bool = True  # upsert item embeddings into Milvus with each version
    publish_on_exit: bool = True

    max_events: int | None = None  # stop after this many records (benchmarks, tests)
    idle_exit_s: float | None = None  # stop after this long without records (replays); None = run forever
    metrics_port: int | None = None  # serve prometheus /metrics here
    log_every_s: float = 10.0

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir is not None else runs_dir() / "online"
