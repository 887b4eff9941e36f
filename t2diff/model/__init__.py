"""The T2Diff model and its baselines behind one interface (docs/ARCHITECTURE.md, "Model").

Importing this package pulls in torch only.
"""
from __future__ import annotations

import torch
from torch import nn

from t2diff.model.checkpoint import load_checkpoint, save_checkpoint
from t2diff.model.config import ARCHS, ModelConfig

__all__ = ["ARCHS", "ModelConfig", "build_model", "save_checkpoint", "load_checkpoint"]


def build_model(cfg: ModelConfig, item_tags: torch.Tensor) -> nn.Module:
    """Dispatch on cfg.arch. Baselines are imported lazily (t2diff/model/baselines.py, harness engineer)."""
    item_tags = torch.as_tensor(item_tags, dtype=torch.long)
    if cfg.arch in ("t2diff", "t2diff_no_dp", "mixed_attention"):
        from t2diff.model.t2diff import T2Diff

        return T2Diff(cfg, item_tags)
    if cfg.arch in ("sasrec", "gru4rec", "diffurec"):
        from t2diff.model import baselines

        return baselines.build_baseline(cfg, item_tags)
    raise ValueError(f"unknown arch {cfg.arch!r}; expected one of {ARCHS}")
