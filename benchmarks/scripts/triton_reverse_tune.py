"""GPU check of the one-kernel reverse process (t2diff/model/triton_reverse.py) before the encode bench.

For one batch size and T = 50 / 10 it prints how far the Triton loop and the PyTorch loop (both float32) are
from the same loop run in float64 on the same noise (the reverse chain amplifies rounding, so "equal to
the PyTorch loop" is only meaningful against a more exact reference), the autotuner's timing of every (sequences per program, warps) config
(TRITON_PRINT_AUTOTUNING=1) and its pick, and the kernel's time (float32 scratch, and float16 scratch) beside
the PyTorch loop (eager U-Net, CUDA-graphed) measured in the same run.
``TRITON_PRINT_AUTOTUNING=1 python benchmarks/scripts/triton_reverse_tune.py [--batch 4096] [--steps 50,10]``
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_profile import cuda_ms  # noqa: E402
from t2diff.model.bench import random_histories, random_model  # noqa: E402
from t2diff.model.triton_reverse import TritonReverse, _reverse_tuned  # noqa: E402


def torch_loop(unet, x, m, noise, ts, c0, ct, sg):
    """DriftDiffusion.sample's loop, given its noise draw: z_T = m·ε_0, z <- c0·m·ẑ0 + ct·z + σ·m·ε_i."""
    m = m.unsqueeze(-1)
    noise = noise * m
    z, n = noise[0], len(ts)
    for i in range(n):
        z0 = unet(z, x, ts[i])
        z = z0 if i == n - 1 else sg[i] * noise[i + 1] + c0[i] * m * z0 + ct[i] * z
    return z


def graphed(fn):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", default="50,10")
    a = ap.parse_args(argv)
    m = random_model("t2diff", "cuda")
    d = m.diffusion
    hist, _, _ = random_histories(a.batch, m.cfg.seq_len, "cuda")
    x, mask = m.items(hist), hist > 0
    fast = TritonReverse(d.unet)
    fast16 = TritonReverse(d.unet, scratch_dtype=torch.float16)  # float16 activations between layers
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, batch {a.batch}", flush=True)
    unet64 = copy.deepcopy(d.unet).double()
    for n in [int(s) for s in a.steps.split(",")]:
        seen = {}

        def capture(*args):  # the Triton path, keeping its inputs (the noise draw) for the references
            seen["args"] = args
            return fast(*args)

        d.set_reverse(capture)
        t = time.perf_counter()
        d.sample(x, mask, n)
        torch.cuda.synchronize()
        print(f"T={n}: first Triton call {time.perf_counter() - t:.1f} s (compile + autotune)", flush=True)
        args = seen["args"]
        z_tri = fast(*args)[:, -1]  # position n: the drift that x̂_{n+1} = x_n + ẑ0[-1] uses
        t = time.perf_counter()
        z_16 = fast16(*args)[:, -1]
        torch.cuda.synchronize()
        print(f"T={n}: first float16-scratch call {time.perf_counter() - t:.1f} s (compile + autotune)", flush=True)
        z_32 = torch_loop(d.unet, *args)[:, -1]
        z_64 = torch_loop(unet64, *[v.double() if v.is_floating_point() else v for v in args])[:, -1]
        for name, z in (("triton fp32", z_tri), ("triton fp16 scratch", z_16), ("torch fp32", z_32)):
            e = (z.double() - z_64).abs()
            print(f"T={n}: |{name} - torch fp64| at the last position: max {e.max().item():.2e}, "
                  f"mean {e.mean().item():.2e} (fp64 scale {z_64.abs().mean().item():.2f})")
        print(f"T={n}: |triton - torch fp32| max {(z_tri - z_32).abs().max().item():.2e}")
        print(f"T={n}: autotuner picked {[str(c) for c in _reverse_tuned.cache.values()]}")
        for name, fn in (("torch loop (eager U-Net)", None), ("triton kernel", fast),
                         ("triton kernel, fp16 scratch", fast16)):
            d.set_reverse(fn)
            ms = cuda_ms(graphed(lambda: d.sample(x, mask, n)))
            print(f"T={n}: {name}, CUDA graph: {ms:.3f} ms per batch ({a.batch / ms * 1e3:,.0f} seq/s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
