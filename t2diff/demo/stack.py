"""Child-process supervision for the demo: start each component through its public CLI, wait until it is ready,
notice when one dies, and shut every one down on exit, error or Ctrl-C.

Each child runs in its own process group (``start_new_session``) so a stop signal reaches whatever it spawned
(Ray's raylet and workers, a Milvus Lite server started without detaching); stopping is SIGINT (lets Python run
its ``finally`` blocks and Ray Serve shut down), then SIGTERM, then SIGKILL, each with a deadline.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen
    log_path: Path
    started_at: float = field(default_factory=time.time)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class ChildDied(RuntimeError):
    pass


def t2diff_cmd(*args: str) -> list[str]:
    """The ``t2diff`` CLI of this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "t2diff.cli", *args]


class Stack:
    """Owns the demo's child processes. Use as a context manager; ``stop_all`` is idempotent."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        # A Ray cluster of the parent (e.g. another test's) must not be joined by the demo's serve process.
        self.env.pop("RAY_ADDRESS", None)
        self.children: dict[str, Child] = {}
        self._old_handlers: dict[int, object] = {}

    # --- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> "Stack":
        # SIGTERM (e.g. from a CI runner) becomes the same clean path as Ctrl-C.
        for sig in (signal.SIGTERM,):
            try:
                self._old_handlers[sig] = signal.signal(sig, _raise_keyboard_interrupt)
            except ValueError:  # not the main thread (tests): leave handlers alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        for sig, h in self._old_handlers.items():
            signal.signal(sig, h)  # type: ignore[arg-type]

    def start(self, name: str, argv: list[str], ready: Callable[[], bool] | None = None,
              timeout_s: float = 120.0, env: dict[str, str] | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        fh = open(log_path, "ab")
        log.info("starting %s: %s (log: %s)", name, " ".join(argv), log_path)
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**self.env, **(env or {})}, start_new_session=True)
        fh.close()
        child = Child(name, argv, proc, log_path)
        self.children[name] = child
        if ready is not None:
            self.wait_ready(child, ready, timeout_s)
        return child

    def wait_ready(self, child: Child, ready: Callable[[], bool], timeout_s: float) -> None:
        t0 = time.time()
        while True:
            if not child.alive():
                raise ChildDied(f"{child.name} exited with {child.proc.returncode} before it was ready:\n{child.tail()}")
            try:
                if ready():
                    log.info("%s ready after %.1f s", child.name, time.time() - t0)
                    return
            except Exception as e:  # noqa: BLE001 -- readiness probes fail in many ways until the service is up
                log.debug("%s not ready: %s", child.name, e)
            if time.time() - t0 > timeout_s:
                raise TimeoutError(f"{child.name} not ready after {timeout_s:.0f} s:\n{child.tail()}")
            time.sleep(0.5)

    def run(self, name: str, argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> int:
        """Run a one-shot child to completion (e.g. the offline warm start), killed at the deadline."""
        child = self.start(name, argv, env=env)
        try:
            return child.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.error("%s ran past %.0f s; stopping it", name, timeout_s)
            self.stop(name)
            raise
        finally:
            self.children.pop(name, None)

    def check(self) -> None:
        """Raise if a long-running child died (the demo would otherwise report on a half-dead stack)."""
        for c in self.children.values():
            if not c.alive():
                raise ChildDied(f"{c.name} exited with {c.proc.returncode}:\n{c.tail()}")

    def stop(self, name: str, grace_s: float = 15.0) -> None:
        c = self.children.get(name)
        if c is None or not c.alive():
            return
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(c.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                c.proc.wait(timeout=wait)
                log.info("stopped %s (%s)", name, signal.Signals(sig).name)
                break
            except subprocess.TimeoutExpired:
                continue
        # Leftovers of the group (workers that outlived their parent) get the final word.
        try:
            os.killpg(c.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self) -> None:
        # Reverse start order: serving before the trainer before the consumer, so nothing writes to a stopped peer.
        for name in reversed(list(self.children)):
            self.stop(name)
        self.children.clear()


def _raise_keyboard_interrupt(signum, frame):  # noqa: ANN001
    raise KeyboardInterrupt(f"signal {signum}")
