"""Commands: ``t2diff train offline``, ``t2diff eval``, ``t2diff bench offline``.

Also runnable without the other packages' commands (the GPU box lacks some of their dependencies):
``python -m trainer.cli bench offline ...``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ARCH_CHOICES = ("t2diff", "t2diff_no_dp", "mixed_attention", "sasrec", "gru4rec", "diffurec")


def _parse_sets(items: list[str] | None) -> dict:
    """``--set key=value`` ModelConfig overrides; values parsed as JSON when possible (numbers, lists, null)."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"--set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _cmd_train_offline(args: argparse.Namespace) -> int:
    from t2diff.paths import runs_dir
    from trainer.offline import OfflineConfig, apply_preset, train

    model = _parse_sets(args.set)
    if args.edim:
        model["edim"] = args.edim
    cfg = OfflineConfig(dataset=args.dataset, arch=args.arch, protocol=args.protocol, seed=args.seed,
                        device=args.device, until_ms=args.until_ms, catalog_all=args.catalog_all, model=model)
    cfg = apply_preset(cfg, args.preset)
    cfg.probe_next = args.probe_next
    for k in ("max_epochs", "patience", "lr", "batch_size", "threads", "max_train_samples"):
        if getattr(args, k) is not None:
            setattr(cfg, k, getattr(args, k))
    if args.patience == 0:
        cfg.patience = None
    out = Path(args.out) if args.out else runs_dir() / "checkpoints" / f"{args.dataset}-{args.arch}-{args.protocol}-s{args.seed}.pt"
    res = train(cfg, out=out)
    print(json.dumps({"checkpoint": str(out), "best_epoch": res["best_epoch"], "val": res["val"], "test": res["test"],
                      **({"probe": res["probe"]} if "probe" in res else {}),
                      "wall_s": round(res["wall_s"], 1), "device": res["device"]}, indent=1))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from trainer.offline import eval_checkpoint

    if not Path(args.checkpoint).exists():
        print(f"error: checkpoint {args.checkpoint} does not exist", file=sys.stderr)
        return 2
    res = eval_checkpoint(args.checkpoint, protocol=args.protocol, seed=args.seed, device=args.device,
                          split_on=args.split, max_eval_samples=args.max_samples, probe_next=args.probe_next)
    print(json.dumps(res, indent=1))
    return 0


def _cmd_bench_offline(args: argparse.Namespace) -> int:
    import time

    from trainer.experiments import default_jobs, grid, run_grid
    from trainer.report import report, table1

    t0 = time.time()
    specs = grid(args.suites, args.seeds, large_edim=args.large_edim, l_epochs=args.l_epochs,
                 l_per_user=args.l_per_user or None)
    if args.only_arch:
        specs = [s for s in specs if s.arch in args.only_arch]
    if args.only_dataset:  # e.g. a suite's KuaiRand runs alone, on a box too small for its ML-1M runs
        specs = [s for s in specs if s.dataset in args.only_dataset]
    overrides = {}
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    if args.epoch_cap is not None:
        overrides["epoch_cap"] = args.epoch_cap
    if args.max_train_samples is not None:
        overrides["max_train_samples"] = args.max_train_samples
    jobs = args.jobs or default_jobs(args.device)
    if args.report_only:
        from trainer.experiments import load_results, results_path

        results = load_results(results_path(args.out))
    else:
        results = run_grid(specs, args.out, jobs=jobs, device=args.device, threads=args.threads, overrides=overrides,
                           deadline_s=args.deadline_s)
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    header = (f"# Offline benchmark\n\ncommand: `{' '.join(sys.argv)}`  \ndevice: {dev}, {jobs} parallel runs  \n"
              f"wall time of this invocation: {time.time() - t0:.0f} s  \n")
    if not args.no_table1:
        datasets = sorted({s.dataset for s in specs})
        header += "\n### Data sets (Table 1)\n\n" + table1(datasets) + "\n"
    text = report(results, args.out, header=header)
    print(text)
    print(f"tables -> {Path(args.out) / 'offline.md'}, plot -> {Path(args.out) / 'val_curves.png'}")
    return 0


