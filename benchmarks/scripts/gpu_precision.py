"""Does TF32 touch offline training on this GPU? Kernel names of one training step, and bitwise trajectory checks.

``python benchmarks/scripts/gpu_precision.py [--steps 30] [--archs t2diff sasrec ...]`` on a CUDA machine.

Why: the H100 scored the two U-Net archs lower than the CPU on the same seeds (benchmarks/offline.md, sixteenth
session), and TF32 convolutions (cuDNN's default) were the guess. This script tests the guess directly:

1. the CUDA kernels one training step of each arch launches (torch.profiler), so a cuDNN convolution or a TF32
   GEMM would show by name;
2. per arch, N training steps from one initialisation on fixed batches, in deterministic mode, under
   - ``default``: torch's settings as shipped,
   - ``default again``: the same, a second time (the run-to-run floor: 0 if the step is deterministic),
   - ``ieee``: every float32 cuBLAS / cuDNN precision set to full fp32,
   - ``tf32``: every one set to TF32 (the positive control: shows the check can see TF32 at all);
   printed as the max |Δ| of every parameter against ``default``. ``ieee`` = 0 means TF32 played no part.
No project dependency beyond torch and the model package; prints only what it measured.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; before CUDA starts
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from t2diff.model.bench import ML1M_ITEMS, random_histories, random_model  # noqa: E402

def _knobs() -> dict[str, object]:
    """The float32 precision objects this torch has: the per-backend API (torch >= 2.9) or the legacy flags."""
    if hasattr(torch.backends.cudnn, "conv"):
        return {"matmul": torch.backends.cuda.matmul, "conv": torch.backends.cudnn.conv,
                "rnn": torch.backends.cudnn.rnn}
    return {}


def get_precision() -> dict[str, str]:
    k = _knobs()
    if k:
        return {name: str(obj.fp32_precision) for name, obj in k.items()}
    return {"matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
            "cudnn": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"}


def set_precision(mode: str | dict[str, str]) -> None:
    """``mode``: "ieee" or "tf32" for every backend, or a dict from get_precision() to restore."""
    k = _knobs()
    want = mode if isinstance(mode, dict) else {n: mode for n in (k or ("matmul", "cudnn"))}
    if k:
        for name, obj in k.items():
            obj.fp32_precision = want[name]
    else:
        torch.backends.cuda.matmul.allow_tf32 = want["matmul"] == "tf32"
        torch.backends.cudnn.allow_tf32 = want["cudnn"] == "tf32"


def batches(n: int, B: int, L: int, device: str) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(n):
        hist, ts, now = random_histories(B, L, device, seed=100 + i)
        g = torch.Generator().manual_seed(1000 + i)
        out.append({"hist": hist, "hist_ts": ts, "target": torch.randint(1, ML1M_ITEMS + 1, (B,), generator=g).to(device),
                    "target_ts": now})
    return out


def train_steps(arch: str, data: list[dict[str, torch.Tensor]], device: str, lr: float) -> torch.Tensor:
    """Parameters (flat) after one Adam step per batch, from seed 0's initialisation and seed 1's noise."""
    model = random_model(arch, device, seed=0, dropout=0.0).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    torch.manual_seed(1)  # diffusion noise and timesteps come from the global generator
    for b in data:
        loss, _ = model(b, host_metrics=False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()


def kernels(arch: str, b: dict[str, torch.Tensor], device: str) -> Counter:
    model = random_model(arch, device, seed=0, dropout=0.0).train()
    loss, _ = model(b, host_metrics=False)  # warm-up: lazy inits and cuBLAS handles outside the trace
    loss.backward()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        loss, _ = model(b, host_metrics=False)
        loss.backward()
        torch.cuda.synchronize()
    return Counter(e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["t2diff", "t2diff_no_dp", "mixed_attention", "sasrec", "gru4rec"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--seq-len", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device", file=sys.stderr)
        return 2
    shipped = get_precision()
    name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {name}; float32 precision as shipped: {shipped}")
    torch.use_deterministic_algorithms(True, warn_only=True)
    data = batches(a.steps, a.batch_size, a.seq_len, a.device)
    if a.device.startswith("cuda"):
        print("\n## Matrix, convolution and recurrent kernels of one training step (forward + backward), as shipped")
        for arch in a.archs:
            k = kernels(arch, data[0], a.device)
            heavy = {n: c for n, c in k.items() if any(s in n.lower() for s in
                                                         ("gemm", "conv", "rnn", "gru", "cudnn", "xmma", "cutlass",
                                                          "tf32", "sgemm", "tensorop", "attention", "fmha"))}
            tf32 = sum(c for n, c in heavy.items() if "tf32" in n.lower() or "s1688" in n or "tensorop_s" in n)
            print(f"\n### {arch}: {sum(k.values())} kernel launches, {len(heavy)} matrix/conv/rnn kernel names, "
                  f"{tf32} launches whose name says TF32")
            for n, c in sorted(heavy.items(), key=lambda kv: -kv[1]):
                print(f"  {c:4d}  {n[:150]}")
    print(f"\n## {a.steps} Adam steps (batch {a.batch_size}, lr {a.lr}), deterministic mode: max |Δ parameter| "
          "against the shipped settings")
    print("| arch | default again | ieee (all fp32) | tf32 (all TF32) | max |parameter| |")
    print("|---|---|---|---|---|")
    for arch in a.archs:
        ref = train_steps(arch, data, a.device, a.lr)
        again = train_steps(arch, data, a.device, a.lr)
        out = {}
        for mode in ("ieee", "tf32"):
            set_precision(mode)
            try:
                out[mode] = train_steps(arch, data, a.device, a.lr)
            finally:
                set_precision(shipped)
        d = {m: float((v - ref).abs().max()) for m, v in (("again", again), *out.items())}
        print(f"| {arch} | {d['again']:.3g} | {d['ieee']:.3g} | {d['tf32']:.3g} | {float(ref.abs().max()):.3g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
