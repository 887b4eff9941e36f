"""Fixtures for deploy/ tests: the helm and promtool binaries that `make deploy-tools` installs into .venv/bin.

Outside CI a missing tool skips the tests that need it (with the command that installs it); in CI (CI=true)
it fails them, because `make install` must have provided it.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# deploy/ is not an installed package (it ships no runtime code): import it from the checkout, however pytest
# was started.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _tool(name: str) -> str:
    venv = Path(sys.executable).parent / name
    found = str(venv) if venv.exists() else shutil.which(name)
    if found is None:
        msg = f"{name} not installed: run `make deploy-tools`"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool("helm")


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool")


@pytest.fixture(scope="session")
def code_series():
    """Exposed series name -> label names, for every metric the code defines (scanned once per session)."""
    from deploy.metrics_scan import exposed_series, scan_code

    return exposed_series(scan_code())
