"""What does the diffusion module's x̂_{n+1} contribute? A probe of a trained T2Diff on one sample set.

The Table 2 ablations (mixed attention only, no drift preparation) compare *different trained models*; with
every model tuned, T2Diff's gain over them is within seed noise (benchmarks/offline.md). This probe asks the
trained model itself, with everything but x̂_{n+1} held fixed (same weights, same histories, same sampling
noise), what its generated next-item vector is worth:

* tower recall with x̂_{n+1} replaced by
  - ``sampled``: the reverse process, as at inference (equals the harness's test figures for the same seed);
  - ``zero_drift``: x_n, i.e. ẑ0[-1] = 0 (Eq. 18 with no drift: "the next item is like the last");
  - ``shuffled``: another user's sampled x̂ (a permutation within the batch): does the tower use x̂ per user?
  - ``oracle``: x_{n+1} itself, the true target's input vector: the ceiling a perfect diffusion would reach
    (optimistic: at training the official x̂ is built from a noised copy of that drift, so the tower trusts it);
* x̂ as a next-item guess on its own, in the input space the diffusion works in: ``guess_recall@K`` ranks every
  item by −||x̂ − x_j|| (x_n's own item left out, for both guesses), against x_n as the guess
  (``guess_recall@K_last``); ``drift_cos`` = cos(x̂ − x_n, x_{n+1} − x_n), the direction of the generated drift
  against the true one (0 = no information); ``dist_ratio`` = mean ||x̂ − x_{n+1}|| / mean ||x_n − x_{n+1}||
  (< 1: x̂ is closer to the target than the last item is).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from trainer.metrics import RankingAccumulator, ranks_from_scores
from trainer.protocols import SampleSet

VARIANTS = ("sampled", "zero_drift", "shuffled", "oracle")


def _rates(acc: RankingAccumulator) -> dict[str, float]:
    return {k: v for k, v in acc.result().items() if k != "n"}


def has_diffusion(model: torch.nn.Module) -> bool:
    return getattr(model, "diffusion", None) is not None


@torch.no_grad()
def probe_next(model: torch.nn.Module, samples: SampleSet, ks: tuple[int, ...], device: torch.device,
               batch_size: int = 1024, seed: int = 0) -> dict[str, Any]:
    """The probe (module docstring) over ``samples``. ``seed`` seeds the reverse process's noise exactly as
    :func:`trainer.offline.evaluate` does (same batches, same order), so ``sampled`` equals its figures."""
    if not has_diffusion(model):
        raise ValueError(f"the x̂_{{n+1}} probe needs a diffusion arch, got {model.cfg.arch!r}")
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    perm_gen = torch.Generator().manual_seed(seed)
    items = model.encode_items()  # (N+1, U)
    n_items = items.shape[0]
    table = model.input_vectors(torch.arange(n_items, device=device), table=True)  # (N+1, D): the diffusion's space
    tower = {v: RankingAccumulator(ks) for v in VARIANTS}
    guess = {g: RankingAccumulator(ks) for g in ("x_hat", "last")}
    cos_sum, d_hat, d_last, n = 0.0, 0.0, 0.0, 0
    for start in range(0, len(samples), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(samples)))
        b = samples.batch(idx, device)
        hist, hist_ts = model._canon(b["hist"], b["hist_ts"])
        target = b["target"]
        mask = hist > 0
        x = model.input_vectors(hist, table=True)  # (B, n, D)
        x_n, x_tgt = x[:, -1], table[target]  # (B, D): histories are left-padded, so the last slot is real
        x_hat = model.diffusion.sample(x, mask, None, gen)  # (B, D), the same draw as encode_users
        perm = torch.randperm(len(idx), generator=perm_gen).to(device)
        ex = samples.exclusions(idx)  # protocol L's seen-item filter, as evaluate applies it
        ex_rows, ex_cols = (ex[0].to(device), ex[1].to(device)) if ex is not None else (None, None)
        for v, nxt in (("sampled", x_hat), ("zero_drift", x_n), ("shuffled", x_hat[perm]), ("oracle", x_tgt)):
            e_u = model._user(x, mask, nxt, hist_ts, b["target_ts"])  # (B, U)
            tower[v].add(ranks_from_scores(e_u @ items.T, target, ex_rows, ex_cols).cpu())
        last_item = hist[:, -1]  # left out of both guesses' rankings (x_n's own item is trivially nearest)
        rows = torch.arange(len(idx), device=device)
        for g, q in (("x_hat", x_hat), ("last", x_n)):
            dist = torch.cdist(q.float(), table.float())  # (B, N+1)
            guess[g].add(ranks_from_scores(-dist, target, rows, last_item).cpu())
        cos_sum += float(F.cosine_similarity(x_hat - x_n, x_tgt - x_n, dim=-1, eps=1e-12).sum())
        d_hat += float((x_hat - x_tgt).norm(dim=-1).sum())
        d_last += float((x_n - x_tgt).norm(dim=-1).sum())
        n += len(idx)
    model.train(was_training)
    out: dict[str, Any] = {v: _rates(acc) for v, acc in tower.items()}
    out["guess"] = {**_rates(guess["x_hat"]), **{f"{k}_last": val for k, val in _rates(guess["last"]).items()}}
    out["drift_cos"] = cos_sum / max(n, 1)
    out["dist_ratio"] = d_hat / d_last if d_last > 0 else math.nan
    out["n"] = n
    return out

