"""Stream-trainer step profile on a CUDA machine: cProfile (host) + CUDA time of rank() and train().

``python benchmarks/scripts/trainer_profile.py --batch-size 4096``; prints the top host functions and
the per-call GPU and wall times, so host-bound and device-bound steps can be told apart.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    from t2diff.model import build_model
    from trainer.online.bench import _stack
    from trainer.online.loop import StreamTrainer
    from trainer.online.settings import OnlineTrainerSettings
    from trainer.online.synthetic import synthetic_catalog, tiny_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--rows", type=int, default=8192, help="new samples per rank()/train() call")
    ap.add_argument("--items", type=int, default=7583)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp())
    st, el = _stack(root)
    cat = synthetic_catalog(a.items, num_tags=70, max_tags=3)
    torch.manual_seed(0)
    model = build_model(tiny_config(cat, seq_len=50, session_len=10, diffusion_steps=50), torch.from_numpy(cat.tags))
    s = OnlineTrainerSettings(work_dir=root / "work", device=a.device, cold_tags="none", batch_size=a.batch_size,
                              publish_index=False, score_log=False)
    tr = StreamTrainer(s, st, event_log=el, init=(model, cat))
    rng = np.random.default_rng(0)
    B, L = a.rows, 50
    hist = rng.integers(1, a.items + 1, size=(B, L))
    hts = np.tile(np.arange(L), (B, 1)).astype(np.int64)
    tgt = rng.integers(1, a.items + 1, size=B)
    tts = np.full(B, L, dtype=np.int64)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    for name, fn in (("rank", lambda: tr.ranker.rank(tr.model, hist, hts, tgt, tts)),
                     ("train", lambda: tr.train(hist, hts, tgt, tts))):
        t = time.perf_counter()
        fn()
        sync()
        print(f"{name}: first call {time.perf_counter() - t:.2f} s (compile/capture/warm-up)")
        fn()
        sync()
        pr = cProfile.Profile()
        t = time.perf_counter()
        pr.enable()
        for _ in range(a.reps):
            fn()
        host = time.perf_counter() - t
        sync()
        pr.disable()
        wall = time.perf_counter() - t
        print(f"{name}: {B} rows x {a.reps}: host {host / a.reps * 1e3:.1f} ms/call, wall {wall / a.reps * 1e3:.1f} "
              f"ms/call -> {B * a.reps / wall:,.0f} samples/s")
        pstats.Stats(pr).sort_stats("tottime").print_stats(12)
    tr.close()
    el.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
