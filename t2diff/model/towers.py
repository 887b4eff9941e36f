"""Item representation and item tower.

Raw item vector (official): x_i = concat(ID embedding (id_dim), mean of the item's tag embeddings (tag_dim)),
edim = id_dim + tag_dim; the item tower maps it to user_dim with MLP [user_dim] (Linear, ELU, LayerNorm).
Both tables are initialised N(0, emb_init_std). The ID lookup is clipped to ``emb_max_norm`` like TF's
``embedding_lookup(max_norm=...)`` (the official code clips the ID lookup only), functionally: torch's
``nn.Embedding(max_norm=)`` rewrites the table in place, which breaks autograd when the table is read twice
in one step (history + catalogue). Index 0 is padding and always maps to the zero vector.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from t2diff.model.attention import MLP
from t2diff.model.config import ModelConfig

log = logging.getLogger(__name__)


def clip_norm(x: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    if max_norm is None:
        return x
    return x * (max_norm / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)


def item_vectors(idx: torch.Tensor, id_weight: torch.Tensor, tag_weight: torch.Tensor, item_tags: torch.Tensor,
                 max_norm: float | None) -> torch.Tensor:
    """(...,) item indices -> (..., id_dim + tag_dim): concat(clipped ID embedding, mean of the tag embeddings),
    zero at padding. A function of the tables, so an exported user tower (t2diff/model/aot.py) can take the tables as
    inputs and keep working when the catalogue grows."""
    ide = clip_norm(id_weight[idx], max_norm)  # (..., id_dim)
    tags = item_tags[idx]  # (..., T)
    tm = (tags > 0).unsqueeze(-1).to(ide.dtype)
    te = (tag_weight[tags] * tm).sum(-2) / tm.sum(-2).clamp_min(1.0)  # (..., tag_dim)
    return torch.cat([ide, te], dim=-1) * (idx > 0).unsqueeze(-1).to(ide.dtype)


def per_row(fn: Callable[[torch.Tensor], torch.Tensor], idx: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``fn(idx)`` for a per-item function ``fn``: computed once per catalogue row and gathered when ``idx`` has more
    entries than the catalogue has rows (inference batches: 4096 histories x 50 positions against ML-1M's 3,707
    rows), else directly. The per-row arithmetic is the same, so the values are too; for the raw item vectors it
    runs ~10 small kernels over N+1 rows instead of B·L (H100, batch 4096, in a CUDA graph: 0.20 -> 0.17 ms, both
    launch-bound; more saved in eager mode). The table is rebuilt on every call from the current weights, so a
    model that keeps training never reads a stale copy, and the branch depends on shapes only (graph-capturable)."""
    if idx.numel() <= num_rows:
        return fn(idx)
    return fn(torch.arange(num_rows, device=idx.device))[idx]  # (num_rows, D) -> (..., D)


