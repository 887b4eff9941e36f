"""Offline training and evaluation harness (one run = one arch x dataset x protocol x seed).

Recipe from the official code (config/nn_param.conf): Adam with a constant LR (0.002 ML-1M, 0.003 KuaiRand),
batch 512, gradient clipping by norm **per parameter** at 110 (TF ``clip_by_norm`` on each variable), full
softmax over all items. Unlike the official code, the epoch is selected on a VALIDATION split (early stop after
``patience`` epochs without improvement, or none: the full budget) and the test split is evaluated exactly once,
with the best weights.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from t2diff.data import Catalog, Interactions, dataset_stats, load_dataset, load_kuairand, load_kuairand_log, user_sequences
from t2diff.model.config import ModelConfig
from t2diff.model.t2diff import DIFFUSION_ARCHS
from trainer import modelapi, probe
from trainer.metrics import RankingAccumulator, cutoffs_for, ranks_from_scores
from trainer.optim import clip_per_parameter
from trainer.protocols import SampleSet, Split, build_split

log = logging.getLogger(__name__)

# Presets: "paper" follows the official recipe; "quick" is a warm-start checkpoint in a few CPU minutes.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {"max_epochs": 3, "patience": 2, "max_train_samples": 12000, "max_eval_samples": 500},
}


@dataclass
class OfflineConfig:
    dataset: str = "ml-1m"
    arch: str = "t2diff"
    protocol: str = "P"
    seed: int = 0
    lr: float | None = None  # None: 0.002 ML-1M, 0.003 KuaiRand (official)
    batch_size: int = 512
    max_epochs: int | None = None  # None: 100 ML-1M, 20 KuaiRand (official)
    patience: int | None = 10  # None: no early stop; run max_epochs, keep the best validation epoch
    clip_norm: float = 110.0
    eval_batch_size: int = 1024
    select_metric: str | None = None  # None: recall@20 ML-1M, recall@100 KuaiRand, ndcg@10 protocol L
    until_ms: int | None = None  # keep only interactions before this time (KuaiRand warm start)
    catalog_all: bool = False  # KuaiRand: every video with features in the catalogue (streaming growth)
    max_train_samples: int | None = None  # subsample training targets (quick preset)
    max_eval_samples: int | None = None
    val_frac: float = 0.1
    l_train_per_user: int | None = None  # protocol L: only the most recent N training targets per user (None = all)
    probe_next: bool = False  # diffusion archs: also probe what x̂_{n+1} is worth on the test set (trainer.probe)
    device: str = "auto"
    threads: int | None = None
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig overrides

    def resolved(self) -> "OfflineConfig":
        c = copy.deepcopy(self)
        kuai = c.dataset.startswith("kuairand")
        c.lr = c.lr if c.lr is not None else (0.003 if kuai else 0.002)
        c.max_epochs = c.max_epochs if c.max_epochs is not None else (20 if kuai else 100)
        if c.patience is not None and c.patience < 1:
            raise ValueError(f"patience must be >= 1 epoch or None (no early stop), got {c.patience}")
        if c.probe_next and c.arch not in DIFFUSION_ARCHS:
            raise ValueError(f"probe_next needs a diffusion arch {DIFFUSION_ARCHS}, got {c.arch!r}")
        if c.select_metric is None:
            c.select_metric = "ndcg@10" if c.protocol.upper() == "L" else ("recall@100" if kuai else "recall@20")
        return c


def apply_preset(cfg: OfflineConfig, preset: str | None) -> OfflineConfig:
    if not preset:
        return cfg
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    for k, v in PRESETS[preset].items():
        setattr(cfg, k, v)
    return cfg


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_data(cfg: OfflineConfig) -> tuple[Interactions, Catalog]:
    """The data set, optionally cut at ``until_ms`` (time window for the KuaiRand warm start)."""
    if cfg.dataset.startswith("kuairand"):
        raw = load_kuairand_log()
        if cfg.until_ms is not None:
            raw = raw[raw["time_ms"] < cfg.until_ms]
        return load_kuairand(log=raw, catalog_scope="all" if cfg.catalog_all else "interactions")
    inter, cat = load_dataset(cfg.dataset)
    if cfg.until_ms is not None:
        keep = inter.ts_ms < cfg.until_ms
        inter = Interactions(inter.name, inter.user[keep], inter.item[keep], inter.ts_ms[keep])
    return inter, cat


def model_config(cfg: OfflineConfig, catalog: Catalog) -> ModelConfig:
    over = dict(cfg.model)
    if cfg.dataset.startswith("kuairand"):
        over.setdefault("lambda_kl", 10.0)  # official KuaiRand λ
    if "edim" in over:  # convenience: edim E -> ID E/2 + tag E/2, user/item vectors 2E (official ratios)
        e = int(over.pop("edim"))
        over.setdefault("id_dim", e // 2)
        over.setdefault("tag_dim", e - e // 2)
        over.setdefault("user_dim", 2 * e)
    return ModelConfig(arch=cfg.arch, num_items=catalog.num_items, num_tags=catalog.num_tags,
                       max_tags=catalog.max_tags, **over)


def _subsample(s: SampleSet, n: int | None, seed: int) -> SampleSet:
    if n is None or len(s) <= n:
        return s
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(s), n, replace=False)))
    out = SampleSet(s.hist[idx], s.hist_ts[idx], s.target[idx], s.target_ts[idx], s.user[idx])
    if s.seen_ptr is not None:
        pairs = [s.seen_items[s.seen_ptr[i]:s.seen_ptr[i + 1]] for i in idx.tolist()]
        out.seen_ptr = torch.as_tensor([0] + np.cumsum([len(p) for p in pairs]).tolist(), dtype=torch.int64)
        out.seen_items = torch.cat(pairs) if pairs else torch.zeros(0, dtype=torch.int64)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, samples: SampleSet, ks: tuple[int, ...], device: torch.device,
             batch_size: int = 1024, seed: int = 0, ndcg: bool = False) -> dict[str, float]:
    """Full ranking of every sample's target over all items (trainer.metrics)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)  # diffusion sampling noise, reproducible
    items = model.encode_items()  # (N+1, D)
    acc = RankingAccumulator(ks, ndcg=ndcg)
    for start in range(0, len(samples), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(samples)))
        b = samples.batch(idx, device)
        e_u = model.encode_users(b["hist"], b["hist_ts"], now_ts=b["target_ts"], generator=gen)  # (B, D)
        ex = samples.exclusions(idx)
        rows, cols = (ex[0].to(device), ex[1].to(device)) if ex is not None else (None, None)
        acc.add(ranks_from_scores(e_u @ items.T, b["target"], rows, cols).cpu())
    model.train(was_training)
    return acc.result()


