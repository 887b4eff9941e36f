"""GPU experiment: how should the U-Net's tiny-channel convs be written for torch.compile on the H100?

The compiled reverse process (benchmarks/encode.md) spends half its kernel time in cuBLAS GEMMs with 4-32 output
columns over ~230k rows (B·L at batch 4096) and the other half in elementwise kernels around them: each conv
level writes its 3-tap unfold (3x its input) and its GEMM output to HBM and reads them back. Variants timed here
(same random model, same histories, same CUDA noise seed, batch 4096, compile + CUDA graph):

* ``gemm``: the shipped code (gather unfold -> nn.Linear -> silu -> LayerNorm).
* ``bsum``: every conv tap product and 1x1 projection written as broadcast-multiply + sum over the input
  channels, so Inductor sees no GEMM and can fuse unfold, product, bias, silu and the LayerNorm statistics into
  reduction kernels that read each activation once.
* ``decompose``: the shipped code with Inductor's own ``decompose_mm_pass`` (it rewrites memory-bound mm with
  small dimensions into the same broadcast form).

Prints ms per encode, users/s, and max |user vector - gemm's| (same noise) for each.
``python benchmarks/scripts/gpu_smallmm.py [--steps 50,10] [--batch 4096]``
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from t2diff.model import unet as unet_mod
from t2diff.model.bench import random_histories, random_model
from t2diff.model.graphed import GraphedEncoder


def _bsum_linear(x: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
    # (R.., K) x (N, K) -> (R.., N) as broadcast-multiply + sum over K: no GEMM for Inductor to call out to
    return (x.unsqueeze(-1) * lin.weight.t()).sum(-2) + lin.bias


def _bsum_conv_forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, C)
    return self.norm(F.silu(_bsum_linear(self.unfold(x), self.proj)))


def _bsum_unet_forward(self, z_t: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    temb = self.step_emb.index_select(0, t.reshape(-1)).unsqueeze(1)
    h = torch.cat([z_t, x], dim=-1) + self.step_weight * temb
    skips = []
    for i, blk in enumerate(self.down):
        h = blk(h)
        if i < self.levels - 1:
            skips.append(h)
            Bh, Lh, Ch = h.shape
            h = h.view(Bh, Lh // 2, 2, Ch).amax(2)
    for proj, blk in zip(self.up_proj, self.up):
        h = F.silu(_bsum_linear(h, proj)).repeat_interleave(2, dim=1)
        h = blk(torch.cat([h, skips.pop()], dim=-1))
    return h if isinstance(self.out, torch.nn.Identity) else _bsum_linear(h, self.out)


def run(variant: str, B: int, steps: int, hist, ts, now, min_time: float = 0.5):
    import torch._dynamo
    import torch._inductor.config as icfg

    torch._dynamo.reset()
    saved = (unet_mod.Conv3Block.forward, unet_mod.UNet1D.forward, dict(icfg.post_grad_fusion_options))
    try:
        if variant == "bsum":
            unet_mod.Conv3Block.forward = _bsum_conv_forward
            unet_mod.UNet1D.forward = _bsum_unet_forward
        elif variant == "decompose":
            icfg.post_grad_fusion_options = {"decompose_mm_pass": {}}
        m = random_model("t2diff", "cuda")
        t0 = time.perf_counter()
        enc = GraphedEncoder(m, B, num_steps=steps, compile=True)
        build_s = time.perf_counter() - t0
        torch.cuda.manual_seed(123)
        out = enc(hist, ts, now)
        torch.cuda.synchronize()
        reps, t0 = 0, time.perf_counter()
        while reps < 5 or time.perf_counter() - t0 < min_time:
            enc(hist, ts, now)
            reps += 1
        torch.cuda.synchronize()
        sec = (time.perf_counter() - t0) / reps
        return out, sec, build_s
    finally:
        unet_mod.Conv3Block.forward, unet_mod.UNet1D.forward = saved[0], saved[1]
        icfg.post_grad_fusion_options = saved[2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="50,10")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--variants", default="gemm,bsum,decompose")
    a = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    L = random_model("t2diff", "cpu").cfg.seq_len
    hist, ts, now = random_histories(a.batch, L, "cuda")
    print("| variant | steps | batch | ms/encode | users/s | max abs diff vs gemm (same noise) | build s |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(s) for s in a.steps.split(",")]:
        ref = None
        for v in a.variants.split(","):
            try:
                out, sec, build_s = run(v, a.batch, n, hist, ts, now)
            except Exception as e:  # keep the other variants' figures
                print(f"| {v} | {n} | {a.batch} | failed: {type(e).__name__}: {str(e).splitlines()[0][:100]} | | | |")
                continue
            ref = out if ref is None else ref
            diff = (out - ref).abs().max().item()
            print(f"| {v} | {n} | {a.batch} | {sec * 1e3:.3f} | {a.batch / sec:,.0f} | {diff:.1e} | {build_s:.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