class ItemEmbedding(nn.Module):
    """(...,) item indices -> (..., edim) raw item vectors; owns the ID/tag tables and the item_tags buffer."""

    def __init__(self, cfg: ModelConfig, item_tags: torch.Tensor) -> None:
        super().__init__()
        item_tags = torch.as_tensor(item_tags, dtype=torch.long)
        if item_tags.dim() != 2 or item_tags.shape[0] != cfg.num_items + 1:
            raise ValueError(f"item_tags must be (num_items+1={cfg.num_items + 1}, max_tags), got {tuple(item_tags.shape)}")
        if item_tags.numel() and int(item_tags.max()) > cfg.num_tags:
            raise ValueError(f"tag id {int(item_tags.max())} > num_tags={cfg.num_tags}")
        self.cfg = cfg
        self.register_buffer("item_tags", item_tags.clone())  # (N+1, max_tags)
        self.id_weight = nn.Parameter(torch.randn(cfg.num_items + 1, cfg.id_dim) * cfg.emb_init_std)
        self.tag_weight = nn.Parameter(torch.randn(cfg.num_tags + 1, cfg.tag_dim) * cfg.emb_init_std)

    @property
    def num_items(self) -> int:
        return self.item_tags.shape[0] - 1

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return item_vectors(idx, self.id_weight, self.tag_weight, self.item_tags, self.cfg.emb_max_norm)

    @torch.no_grad()
    def grow(self, tags: torch.Tensor) -> torch.Tensor:
        """Append M new items (tags (M, <=max_tags)); returns their indices. Old rows are untouched."""
        tags = torch.as_tensor(tags, dtype=torch.long, device=self.item_tags.device)
        if tags.dim() == 1:
            tags = tags.unsqueeze(0)
        T = self.item_tags.shape[1]
        if tags.shape[1] > T:
            raise ValueError(f"new items have {tags.shape[1]} tags, the model allows max_tags={T}")
        if tags.numel() and (int(tags.min()) < 0 or int(tags.max()) > self.cfg.num_tags):
            raise ValueError(f"tag ids must be in 0..{self.cfg.num_tags}")
        tags = torch.nn.functional.pad(tags, (0, T - tags.shape[1]))
        M, start = tags.shape[0], self.item_tags.shape[0]
        new = torch.randn(M, self.cfg.id_dim, device=self.id_weight.device, dtype=self.id_weight.dtype)
        # A new Parameter object: optimizers holding the old one must be rebuilt (documented in add_items).
        self.id_weight = nn.Parameter(torch.cat([self.id_weight.data, new * self.cfg.emb_init_std]))
        self.item_tags = torch.cat([self.item_tags, tags])
        self.cfg.num_items = self.num_items
        return torch.arange(start, start + M, device=tags.device)


class ItemTower(nn.Module):
    """(..., edim) -> (..., user_dim): MLP [user_dim] with ELU + LayerNorm (official item tower)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mlp = MLP(cfg.edim, [cfg.user_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class TwoTowerModule(nn.Module):
    """The item side every arch shares (T2Diff and the baselines), so comparisons differ only in the user tower:
    ``items`` (ID + mean tag embedding) -> ``item_tower``, full-catalogue encoding and online catalogue growth."""

    def __init__(self, cfg: ModelConfig, item_tags: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = ItemEmbedding(cfg, item_tags)  # (..,) -> (.., edim)
        self.item_tower = ItemTower(cfg)  # (.., edim) -> (.., user_dim)

    @property
    def item_tags(self) -> torch.Tensor:
        return self.items.item_tags

    @property
    def device(self) -> torch.device:
        return self.items.item_tags.device

    def encode_items(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(N+1, U) for the whole catalogue (row 0 = padding = zeros) or (len(idx), U)."""
        if idx is None:
            idx = torch.arange(self.items.num_items + 1, device=self.device)
        idx = idx.to(self.device, torch.long)
        out = self.item_tower(self.items(idx))
        return out * (idx > 0).unsqueeze(-1).to(out.dtype)

    @property
    def input_dim(self) -> int:
        """Width of the history vectors the user tower reads: user_dim when tied, else edim."""
        return self.cfg.user_dim if self.cfg.tied_input else self.cfg.edim

    def input_vectors(self, idx: torch.Tensor, table: bool = False) -> torch.Tensor:
        """(...,) item indices -> (..., input_dim): the history as the user tower reads it. ``cfg.tied_input``:
        the candidate-side vectors (``encode_items``, so history and candidates share one representation);
        otherwise the raw ID + tag vectors (the official split). Zero at padding either way. ``table=True``
        (inference): through :func:`per_row`, the same values."""
        idx = idx.to(self.device, torch.long)
        fn = self.encode_items if self.cfg.tied_input else self.items
        return per_row(fn, idx, self.items.num_items + 1) if table else fn(idx)

    def add_items(self, tags: torch.Tensor) -> torch.Tensor:
        """Grow the catalogue by M cold items (tags (M, max_tags)); returns their indices (M,).

        The ID table becomes a new Parameter: optimizers built before must be rebuilt.
        """
        new = self.items.grow(tags)
        log.info("added %d items; catalogue now %d", len(new), self.items.num_items)
        return new
