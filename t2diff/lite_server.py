"""A shared Milvus Lite server on loopback, so several processes can use one local index.

Milvus Lite (``MilvusClient("file.db")``) runs an in-process server that holds an exclusive ``flock`` on the data
dir: a second process opening the same file gets "Open local milvus failed". ``ensure_lite_server`` instead starts
one detached milvus-lite server (its ``milvus`` binary listening on 127.0.0.1) per data file, on demand, by
whichever process comes first (serialised by a lock file); the others find it through ``<path>.server.json`` and
everyone connects over gRPC (``t2diff.index.ItemIndex`` with ``shared=True``).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path

from t2diff.net import free_port, port_open

log = logging.getLogger(__name__)


def _server_file(path: Path) -> Path:
    return path.with_name(path.name + ".server.json")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_server(path: Path) -> dict[str, int] | None:
    f = _server_file(path)
    try:
        info = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if _pid_alive(int(info["pid"])) and port_open(int(info["port"])):
        return info
    return None


def _lite_bin_dir() -> Path:
    import milvus_lite

    return Path(milvus_lite.__file__).resolve().parent / "lib"


def _lite_server_args(path: Path, port: int) -> list[str]:
    """milvus-lite 2.5's server binary in TCP mode: ``milvus <db file> <host:port> <log level>`` (what its own
    ``milvus_lite.server.Server(db, address=...)`` runs; that class would tie the server to this process)."""
    if not re.match(r"^[a-zA-Z0-9.\-_]{1,36}$", path.name):
        raise ValueError(f"Milvus Lite db file name {path.name!r}: letters, digits, '.', '-', '_', at most 36")
    return [str(_lite_bin_dir() / "milvus"), str(path), f"127.0.0.1:{port}", os.environ.get("LOG_LEVEL", "ERROR")]


def _lite_server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{_lite_bin_dir()}:{env.get('LD_LIBRARY_PATH', '')}"  # its bundled libraries
    return env


def ensure_lite_server(path: str | Path, timeout_s: float = 60.0) -> str:
    """URI of the loopback Milvus Lite server for data dir ``path``, starting one (detached) if none runs.

    Safe to call from many processes at once: starting is serialised by ``<path>.server.lock`` and the winner
    writes ``<path>.server.json`` (pid, port) atomically; the server survives the process that started it, so a
    trainer restart does not take the index away from serving. ``stop_lite_server`` ends it.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    info = _read_server(path)
    if info:
        return f"http://127.0.0.1:{info['port']}"
    lock = path.with_name(path.name + ".server.lock")
    with open(lock, "a+") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            info = _read_server(path)  # someone else may have started it while we waited
            if info:
                return f"http://127.0.0.1:{info['port']}"
            port = free_port()
            logf = open(path.with_name(path.name + ".server.log"), "ab")
            proc = subprocess.Popen(_lite_server_args(path, port), env=_lite_server_env(), cwd=str(path.parent),
                                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            deadline = time.monotonic() + timeout_s
            while not port_open(port):
                if proc.poll() is not None:
                    raise RuntimeError(f"milvus-lite server for {path} exited with {proc.returncode}; see "
                                       f"{logf.name} (is the db open in embedded mode by another process?)")
                if time.monotonic() > deadline:
                    proc.kill()
                    raise TimeoutError(f"milvus-lite server for {path} did not listen within {timeout_s}s")
                time.sleep(0.1)
            tmp = _server_file(path).with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": proc.pid, "port": port}))
            os.replace(tmp, _server_file(path))
            log.info("started milvus-lite server pid %d on 127.0.0.1:%d for %s", proc.pid, port, path)
            return f"http://127.0.0.1:{port}"
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def stop_lite_server(path: str | Path, timeout_s: float = 10.0) -> bool:
    """Stop the loopback server of ``path`` (SIGTERM, then SIGKILL). True if one was running."""
    path = Path(path).resolve()
    f = _server_file(path)
    try:
        pid = int(json.loads(f.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return False
    f.unlink(missing_ok=True)
    if not _pid_alive(pid):
        return False
    os.kill(pid, 15)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, 9)
    return True
