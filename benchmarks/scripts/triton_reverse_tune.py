"""GPU check of the one-kernel reverse process (t2diff/model/triton_reverse.py) before the encode bench.

For one batch size and T = 50 / 10 it prints how far the Triton loop and the PyTorch loop (both float32) are
from the same loop run in float64 on the same noise (the reverse chain amplifies rounding, so "equal to the
PyTorch loop" is only meaningful against a more exact reference), the autotuner's timing of every (sequences
per program, warps, unroll) config (TRITON_PRINT_AUTOTUNING=1) and its pick, the kernel's time per given
configuration beside the PyTorch loop (eager U-Net, CUDA-graphed) measured in the same run, and the time of the
rest of the user tower (item lookups, compiled mixed attention) at that batch.
``TRITON_PRINT_AUTOTUNING=1 python benchmarks/scripts/triton_reverse_tune.py [--batch 4096] [--steps 50,10]
[--fma-configs 'auto;4,1,1;2,1,4']``
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
import triton  # noqa: E402
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
    ap.add_argument("--fma-configs", default="auto", help="';'-list of 'auto' or BS,warps,unroll (rank-1 kernel)")
    a = ap.parse_args(argv)
    m = random_model("t2diff", "cuda")
    d = m.diffusion
    hist, _, _ = random_histories(a.batch, m.cfg.seq_len, "cuda")
    x, mask = m.items(hist), hist > 0
    kernels = {}  # name -> TritonReverse, one per configuration
    for cfg in a.fma_configs.split(";"):  # "auto" = autotuned, else "BS,warps,unroll"
        kw = {} if cfg == "auto" else dict(zip(("block_seqs", "num_warps", "unroll"), map(int, cfg.split(","))))
        kernels[f"triton fp32 {cfg}"] = TritonReverse(d.unet, **kw)
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"batch {a.batch}", flush=True)
    unet64 = copy.deepcopy(d.unet).double()
    for n in [int(s) for s in a.steps.split(",")]:
        seen = {}

        def capture(*args):  # keeps the reverse loop's inputs (incl. the noise draw) for every path below
            seen["args"] = args
            return torch.zeros_like(args[0])

        d.set_reverse(capture)
        d.sample(x, mask, n)
        args = seen["args"]
        z_32 = torch_loop(d.unet, *args)[:, -1]  # position n: the drift that x̂_{n+1} = x_n + ẑ0[-1] uses
        z_64 = torch_loop(unet64, *[v.double() if v.is_floating_point() else v for v in args])[:, -1]
        outs = {"torch fp32": z_32}
        for name, fast in kernels.items():
            t = time.perf_counter()
            outs[name] = fast(*args)[:, -1]
            torch.cuda.synchronize()
            print(f"T={n}: {name}: first call {time.perf_counter() - t:.1f} s (compile + autotune)", flush=True)
        for name, z in outs.items():
            e = (z.double() - z_64).abs()
            print(f"T={n}: |{name} - torch fp64| at the last position: max {e.max().item():.2e}, "
                  f"mean {e.mean().item():.2e} (fp64 scale {z_64.abs().mean().item():.2f})")
        print(f"T={n}: autotuner picked {[str(c) for c in _reverse_tuned.cache.values()]}")
        for name, fn in (("torch loop (eager U-Net)", None), *kernels.items()):
            d.set_reverse(fn)
            ms = cuda_ms(graphed(lambda: d.sample(x, mask, n)))
            print(f"T={n}: {name}, CUDA graph: {ms:.3f} ms per batch ({a.batch / ms * 1e3:,.0f} seq/s)", flush=True)
    # the rest of the user tower at this batch (item lookups, mixed attention), for the whole-tower budget
    hist_ts = torch.zeros_like(hist)
    now = torch.zeros(a.batch, dtype=torch.long, device="cuda")
    x_next = x[:, -1].clone()
    user = torch.compile(m._user, dynamic=False)
    L = d.unet.padded_length(m.cfg.seq_len)
    for name, fn in (("item lookups per position", lambda: m.items(hist)),
                     ("item lookups through the catalogue table (encode_users' path)", lambda: m.input_vectors(hist, table=True)),
                     ("noise draw (T=50)", lambda: torch.randn((51, a.batch, L, x.shape[-1]), device="cuda")),
                     ("mixed attention (compiled)", lambda: user(x, mask, x_next, hist_ts, now))):
        ms = cuda_ms(graphed(fn))
        print(f"rest of the tower: {name}, CUDA graph: {ms:.3f} ms per batch", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
