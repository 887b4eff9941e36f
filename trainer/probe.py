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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.metrics import RankingAccumulator, ranks_from_scores
from trainer.protocols import SampleSet

VARIANTS = ("sampled", "zero_drift", "shuffled", "oracle")


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
    out: dict[str, Any] = {v: {k: val for k, val in acc.result().items() if k != "n"} for v, acc in tower.items()}
    for g, acc in guess.items():
        suffix = "" if g == "x_hat" else "_last"
        out["guess"] = {**out.get("guess", {}), **{f"{k}{suffix}": val for k, val in acc.result().items() if k != "n"}}
    out["drift_cos"] = cos_sum / max(n, 1)
    out["dist_ratio"] = d_hat / d_last if d_last > 0 else math.nan
    out["n"] = n
    return out


def probe_md(results: list[dict[str, Any]]) -> list[str]:
    """Markdown: per group with probed runs, one table (mean ± std over seeds) and paired lines by seed."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        if "error" not in r and r.get("probe"):
            by.setdefault((r["spec"]["group"], r["spec"]["label"]), []).append(r)
    md: list[str] = []
    for (group, label), runs in by.items():
        runs = sorted(runs, key=lambda r: r["spec"]["seed"])
        ks = sorted({int(k.split("@")[1]) for k in runs[0]["probe"]["sampled"] if k.startswith("recall@")})
        K = ks[-1]
        R, M = f"recall@{K}", f"mrr@{K}"

        def col(get) -> str:
            a = np.asarray([get(r["probe"]) for r in runs], dtype=float)
            return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.4f}"

        md += [f"\n#### {group} / {label}: what x̂_{{n+1}} is worth to the trained model ({len(runs)} seeds, "
               f"test split, same weights and noise)\n",
               f"| x̂_{{n+1}} fed to the tower | {R} | {M} |", "|---|---|---|"]
        for v in VARIANTS:
            md.append(f"| {v} | {col(lambda p, v=v: p[v][R])} | {col(lambda p, v=v: p[v][M])} |")
        for v in ("zero_drift", "shuffled", "oracle"):
            d = np.asarray([r["probe"]["sampled"][R] - r["probe"][v][R] for r in runs])
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
            md.append(f"\nsampled − {v} on {R}, paired by seed: {d.mean():+.4f} ± {se:.4f} (standard error; "
                      f"sampled higher in {int((d > 0).sum())} of {len(d)} seeds)")
        md.append(f"\nx̂ as a next-item guess by distance in the input space: guess {R} "
                  f"{col(lambda p: p['guess'][R])} (x_n as the guess: {col(lambda p: p['guess'][R + '_last'])}); "
                  f"cos(generated drift, true drift) {col(lambda p: p['drift_cos'])}; "
                  f"||x̂ − x_{{n+1}}|| / ||x_n − x_{{n+1}}|| {col(lambda p: p['dist_ratio'])}")
    return md


def plot_probe(results: list[dict[str, Any]], path: str | Path) -> bool:
    """Bar chart: the tower's main recall per x̂ variant (mean ± std over seeds), one group of bars per probed
    (group, label). Returns False (no file) when no run was probed."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if "error" not in r and r.get("probe"):
            by.setdefault(f"{r['spec']['group']}\n{r['spec']['label']}", []).append(r["probe"])
    if not by:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by), figsize=(3.2 * len(by) + 1, 3.6), squeeze=False)
    for ax, (name, probes) in zip(axes.flat, by.items()):
        R = max((k for k in probes[0]["sampled"] if k.startswith("recall@")), key=lambda k: int(k.split("@")[1]))
        vals = np.asarray([[p[v][R] for v in VARIANTS] for p in probes])  # (seeds, variants)
        sd = vals.std(0, ddof=1) if len(vals) > 1 else np.zeros(len(VARIANTS))
        ax.bar(range(len(VARIANTS)), vals.mean(0), yerr=sd, color=["C0", "C7", "C3", "C2"], capsize=3)
        ax.set_xticks(range(len(VARIANTS)), [v.replace("_", " ") for v in VARIANTS], rotation=30, fontsize=8)
        ax.set_title(f"{name} ({len(probes)} seeds)", fontsize=8)
        ax.set_ylabel(f"tower test {R}")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("x̂_{n+1} fed to the trained tower", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
