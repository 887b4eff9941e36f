"""cProfile of one end-to-end ``bench trainer throughput`` row: only the timed ``StreamTrainer.run`` (not the event
production, warm-up or model-only part), in the trainer process (decode workers, if any, are separate processes).
Tells where the host time of the streaming trainer goes on a given machine.

``python benchmarks/scripts/trainer_host_profile.py --device cuda --events 500000 --decode-workers 8``;
``--host-only`` replaces the optimisation step with a no-op (the host's own rate, on any machine; its model-only
figure is then meaningless), ``--no-profile`` times without cProfile's overhead, ``--prequential --eval-steps 10``
scores with 10 reverse steps.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    from trainer.online import loop
    from trainer.online.bench import bench_throughput

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--decode-workers", type=int, default=8)
    ap.add_argument("--prequential", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--host-only", action="store_true", help="StreamTrainer.train is a no-op")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--eval-steps", type=int, default=None, help="reverse steps when scoring (default: the model's T)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pr = cProfile.Profile()
    run = loop.StreamTrainer.run

    def profiled_run(self):  # the timed part only
        pr.enable()
        try:
            return run(self)
        finally:
            pr.disable()

    if not a.no_profile:
        loop.StreamTrainer.run = profiled_run
    if a.host_only:
        loop.StreamTrainer.train = lambda self, *args: None
    res = bench_throughput(a.events, 7583, a.users, a.device, 4096, 16384, a.prequential, "t2diff",
                           Path(tempfile.mkdtemp()), decode_workers=a.decode_workers, eval_num_steps=a.eval_steps)
    print({k: res[k] for k in ("events", "wall_s", "e2e_events_per_s", "model_only_samples_per_s", "device")})
    for key in () if a.no_profile else ("tottime", "cumulative"):
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats(key).print_stats(a.top)
        print(s.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
