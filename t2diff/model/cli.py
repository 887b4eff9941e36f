"""Model commands: ``t2diff bench encode`` (user-tower throughput, see t2diff/model/bench.py)."""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time

log = logging.getLogger(__name__)
MODES = ("eager", "graph", "compile+graph", "compile+graph+bf16", "triton+graph", "triton+compile+graph",
         "triton+fused+graph", "aot")
CPU_MODES = ("eager", "aot")


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from e


def _cmd_bench_encode(args: argparse.Namespace) -> int:
    import torch

    from t2diff.model.bench import device_name, run_encode_bench, write_results
    from t2diff.paths import runs_dir

    if args.device == "cuda" and not torch.cuda.is_available():
        log.error("--device cuda but CUDA is not available")
        return 2
    modes = args.modes.split(",") if args.modes else (["eager", "graph", "compile+graph"] if args.device == "cuda"
                                                      else list(CPU_MODES))
    bad = [m for m in modes if m not in MODES]
    if bad or (args.device == "cpu") != all(m in CPU_MODES for m in modes):
        log.error("modes must be in %s (on cpu: %s; the others need cuda), got %s", MODES, CPU_MODES, modes)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rows = run_encode_bench(args.device, args.batch_sizes, args.steps, modes, args.min_time, args.min_reps)
    prog = "python -m t2diff.model.cli" if sys.argv[0].endswith("cli.py") else "t2diff"
    meta = {"command": prog + " " + " ".join(shlex.quote(a) for a in sys.argv[1:]), "device": device_name(args.device),
            "device_kind": args.device, "torch": torch.__version__, "wall_s": time.perf_counter() - t0,
            "loadavg_1min_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)], "cpu_count": os.cpu_count()}
    md = write_results(rows, args.out or (runs_dir() / "bench"), meta)
    print(md.read_text())
    print(f"written: {md} (+ .json, .png)")
    return 0


def _cmd_bench_steps(args: argparse.Namespace) -> int:
    """Recall vs reverse steps for a trained checkpoint (paper Table 4), via the harness's eval_checkpoint."""
    import json
    import tempfile
    from pathlib import Path

    from t2diff.model import load_checkpoint, save_checkpoint

    try:
        from trainer.offline import eval_checkpoint
    except ModuleNotFoundError:
        log.error("bench steps needs the trainer package (trainer.offline.eval_checkpoint)")
        return 2
    if not Path(args.checkpoint).exists():
        log.error("checkpoint %s does not exist", args.checkpoint)
        return 2
    model, extra = load_checkpoint(args.checkpoint)
    if getattr(model, "diffusion", None) is None:
        log.error("arch %s has no reverse process", model.cfg.arch)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.steps:
            model.cfg.infer_steps = n  # the rebuilt model calls set_timesteps(n): eval then uses n steps
            p = save_checkpoint(Path(tmp) / f"s{n}.pt", model, **extra)
            t0 = time.perf_counter()
            res = eval_checkpoint(p, protocol=args.protocol, device=args.device, split_on=args.split)
            res.update(steps=n, wall_s=time.perf_counter() - t0)
            log.info("steps=%d %s (%.1fs)", n, res["metrics"], res["wall_s"])
            rows.append(res)
    out = {"command": "t2diff " + " ".join(sys.argv[1:]), "checkpoint": args.checkpoint, "rows": rows}
    print(json.dumps(out, indent=1))
    return 0


def register(groups) -> None:
    p = groups.group("bench").add_parser("encode", help="encode_users throughput (users/s) at T=50 and fewer steps")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 16, 256, 1024, 4096])
    p.add_argument("--steps", type=_ints, default=[50, 10], help="reverse steps to time (T=50 and <= 10)")
    p.add_argument("--modes", default=None, help="comma list of " + "|".join(MODES) + " (default: eager,graph,compile+graph on cuda; eager,aot on cpu)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of timed repetitions per case")
    p.add_argument("--min-reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=__import__("pathlib").Path, default=None, help="output dir (default runs/bench)")
    p.set_defaults(func=_cmd_bench_encode)
    s = groups.group("bench").add_parser("steps", help="recall of a trained T2Diff checkpoint vs reverse steps")
    s.add_argument("checkpoint")
    s.add_argument("--steps", type=_ints, default=[50, 10, 5, 1])
    s.add_argument("--protocol", default="P")
    s.add_argument("--split", default="test")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=_cmd_bench_steps)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m t2diff.model.cli bench encode ...``) for machines that only have torch."""
    from t2diff.cli import standalone_main

    return standalone_main(register, "python -m t2diff.model.cli", argv)


if __name__ == "__main__":
    sys.exit(main())
