"""``t2diff`` command line. Each package owns its commands in its own ``cli`` module, which exposes

    register(groups: CommandGroups) -> None

and adds commands with ``groups.root`` (top-level, e.g. ``t2diff serve``) or ``groups.group("train")``
(``t2diff train offline`` from trainer.cli, ``t2diff train stream`` from trainer.online.cli; ``bench``,
``stream``, ``ab``, ... are created on first use). Handlers are set with ``parser.set_defaults(func=...)`` and take the parsed args, returning an exit code.
Heavy imports (ray, feast, pymilvus) stay inside handlers so ``t2diff --help`` is fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from t2diff.data import dataset_stats, load_dataset

# Modules that plug commands in. A missing module is skipped so a partial checkout still runs.
COMMAND_MODULES = [
    "t2diff.model.cli", "trainer.cli", "trainer.online.cli", "streaming.cli", "feature_store.cli",
    "serving.cli", "t2diff.demo.cli",
]

log = logging.getLogger(__name__)


def _cmd_data_stats(args: argparse.Namespace) -> int:
    rows = [dataset_stats(*load_dataset(name)) for name in args.datasets]
    cols = ["dataset", "users", "items", "interactions", "avg_seq_len", "density"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    return 0


class CommandGroups:
    """Shared sub-command groups so several packages can add commands under one name."""

    def __init__(self, root: argparse._SubParsersAction) -> None:
        self.root = root
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def group(self, name: str, help: str | None = None) -> argparse._SubParsersAction:
        if name not in self._groups:
            parser = self.root.add_parser(name, help=help or f"{name} commands")
            self._groups[name] = parser.add_subparsers(dest=f"{name}_cmd", required=True)
        return self._groups[name]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t2diff", description="T2Diff streaming recall system")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    groups = CommandGroups(sub)
    groups.group("bench", "benchmarks (figures go to benchmarks/RESULTS.md)")
    st = groups.group("data", "data set utilities").add_parser("stats", help="print data set statistics (paper Table 1)")
    st.add_argument("datasets", nargs="*", default=["ml-1m", "ml-1m-users1-2999", "kuairand"])
    st.set_defaults(func=_cmd_data_stats)

    for mod in COMMAND_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        m.register(groups)
    return p


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


def standalone_main(register: Callable[[CommandGroups], None], prog: str, argv: list[str] | None = None) -> int:
    """One package's commands alone (``python -m trainer.online.cli ...``), for a GPU box that has torch but
    not the serving / feature-store stack that the full CLI imports."""
    p = argparse.ArgumentParser(prog=prog)
    register(CommandGroups(p.add_subparsers(dest="command", required=True)))
    return _run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