def train(cfg: OfflineConfig, split: Split | None = None, catalog: Catalog | None = None,
          out: str | Path | None = None, dataset_name: str | None = None) -> dict[str, Any]:
    """Train one run; returns the result dict (also stored in the checkpoint's ``extra["metrics"]``)."""
    cfg = cfg.resolved()
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    if split is None or catalog is None:
        inter, catalog = load_data(cfg)
        stats = dataset_stats(inter, catalog)
        log.info("dataset %s: %s", cfg.dataset, stats)
        kw = {"val_frac": cfg.val_frac} if cfg.protocol.upper() == "P" else {"max_train_per_user": cfg.l_train_per_user}
        split = build_split(cfg.protocol, user_sequences(inter, catalog), seed=cfg.seed, **kw)
    else:
        stats = {"dataset": dataset_name or cfg.dataset}
    train_set = _subsample(split.train, cfg.max_train_samples, cfg.seed).to(device)  # whole set on the device once
    val_set = _subsample(split.val, cfg.max_eval_samples, cfg.seed)
    test_set = _subsample(split.test, cfg.max_eval_samples, cfg.seed)
    ks = cutoffs_for(cfg.dataset)
    ndcg = split.protocol == "L"
    if ndcg:
        ks = tuple(sorted(set(ks) | {10}))

    torch.manual_seed(cfg.seed)
    mcfg = model_config(cfg, catalog)
    model = modelapi.build_model(mcfg, torch.from_numpy(catalog.tags)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s on %s/%s seed %d: %d params, %d train / %d val / %d test samples, device %s", cfg.arch, cfg.dataset,
             split.protocol, cfg.seed, n_params, len(train_set), len(val_set), len(test_set), device)

    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_epoch, best_state, bad = -math.inf, -1, None, 0
    history: list[dict[str, Any]] = []
    for epoch in range(cfg.max_epochs):
        te = time.time()
        model.train()
        perm = torch.randperm(len(train_set), generator=gen).to(device)
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(range(0, len(perm), cfg.batch_size), desc=f"epoch {epoch}", unit="batch", leave=False,
                   disable=None, mininterval=2.0)
        for start in bar:
            b = train_set.batch(perm[start:start + cfg.batch_size], device)
            loss, m = model(b)
            if not math.isfinite(m.get("loss", 0.0)):  # the model already returns host floats: no extra sync
                raise FloatingPointError(f"non-finite loss at epoch {epoch} step {steps}: {m}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_per_parameter(model, cfg.clip_norm)
            opt.step()
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            steps += 1
            if steps % 20 == 0:
                bar.set_postfix(loss=f"{sums.get('loss', 0) / steps:.4f}")
        train_s = time.time() - te
        val = evaluate(model, val_set, ks, device, cfg.eval_batch_size, seed=cfg.seed, ndcg=ndcg)
        row = {"epoch": epoch, **{f"train_{k}": v / max(1, steps) for k, v in sums.items()},
               **{f"val_{k}": v for k, v in val.items()}, "train_s": train_s, "epoch_s": time.time() - te,
               "samples_per_s": len(train_set) / max(train_s, 1e-9)}
        history.append(row)
        score = val[cfg.select_metric]
        log.info("epoch %d: loss %.4f, val %s %.4f (best %.4f), %.0f samples/s, %.1fs", epoch,
                 row.get("train_loss", float("nan")), cfg.select_metric, score, max(best, score),
                 row["samples_per_s"], row["epoch_s"])
        if score > best:
            best, best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if cfg.patience is not None and bad >= cfg.patience:
                log.info("early stop: %d epochs without improvement", bad)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    val_best = {k.removeprefix("val_"): v for k, v in history[best_epoch].items() if k.startswith("val_")}
    if device.type == "cuda":
        torch.cuda.synchronize()
    ti = time.time()
    test = evaluate(model, test_set, ks, device, cfg.eval_batch_size, seed=cfg.seed + 1, ndcg=ndcg)  # once
    if device.type == "cuda":
        torch.cuda.synchronize()
    infer_ms = (time.time() - ti) * 1000 / max(1, len(test_set))  # batched full-ranking eval, per user
    result = {"arch": cfg.arch, "dataset": cfg.dataset, "protocol": split.protocol, "seed": cfg.seed,
              "best_epoch": best_epoch, "epochs_run": len(history), "val": val_best, "test": test,
              "test_infer_ms_per_user": infer_ms,
              "history": history, "wall_s": time.time() - t0, "device": str(device), "params": n_params,
              "split": split.info, "stats": stats, "config": asdict(cfg), "model_config": mcfg.to_dict()}
    if cfg.probe_next:  # after the test figures (and their timing), with the same noise seed
        result["probe"] = probe.probe_next(model, test_set, ks, device, cfg.eval_batch_size, seed=cfg.seed + 1)
        log.info("x̂ probe: %s", {v: round(result["probe"][v][f"recall@{ks[-1]}"], 4) for v in probe.VARIANTS})
    log.info("%s %s/%s seed %d: best epoch %d, test %s (%.0fs)", cfg.arch, cfg.dataset, split.protocol, cfg.seed,
             best_epoch, {k: round(v, 4) for k, v in test.items()}, result["wall_s"])
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        modelapi.save_checkpoint(out, model, catalog=catalog.to_dict(), metrics=result, dataset=cfg.dataset,
                                 protocol=split.protocol)
        log.info("checkpoint -> %s", out)
    return result


def eval_checkpoint(path: str | Path, protocol: str = "P", seed: int | None = None, device: str = "auto",
                    split_on: str = "test", max_eval_samples: int | None = None,
                    probe_next: bool = False) -> dict[str, Any]:
    """Re-evaluate a saved checkpoint on a protocol's split, rebuilt from the data set named in the checkpoint.

    The checkpoint's catalogue maps the data set's raw ids, so the same split is rebuilt with the same seed."""
    dev = pick_device(device)
    model, extra = modelapi.load_checkpoint(path, map_location="cpu")
    model = model.to(dev)
    if probe_next and not probe.has_diffusion(model):
        raise ValueError(f"--probe-next needs a diffusion arch checkpoint, {path} holds {model.cfg.arch!r}")
    catalog = Catalog.from_dict(extra["catalog"])
    meta = extra.get("metrics", {}) or {}
    dataset = extra.get("dataset") or meta.get("dataset", "ml-1m")
    seed = seed if seed is not None else int(meta.get("seed", 0))
    ocfg = OfflineConfig(dataset=dataset, protocol=protocol, seed=seed,
                         until_ms=(meta.get("config") or {}).get("until_ms"))
    inter, _ = load_data(ocfg)
    keep = np.fromiter((i in catalog for i in inter.item), dtype=bool, count=len(inter))
    inter = Interactions(inter.name, inter.user[keep], inter.item[keep], inter.ts_ms[keep])
    split = build_split(protocol, user_sequences(inter, catalog), seed=seed)
    ks = cutoffs_for(dataset)
    ndcg = split.protocol == "L"
    if ndcg:
        ks = tuple(sorted(set(ks) | {10}))
    samples = _subsample(getattr(split, split_on), max_eval_samples, seed)
    res = evaluate(model, samples, ks, dev, seed=seed + 1, ndcg=ndcg)
    out = {"checkpoint": str(path), "dataset": dataset, "protocol": split.protocol, "split": split_on,
           "seed": seed, "metrics": res}
    if probe_next:
        out["probe"] = probe.probe_next(model, samples, ks, dev, seed=seed + 1)
    return out
