"""``t2diff demo``: the end-to-end loop on the KuaiRand-Pure replay (see t2diff/demo/orchestrator.py)."""
from __future__ import annotations

import argparse


def _cmd_demo(args: argparse.Namespace) -> int:
    from t2diff.demo.orchestrator import run_demo
    from t2diff.demo.settings import DemoSettings

    overrides = {k: getattr(args, k) for k in ("warm_days", "replay_days", "max_requests", "k", "seed",
                                                "replay_minutes", "offline_epochs", "horizon_hours", "out_dir")}
    if args.in_process:
        overrides["in_process"] = True
    if args.arms:
        overrides["arms"] = args.arms
    s = DemoSettings.load(args.config, key="demo" if args.config else None, **overrides)
    rep = run_demo(s)
    return 0 if rep["ab"].get("arms") else 1  # no arm answered: the demo did not demonstrate anything


def register(groups) -> None:  # noqa: ANN001
    p = groups.root.add_parser("demo", help="end-to-end demo: warm start, live replay, A/B report (<= 15 min, 2 cores)")
    p.add_argument("--config", default=None, help="YAML with a `demo` section (DemoSettings)")
    p.add_argument("--warm-days", type=int, default=None, help="days of offline warm start (default 7)")
    p.add_argument("--replay-days", type=int, default=None, help="days replayed as a live stream (default 7)")
    p.add_argument("--max-requests", type=int, default=None, help="request moments sampled from the replay")
    p.add_argument("--k", type=int, default=None, help="candidates per arm")
    p.add_argument("--arms", nargs="+", default=None, help="subset of arms: treatment frozen control popular")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--replay-minutes", type=float, default=None, help="wall time the replay is spread over")
    p.add_argument("--offline-epochs", type=int, default=None, help="epochs of the offline warm start")
    p.add_argument("--horizon-hours", type=float, default=None, help="'watched next' horizon")
    p.add_argument("--in-process", action="store_true",
                   help="answer the arms in process (no Ray Serve); the report says so")
    p.add_argument("--out-dir", default=None, help="default $T2DIFF_RUNS_DIR/demo")
    p.set_defaults(func=_cmd_demo)
