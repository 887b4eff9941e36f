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


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory):
    """A real Milvus standalone server (2.3.5, ``make milvus-server`` installs it into .milvus-venv) on a free
    loopback port for the whole session: the index path that ``index.uri: http://...`` configures."""
    import socket
    import subprocess
    import time

    py = Path(os.environ.get("T2DIFF_MILVUS_PYTHON", REPO / ".milvus-venv" / "bin" / "python"))
    if not py.exists():
        pytest.fail(f"{py} missing: `make milvus-server` installs the Milvus server (or set T2DIFF_MILVUS_PYTHON)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tmp_path_factory.mktemp("milvus-server")
    log = (d / "server.log").open("w")
    proc = subprocess.Popen([str(py), str(REPO / "benchmarks" / "scripts" / "milvus_server.py"), "--dir",
                             str(d / "data"), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 120
    while "Milvus listening" not in (d / "server.log").read_text():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"Milvus server did not start: {(d / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
