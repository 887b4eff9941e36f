"""Checkpoints that rebuild the model from the file alone: {"config", "state_dict", "item_tags", "extra"}."""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from t2diff.model.config import ModelConfig

log = logging.getLogger(__name__)


def _item_tags(model: nn.Module, state: dict[str, torch.Tensor]) -> torch.Tensor:
    tags = getattr(model, "item_tags", None)
    if isinstance(tags, torch.Tensor):
        return tags
    keys = [k for k in state if k.endswith("item_tags")]
    if not keys:
        raise ValueError(f"{type(model).__name__} has no item_tags buffer; cannot rebuild it from a checkpoint")
    return state[keys[0]]


def _blob(model: nn.Module, extra: dict[str, Any]) -> dict[str, Any]:
    cfg: ModelConfig = model.cfg
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"config": cfg.to_dict(), "state_dict": state, "item_tags": _item_tags(model, state).detach().cpu(),
            "extra": extra}


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> Path:
    """Write atomically (tmp + rename) so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(_blob(model, extra), tmp)
    os.replace(tmp, path)
    return path


def checkpoint_bytes(model: nn.Module, **extra: Any) -> bytes:
    """The bytes :func:`save_checkpoint` would write (for uploads to an object store)."""
    buf = io.BytesIO()
    torch.save(_blob(model, extra), buf)
    return buf.getvalue()


def load_checkpoint(path: str | Path | bytes | IO[bytes], map_location: str | torch.device = "cpu",
                    name: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """-> (model in eval mode, extra). ``path``: a file path, the checkpoint's bytes, or a binary file object
    (``name`` labels the last two in errors). Loads with weights_only=False: checkpoints are our own trusted files
    whose ``extra`` may hold plain Python objects (catalog dicts, offsets, numpy arrays)."""
    from t2diff.model import build_model

    if isinstance(path, (bytes, bytearray, memoryview)):
        src: Any = io.BytesIO(path)
    else:
        src = path if hasattr(path, "read") else Path(path)
    name = name or (str(src) if isinstance(src, Path) else getattr(src, "name", "checkpoint"))
    blob = torch.load(src, map_location=map_location, weights_only=False)
    cfg = ModelConfig.from_dict(blob["config"])
    tags = blob["item_tags"]
    cfg.num_items = tags.shape[0] - 1  # the table may have grown (add_items) after the config was written
    model = build_model(cfg, tags)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:  # e.g. written before a layer layout changed: say so instead of a wall of shapes
        first = str(e).splitlines()[:2]
        raise ValueError(f"{name}: weights do not fit the current {cfg.arch} code (checkpoint from an older "
                         f"model version? retrain it): {' '.join(first)}") from e
    model.to(map_location).eval()
    return model, blob.get("extra", {})
