import os
from pathlib import Path

import pytest

from t2diff.paths import data_dir


@pytest.fixture(autouse=True)
def _isolated_runs_dir(tmp_path, monkeypatch):
    """Every test writes checkpoints, logs and Milvus files under its own tmp dir, never into the repo."""
    monkeypatch.setenv("T2DIFF_RUNS_DIR", str(tmp_path / "runs"))


def shared_data_available() -> bool:
    return (data_dir() / "ml-1m" / "ratings_ge4.dat.gz").exists()


requires_data = pytest.mark.skipif(
    not shared_data_available() and not os.environ.get("CI"),
    reason="../shared/data not present (CI always has it)",
)
