"""Where does GPU time go? Profiles the T2Diff encode (reverse diffusion) and one stream-trainer step.

Run on a CUDA machine: ``python benchmarks/scripts/gpu_profile.py [--what encode,train]``. Prints
torch.profiler tables (top CUDA kernels) and CUDA-event timings; no project dependency beyond torch.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from t2diff.model import ModelConfig, build_model  # noqa: E402
from t2diff.model.bench import random_histories, random_model  # noqa: E402


def cuda_ms(fn, reps: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def host_ms(fn, reps: int = 10) -> float:
    """Host time to enqueue (no sync inside fn expected)."""
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    h = (time.perf_counter() - t) / reps * 1e3
    torch.cuda.synchronize()
    return h


def table(fn, rows: int = 18) -> None:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    ka = p.key_averages()
    print(ka.table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60))
    n = sum(e.count for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
    print("CUDA kernel launches:", n)


def encode(B: int, steps: int) -> None:
    m = random_model("t2diff", "cuda")
    h, ts, now = random_histories(B, 50, "cuda")
    f = lambda: m._encode(h, ts, now, None, steps)  # noqa: E731
    with torch.no_grad():
        print(f"== encode eager B={B} T={steps}: {cuda_ms(f, 3):.2f} ms GPU, host {host_ms(f, 3):.2f} ms")
        table(f)
        for mode in ("default", "max-autotune-no-cudagraphs"):
            m.diffusion.set_denoiser(torch.compile(m.diffusion.unet, dynamic=False, mode=mode))
            t0 = time.time()
            f()
            torch.cuda.synchronize()
            print(f"== encode compile[{mode}] B={B} T={steps}: {cuda_ms(f, 5):.2f} ms GPU "
                  f"(host enqueue {host_ms(f, 3):.2f} ms; compile {time.time() - t0:.0f} s)")
            table(f, 12)
        m.diffusion.set_denoiser(None)


def train(B: int, items: int) -> None:
    torch.manual_seed(0)
    tags = torch.randint(0, 71, (items + 1, 3))
    tags[0] = 0
    cfg = ModelConfig(arch="t2diff", num_items=items, num_tags=70, max_tags=3, seq_len=50, session_len=10,
                      diffusion_steps=50)
    m = build_model(cfg, tags).cuda().train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batch = {"hist": torch.randint(1, items + 1, (B, 50), generator=g).cuda(),
             "hist_ts": (torch.arange(50) * 1000).repeat(B, 1).cuda(),
             "target": torch.randint(1, items + 1, (B,), generator=g).cuda(),
             "target_ts": torch.full((B,), 60_000).cuda()}
    print(f"== train step B={B} items={items}, params {sum(p.numel() for p in m.parameters())}")

    def fwd():
        return m(batch)

    def step():
        loss, _ = m(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in m.parameters():
            if p.grad is not None:
                n = p.grad.norm()
                p.grad.mul_(torch.clamp(110.0 / (n + 1e-6), max=1.0))
        opt.step()

    t = time.perf_counter()
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    print(f"wall per step (with the model's host syncs): {(time.perf_counter() - t) / 5 * 1e3:.2f} ms")
    print(f"GPU per step: {cuda_ms(step, 5):.2f} ms; forward only {cuda_ms(fwd, 5):.2f} ms")
    table(step, 25)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", default="encode,train")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--train-batch", type=int, default=8192)
    ap.add_argument("--items", type=int, default=7583)
    a = ap.parse_args(argv)
    print(torch.__version__, torch.cuda.get_device_name())
    if "train" in a.what:
        train(a.train_batch, a.items)
    if "encode" in a.what:
        encode(a.batch, a.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
