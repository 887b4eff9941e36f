"""New items on the stream: grow the embedding table (``model.add_items``) rather than hash into a reserved range.

Why growth: catalogues here are thousands to ~100k items and grow by a few per minute, so appending rows is
cheap (one ``torch.cat`` of the ID table per poll batch that brings new items), keeps ids exact (no collisions
to account for, no two items sharing an ID row and polluting each other's gradients), and keeps
``Catalog`` <-> model indices 1..N identical to the offline checkpoint's. A reserved hash range would avoid
re-allocating the optimizer but would cap the catalogue and blur items that collide. The new ID rows start
near zero (N(0, emb_init_std)), so a cold item's vector comes from its side features (the mean tag embedding
through the item tower) until it is trained on. The optimizer's Adam moments are carried over, padded with
zeros for the new rows, because the table is a new Parameter after growth.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from t2diff.data import Catalog

log = logging.getLogger(__name__)


def cold_tag_lookup(source: str) -> dict[int, list[int]]:
    """raw item id -> tag ids (model numbering) for items that arrive on the stream."""
    if source == "kuairand":
        from t2diff.data import kuairand_video_tags

        return kuairand_video_tags()
    if source == "ml-1m":
        import pandas as pd

        from t2diff.data import ML1M_GENRES
        from t2diff.paths import data_dir

        movies = pd.read_csv(data_dir() / "ml-1m" / "movies.dat", sep="::", engine="python",
                             names=["item", "title", "genres"], encoding="latin-1")
        gid = {g: i + 1 for i, g in enumerate(ML1M_GENRES)}
        return {int(r.item): [gid[g] for g in r.genres.split("|") if g in gid] for r in movies.itertuples()}
    return {}


def rebuild_optimizer(opt: torch.optim.Optimizer, model: torch.nn.Module,
                      before: dict[str, torch.nn.Parameter]) -> torch.optim.Optimizer:
    """A new optimizer over ``model``'s parameters with the old per-parameter state; state tensors of grown
    parameters get zero rows appended (Adam's moments of a fresh row are zero)."""
    new = type(opt)(model.parameters(), **opt.defaults)
    for name, p in model.named_parameters():
        old_p = before.get(name)
        if old_p is None or old_p not in opt.state:
            continue
        st: dict[str, Any] = {}
        for k, v in opt.state[old_p].items():
            if torch.is_tensor(v) and v.dim() > 0 and v.shape != p.shape:
                if v.shape[1:] != p.shape[1:] or v.shape[0] > p.shape[0]:
                    raise ValueError(f"cannot carry optimizer state {k} of {name}: {tuple(v.shape)} -> {tuple(p.shape)}")
                v = torch.cat([v, v.new_zeros((p.shape[0] - v.shape[0],) + tuple(v.shape[1:]))])
            st[k] = v
        new.state[p] = st
    return new


def grow_seeded(model: torch.nn.Module, rows: np.ndarray, seed: int) -> np.ndarray:
    """``model.add_items(rows)`` with the new ID rows drawn from ``seed``: a resumed run and a frozen copy
    of the model get the very same rows."""
    dev = next(model.parameters()).device
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.add_items(torch.from_numpy(rows)).cpu().numpy()


def add_cold_items(model: torch.nn.Module, catalog: Catalog, opt: torch.optim.Optimizer, raw_ids: list[int],
                   tags: dict[int, list[int]], seed: int = 0) -> tuple[np.ndarray, torch.optim.Optimizer]:
    """Append ``raw_ids`` (not yet in ``catalog``) to model and catalogue; returns (new indices, optimizer).
    New ID rows are drawn from ``seed + catalog size`` (see grow_seeded)."""
    raw_ids = [int(r) for r in dict.fromkeys(raw_ids) if int(r) not in catalog]
    if not raw_ids:
        return np.zeros(0, dtype=np.int64), opt
    T, nt = catalog.max_tags, catalog.num_tags
    rows = np.zeros((len(raw_ids), T), dtype=np.int64)  # (M, max_tags)
    for i, r in enumerate(raw_ids):
        t = [x for x in tags.get(r, []) if 0 < x <= nt][:T]
        rows[i, : len(t)] = t
    before = dict(model.named_parameters())
    new_idx = grow_seeded(model, rows, seed + catalog.num_items)
    cat_idx = np.array([catalog.add(r, rows[i].tolist()) for i, r in enumerate(raw_ids)], dtype=np.int64)
    if not np.array_equal(new_idx, cat_idx):
        raise RuntimeError(f"model and catalogue disagree on new item indices: {new_idx[:5]} vs {cat_idx[:5]}")
    opt = rebuild_optimizer(opt, model, before)
    log.info("added %d cold items (catalogue now %d); %d with side features", len(raw_ids), catalog.num_items,
             int((rows > 0).any(1).sum()))
    return cat_idx, opt