def _user_errors(fn):
    """Bad input (unknown data set / preset / suite, missing files) -> one clear line and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ValueError, FileNotFoundError, KeyError) as e:
            log.debug("command failed", exc_info=True)
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapped


def register(groups) -> None:
    tr = groups.group("train", "training").add_parser("offline", help="train one model offline (paper protocol)")
    tr.add_argument("--dataset", default="ml-1m", help="ml-1m | ml-1m-users1-2999 | kuairand")
    tr.add_argument("--arch", default="t2diff", choices=ARCH_CHOICES)
    tr.add_argument("--protocol", default="P", choices=["P", "L"])
    tr.add_argument("--preset", default=None, help="quick | paper")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default=None, help="checkpoint path (default runs/checkpoints/...)")
    tr.add_argument("--device", default="auto")
    tr.add_argument("--until-ms", type=int, default=None, help="train only on interactions before this time (ms)")
    tr.add_argument("--catalog-all", action="store_true", help="KuaiRand: every video with features in the catalogue")
    tr.add_argument("--edim", type=int, default=None, help="item vector size (official 4)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="ModelConfig override (repeatable)")
    tr.add_argument("--max-epochs", type=int, default=None)
    tr.add_argument("--patience", type=int, default=None, help="early stop after N epochs without validation "
                    "improvement (default 10); 0: no early stop, train --max-epochs and keep the best epoch")
    tr.add_argument("--lr", type=float, default=None)
    tr.add_argument("--probe-next", action="store_true", help="diffusion archs: also report what x̂_{n+1} is worth "
                    "on the test set (trainer/probe.py)")
    tr.add_argument("--batch-size", type=int, default=None)
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--max-train-samples", type=int, default=None)
    tr.set_defaults(func=_user_errors(_cmd_train_offline))

    ev = groups.root.add_parser("eval", help="evaluate a checkpoint offline (full ranking)")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--protocol", default="P", choices=["P", "L"])
    ev.add_argument("--split", default="test", choices=["val", "test"])
    ev.add_argument("--seed", type=int, default=None, help="split seed (default: the checkpoint's)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--max-samples", type=int, default=None)
    ev.add_argument("--probe-next", action="store_true", help="diffusion archs: what x̂_{n+1} is worth (trainer/probe.py)")
    ev.set_defaults(func=_user_errors(_cmd_eval))

    b = groups.group("bench").add_parser("offline", help="Tables 2-4: archs x seeds x datasets")
    b.add_argument("--suites", nargs="+", default=["table2"],
                   help="table2 table2_large table2_tune table3 table4 kuairand kuairand_edim kuairand_tune "
                        "protocol_l users1-2999 users1-2999_large users1-2999_tune ml1m_tune_edge ml1m_tuned "
                        "ml1m_tuned_ablation ml1m_tuned_full ml1m_tuned_ablation_full ml1m_tuned_token "
                        "ml1m_tuned_token_full kuairand_tuned kuairand_tuned_ablation kuairand_tuned_token kuairand_token "
                        "kuairand_token_kinds ml1m_tuned_token_kinds kuairand_tuned_token_kinds "
                        "ml1m_tuned_probe probe_official zero_out eq22 "
                        "diffurec train_next sasrec_order sasrec_paper smoke (trainer.experiments.grid)")
    b.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    b.add_argument("--only-arch", nargs="+", default=None)
    b.add_argument("--only-dataset", nargs="+", default=None, help="ml-1m | ml-1m-users1-2999 | kuairand")
    b.add_argument("--out", default="runs/bench_offline")
    b.add_argument("--jobs", type=int, default=None, help="parallel runs (default: 1 on CPU, cores-2 on GPU)")
    b.add_argument("--threads", type=int, default=1, help="torch threads per run")
    b.add_argument("--device", default="auto")
    b.add_argument("--large-edim", type=int, default=64)
    b.add_argument("--l-epochs", type=int, default=20)
    b.add_argument("--l-per-user", type=int, default=30, help="protocol L: most recent training targets per user (0 = all)")
    b.add_argument("--max-epochs", type=int, default=None)
    b.add_argument("--epoch-cap", type=int, default=None, help="at most this many epochs (keeps smaller defaults)")
    b.add_argument("--max-train-samples", type=int, default=None)
    b.add_argument("--no-table1", action="store_true")
    b.add_argument("--deadline-s", type=float, default=None, help="kill unfinished runs after this many seconds")
    b.add_argument("--report-only", action="store_true", help="only rebuild offline.md / the plot from results.jsonl")
    b.set_defaults(func=_user_errors(_cmd_bench_offline))


def main(argv: list[str] | None = None) -> int:
    """Trainer commands only (no other package imported)."""
    from t2diff.cli import CommandGroups

    p = argparse.ArgumentParser(prog="python -m trainer.cli")
    sub = p.add_subparsers(dest="command", required=True)
    register(CommandGroups(sub))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
