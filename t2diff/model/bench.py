"""``t2diff bench encode``: user-tower throughput (users/s) and latency of the full encode_users path.

A random-init model of the ML-1M catalogue size (the speed does not depend on the weights) encodes random
left-padded histories with timestamps: item lookups + T reverse diffusion steps + mixed attention.
Modes: ``eager`` (the default code path), and on CUDA ``graph`` (one CUDA graph per batch size),
``compile+graph`` (torch.compile'd U-Net inside the graph) and ``compile+graph+bf16`` (the same under bf16
autocast; LayerNorm/softmax stay fp32), ``triton+graph`` (the whole reverse loop as one Triton kernel,
t2diff/model/triton_reverse.py), ``triton+compile+graph`` (that, plus the torch.compile'd mixed-attention
tower) and ``triton+fused+graph`` (everything around the kernel -- item lookups, masks, padding, the user tower --
in one torch.compile); on CPU ``aot`` (the whole tower compiled by AOTInductor and run without the GIL, what
serving's ``encoder_compile`` uses: t2diff/model/aot.py). The eager ``mixed_attention`` arch (no diffusion)
is timed in the same run as the baseline.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from t2diff.model import ModelConfig, build_model

log = logging.getLogger(__name__)

ML1M_ITEMS, ML1M_TAGS, ML1M_MAX_TAGS = 3706, 18, 6


def random_model(arch: str, device: str, seed: int = 0, **kw: Any) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    tags = torch.randint(0, ML1M_TAGS + 1, (ML1M_ITEMS + 1, ML1M_MAX_TAGS), generator=g)
    tags[0] = 0
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, num_items=ML1M_ITEMS, num_tags=ML1M_TAGS, max_tags=ML1M_MAX_TAGS, **kw)
    return build_model(cfg, tags).to(device).eval()


def random_histories(B: int, L: int, device: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(1, ML1M_ITEMS + 1, (B, L), generator=g)
    lens = torch.randint(1, L + 1, (B,), generator=g)
    hist = hist.masked_fill(torch.arange(L)[None, :] < (L - lens)[:, None], 0)  # left padding
    ts = (1_000_000_000_000 + torch.arange(L) * 60_000).repeat(B, 1).masked_fill(hist == 0, 0)
    now = ts.amax(1) + 3_600_000
    return hist.to(device), ts.to(device), now.to(device)


def _time(fn, device: str, min_time: float, min_reps: int) -> tuple[float, int]:
    """Median-free simple timing: warm once, then repeat until min_time and min_reps; seconds per call."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        if reps >= min_reps:
            sync()
            el = time.perf_counter() - t0
            if el >= min_time:
                return el / reps, reps


def run_encode_bench(device: str, batch_sizes: list[int], steps: list[int], modes: list[str],
                     min_time: float = 0.5, min_reps: int = 3) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    model = random_model("t2diff", device)
    base = random_model("mixed_attention", device)
    L = model.cfg.seq_len
    for B in batch_sizes:
        hist, ts, now = random_histories(B, L, device)
        check: dict[tuple[str, int | None], float] = {}
        errors: dict[tuple[str, int | None], str] = {}
        cases: list[tuple[str, str, int | None, Any]] = [
            ("mixed_attention (no diffusion)", "eager", 0, lambda: base.encode_users(hist, ts, now))]
        for n in steps:
            for mode in modes:
                if mode == "eager":
                    fn = (lambda n=n: model.encode_users(hist, ts, now, num_steps=n))
                else:
                    try:
                        m = random_model("t2diff", device)  # fresh copy, same weights (the seed)
                        if mode == "aot":
                            from t2diff.model.aot import compile_in_child

                            m.set_compiled_tower(compile_in_child(m, L, n))  # once per step count (dynamic batch)
                            fn = (lambda m=m, n=n: m.encode_users(hist, ts, now, num_steps=n))
                            check[(mode, n)] = _aot_agreement(m, model, hist, ts, now, n)
                            cases.append(("t2diff", mode, n, fn))
                            continue
                        from t2diff.model.graphed import GraphedEncoder

                        triton = mode.startswith("triton")
                        enc = GraphedEncoder(m, B, num_steps=n, compile=mode.startswith("compile"),
                                             autocast_dtype=torch.bfloat16 if mode.endswith("bf16") else None,
                                             reverse="triton" if triton else None,
                                             compile_user=mode == "triton+compile+graph",
                                             compile_encode=mode == "triton+fused+graph")
                        fn = (lambda enc=enc: enc(hist, ts, now))
                        check[(mode, n)] = (_encode_agreement(enc, m, hist, ts, now, n) if "fused" in mode else
                                            _reverse_agreement(m, hist, n) if triton else
                                            _unet_agreement(m, B, device, mode.endswith("bf16")))
                    except Exception as e:  # keep the other cases' figures; report the failure in the table
                        log.exception("%s steps=%s B=%d failed", mode, n, B)
                        errors[(mode, n)] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                        continue
                cases.append(("t2diff", mode, n, fn))
        for (mode, n), err in errors.items():
            rows.append({"arch": "t2diff", "mode": mode, "steps": n, "batch": B, "error": err})
        for arch, mode, n, fn in cases:
            t0 = time.perf_counter()
            sec, reps = _time(fn, device, min_time, min_reps)
            row = {"arch": arch, "mode": mode, "steps": n, "batch": B, "ms_per_batch": sec * 1e3,
                   "us_per_user": sec * 1e6 / B, "users_per_s": B / sec, "reps": reps,
                   "unet_max_abs_diff_vs_eager": check.get((mode, n))}
            rows.append(row)
            log.info("%-30s %-14s steps=%-3s B=%-5d %9.3f ms/batch %12.0f users/s (%.1fs)", arch, mode, n, B,
                     row["ms_per_batch"], row["users_per_s"], time.perf_counter() - t0)
    return rows


