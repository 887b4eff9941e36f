"""Where things live. Every path can be overridden by environment so CI and the demo never write into the repo."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Shared data sets. ML-1M's licence forbids copying it into the repo, so it is always read from here."""
    return Path(os.environ.get("T2DIFF_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()


def runs_dir() -> Path:
    """Scratch space for checkpoints, logs, local event logs, Milvus Lite files (git-ignored)."""
    p = Path(os.environ.get("T2DIFF_RUNS_DIR", REPO_ROOT / "runs")).resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory (a rename is durable only once its directory is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
