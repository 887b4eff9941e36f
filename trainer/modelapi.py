"""Thin indirection over ``t2diff.model`` (build_model / save_checkpoint / load_checkpoint).

The T2Diff model package is written in parallel; until it lands (or if its ``build_model`` does not know the
baselines yet) the harness still trains SASRec / GRU4Rec from ``t2diff.model.baselines`` and writes a
checkpoint in the same layout (config dict, state dict, extra).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from t2diff.model.baselines import BASELINES, build_baseline
from t2diff.model.config import ModelConfig

log = logging.getLogger(__name__)


def _official():
    try:
        import t2diff.model as m
    except ImportError:
        return None
    if all(hasattr(m, n) for n in ("build_model", "save_checkpoint", "load_checkpoint")):
        return m
    return None


def build_model(cfg: ModelConfig, item_tags: torch.Tensor) -> torch.nn.Module:
    m = _official()
    if m is not None:
        try:
            return m.build_model(cfg, item_tags)
        except (ValueError, NotImplementedError, KeyError):
            if cfg.arch not in BASELINES:
                raise
            log.debug("t2diff.model.build_model does not build %s; using t2diff.model.baselines", cfg.arch)
    elif cfg.arch not in BASELINES:
        raise RuntimeError(f"arch {cfg.arch!r} needs t2diff.model.build_model, which is not available yet")
    return build_baseline(cfg, item_tags)


def save_checkpoint(path: str | Path, model: torch.nn.Module, **extra: Any) -> None:
    m = _official()
    if m is not None:
        return m.save_checkpoint(path, model, **extra)
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), "extra": extra}, path)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    m = _official()
    if m is not None:
        try:
            return m.load_checkpoint(path, map_location=map_location)
        except (KeyError, ValueError, NotImplementedError):
            log.debug("t2diff.model.load_checkpoint could not read %s; trying the harness layout", path)
    ck = torch.load(path, map_location=map_location, weights_only=False)
    cfg = ModelConfig.from_dict(ck["config"])
    tags = ck["state_dict"]["items.item_tags"]
    model = build_model(cfg, tags)
    model.load_state_dict(ck["state_dict"])
    return model, ck.get("extra", {})