@torch.no_grad()
def _unet_agreement(m: torch.nn.Module, B: int, device: str, bf16: bool) -> float:
    """Max |denoiser - eager U-Net| on random inputs: shows what compile / bf16 change numerically."""
    d = m.diffusion
    L = d.unet.padded_length(m.cfg.seq_len)
    g = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(B, L, m.cfg.edim, device=device, generator=g)
    x = torch.randn(B, L, m.cfg.edim, device=device, generator=g)
    t = torch.tensor(7, device=device)
    ref = d.unet(z, x, t)
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
        out = d.denoiser(z, x, t)
    return float((out.float() - ref).abs().max())


@torch.no_grad()
def _reverse_agreement(m: torch.nn.Module, hist: torch.Tensor, n: int) -> float:
    """Max |x̂_{n+1} from the Triton loop - from the PyTorch loop| for the same noise (same generator seed)."""
    d = m.diffusion
    x, mask = m.items(hist), hist > 0
    fast = d._reverse
    outs = []
    for fn in (fast, None):
        d.set_reverse(fn)
        g = torch.Generator(device=hist.device).manual_seed(0)
        outs.append(d.sample(x, mask, n, generator=g))
    d.set_reverse(fast)
    return float((outs[0] - outs[1]).abs().max())


@torch.no_grad()
def _encode_agreement(enc: Any, m: torch.nn.Module, hist: torch.Tensor, ts: torch.Tensor, now: torch.Tensor,
                      n: int) -> float:
    """Max |e_u from the graphed, compiled encode - eager encode_users| after the same CUDA seed (both draw the
    noise with aten's randn, so this shows what compiling changed, not the noise)."""
    torch.cuda.manual_seed(0)
    fast = enc(hist, ts, now)
    torch.cuda.manual_seed(0)
    ref = m.encode_users(hist, ts, now, num_steps=n)
    return float((fast - ref).abs().max())


@torch.no_grad()
def _aot_agreement(m: torch.nn.Module, ref: torch.nn.Module, hist: torch.Tensor, ts: torch.Tensor, now: torch.Tensor,
                   n: int) -> float:
    """Max |e_u from the compiled tower - eager encode_users of the same weights| for the same noise."""
    fast = m.encode_users(hist, ts, now, num_steps=n, generator=torch.Generator().manual_seed(0))
    slow = ref.encode_users(hist, ts, now, num_steps=n, generator=torch.Generator().manual_seed(0))
    return float((fast - slow).abs().max())


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def write_results(rows: list[dict[str, Any]], out_dir: Path, meta: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = meta["device_kind"]
    (out_dir / f"encode_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"Command: `{meta['command']}`", "",
             f"Device: {meta['device']}; torch {meta['torch']}; wall {meta['wall_s']:.1f} s; "
             f"1-min load average at start/end {meta.get('loadavg_1min_start_end')} on {meta.get('cpu_count')} cores", "",
             "| arch | mode | steps | batch | ms/batch | µs/user | users/s | max abs diff vs eager (U-Net; aot, triton: output) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['arch']} | {r['mode']} | {r['steps']} | {r['batch']} | FAILED: {r['error']} | | | |")
            continue
        diff = r["unet_max_abs_diff_vs_eager"]
        lines.append(f"| {r['arch']} | {r['mode']} | {r['steps']} | {r['batch']} | {r['ms_per_batch']:.3f} | "
                     f"{r['us_per_user']:.2f} | {r['users_per_s']:,.0f} | {'' if diff is None else f'{diff:.1e}'} |")
    md = out_dir / f"encode_{tag}.md"
    md.write_text("\n".join(lines) + "\n")
    _plot(rows, out_dir / f"encode_{tag}.png", meta["device"])
    return md


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = sorted({(r["arch"], r["mode"], r["steps"]) for r in rows}, key=str)
    for k in keys:
        pts = sorted((r["batch"], r["users_per_s"]) for r in rows
                     if (r["arch"], r["mode"], r["steps"]) == k and "error" not in r)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                label=f"{k[0]} {k[1]}" + (f" T={k[2]}" if k[2] else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.axhline(1e6, color="grey", ls=":", lw=1)
    ax.set_xlabel("batch size")
    ax.set_ylabel("users / s")
    ax.set_title(f"encode_users throughput — {title}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
