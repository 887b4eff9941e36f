"""The shared loopback Milvus Lite server: one per data file, found again by later callers and by other processes,
restarted when it died, stopped on request."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from t2diff.lite_server import ensure_lite_server, stop_lite_server
from t2diff.net import free_port, port_open

STARTER = "import sys; from t2diff.lite_server import ensure_lite_server; print(ensure_lite_server(sys.argv[1]))"


def _pid(db) -> int:
    return int(json.loads((db.parent / (db.name + ".server.json")).read_text())["pid"])


def test_port_open_tells_a_listening_port_from_a_free_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_open(s.getsockname()[1])
    assert not port_open(free_port())


def test_a_db_name_the_server_binary_cannot_take_is_refused_before_starting(tmp_path):
    with pytest.raises(ValueError, match="at most 36"):
        ensure_lite_server(tmp_path / ("x" * 40 + ".db"))
    assert not list(tmp_path.glob("*.server.json"))


@pytest.mark.integration
def test_one_server_per_file_restarted_after_it_died_and_stopped_once(tmp_path):
    db = tmp_path / "items.db"
    try:
        uri = ensure_lite_server(db)
        assert uri.startswith("http://127.0.0.1:") and port_open(int(uri.rsplit(":", 1)[1]))
        pid = _pid(db)
        assert ensure_lite_server(db) == uri and _pid(db) == pid  # found again, not a second server

        os.kill(pid, signal.SIGKILL)  # the server crashed: its server.json now names a dead process
        deadline = time.monotonic() + 10
        while port_open(int(uri.rsplit(":", 1)[1])) and time.monotonic() < deadline:
            time.sleep(0.05)
        uri2 = ensure_lite_server(db)
        assert _pid(db) != pid and port_open(int(uri2.rsplit(":", 1)[1]))
    finally:
        assert stop_lite_server(db)
    assert not stop_lite_server(db)  # nothing left to stop


@pytest.mark.integration
def test_processes_starting_at_once_share_one_server(tmp_path):
    db = tmp_path / "items.db"
    try:
        procs = [subprocess.Popen([sys.executable, "-c", STARTER, str(db)], stdout=subprocess.PIPE, text=True)
                 for _ in range(3)]
        uris = {p.communicate(timeout=120)[0].strip() for p in procs}
        assert all(p.returncode == 0 for p in procs)
        assert len(uris) == 1 and ensure_lite_server(db) in uris  # the lock file let one of them start it
    finally:
        assert stop_lite_server(db)
