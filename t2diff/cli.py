"""``t2diff`` command line. Each package owns its commands in its own ``cli`` module, which exposes

    register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None

adding its top-level commands to ``sub`` and its benchmarks to ``bench`` (``t2diff bench <name>``).
Handlers are set with ``parser.set_defaults(func=...)`` and take the parsed args, returning an exit code.
Heavy imports (ray, feast, pymilvus) stay inside handlers so ``t2diff --help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from t2diff.data import dataset_stats, load_dataset

# Modules that plug commands in. A missing module is skipped so a partial checkout still runs.
COMMAND_MODULES = ["trainer.cli", "streaming.cli", "serving.cli", "t2diff.demo"]

log = logging.getLogger(__name__)


def _cmd_data_stats(args: argparse.Namespace) -> int:
    rows = [dataset_stats(*load_dataset(name)) for name in args.datasets]
    cols = ["dataset", "users", "items", "interactions", "avg_seq_len", "density"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t2diff", description="T2Diff streaming recall system")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data set utilities").add_subparsers(dest="data_cmd", required=True)
    st = data.add_parser("stats", help="print data set statistics (paper Table 1)")
    st.add_argument("datasets", nargs="*", default=["ml-1m", "ml-1m-users1-2999", "kuairand"])
    st.set_defaults(func=_cmd_data_stats)

    bench = sub.add_parser("bench", help="benchmarks (figures go to benchmarks/RESULTS.md)").add_subparsers(
        dest="bench_cmd", required=True)
    for mod in COMMAND_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        m.register(sub, bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
