"""Per-second CPU use of every process on the box, by role, beside the serve bench's per-second latency.

Why: on 2 cores a p99 goal of 15 ms is lost to any burst that takes a core for tens of milliseconds, and a
phase's total CPU split (``bench serve``'s "CPU ms/request by process") cannot say *which* burst lined up with
a slow second. The sampler runs as its own process at the lowest priority (a thread in the load generator would
hold its GIL and delay its sends), and records CPU *deltas* per role between samples: cumulative CPU times are
exact whenever they are read, so a late sample only widens its interval, it loses nothing.

``python -m serving.cputrace --out FILE [--interval 1.0]`` writes one JSON line per sample until terminated:
``{"t": wall time, "dt": seconds since the previous sample, "cpu": {role: CPU seconds in dt}, "sys": {user,
system, softirq, steal, idle: seconds summed over cores in dt}}``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Ray Serve replicas and Ray's own daemons, matched in the process title / command line.
RAY_ROLES = ("ProxyActor", "Ingress", "UserEncoder", "Retriever", "Recaller", "ServeController", "milvus_lite",
             "raylet", "gcs_server", "haproxy", "dashboard", "log_monitor", "runtime_env", "monitor.py")


def role_of(name: str, cmd: str, pid: int, me: int) -> str:
    """A role for one process: a known Ray / serve part, the bench driver, or ``outside:<name>``."""
    if pid == me:
        return "loadgen+driver"
    for key in RAY_ROLES:
        if key in cmd or key in name:
            return key
    if "ray" in cmd.lower():
        return "ray-other"
    return f"outside:{_program(name, cmd)}"


def _program(name: str, cmd: str) -> str:
    """``python -m pkg.mod ...`` -> ``python -m pkg.mod``; ``python x/y.py`` -> ``python y.py``: which Python
    program, not just "python" (the publisher, a compile child and a test run all are)."""
    args = cmd.split()
    if not name.startswith("python") or len(args) < 2:
        return name
    if "-m" in args[:-1]:
        return f"{name} -m {args[args.index('-m') + 1]}"
    for a in args[1:]:
        if not a.startswith("-"):
            return f"{name} {os.path.basename(a)}"
    return name


def snapshot(driver: int) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds so far) for every process on the box (``driver``: the pid labelled loadgen+driver)."""
    import psutil

    out: dict[int, tuple[str, float]] = {}
    for p in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        info = p.info
        t = info.get("cpu_times")
        if t is None:
            continue
        cmd = " ".join(info.get("cmdline") or [])
        out[p.pid] = (role_of(info.get("name") or "?", cmd, p.pid, driver), t.user + t.system)
    return out


def sample(out: Path, interval: float, driver: int) -> None:
    """Append one line per ``interval`` to ``out`` until SIGTERM."""
    import psutil

    stop = False

    def _term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _term)
    prev, prev_sys, prev_t = snapshot(driver), psutil.cpu_times(), time.time()
    me = os.getpid()
    with out.open("a") as f:
        while not stop:
            time.sleep(interval)
            snap, sys_t, now = snapshot(driver), psutil.cpu_times(), time.time()
            cpu: dict[str, float] = {}
            for pid, (role, c) in snap.items():
                if pid == me:
                    role = "cputrace"
                d = c - prev[pid][1] if pid in prev else c  # a new process: all its CPU is in this interval
                if d > 0:
                    cpu[role] = cpu.get(role, 0.0) + d
            st = {k: round(getattr(sys_t, k, 0.0) - getattr(prev_sys, k, 0.0), 4)
                  for k in ("user", "system", "softirq", "steal", "idle")}
            f.write(json.dumps({"t": now, "dt": round(now - prev_t, 4),
                                "cpu": {k: round(v, 4) for k, v in cpu.items()}, "sys": st}) + "\n")
            f.flush()
            prev, prev_sys, prev_t = snap, sys_t, now


class CpuTrace:
    """Runs the sampler beside a benchmark: ``with CpuTrace(path): ...``; ``read()`` gives its samples."""

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path, self.interval = Path(path), interval
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "CpuTrace":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "serving.cputrace", "--out", str(self.path), "--interval", str(self.interval),
             "--driver", str(os.getpid())], preexec_fn=lambda: os.nice(19))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]


def per_second(sent_s: np.ndarray, lat_ms: np.ndarray, duration_s: float, slow_ms: float = 15.0) -> list[list]:
    """[requests, over ``slow_ms``, p99 ms] for each second of a phase, by the requests' due times."""
    sec = sent_s.astype(int)
    out = []
    for s in range(int(np.ceil(duration_s))):
        a = lat_ms[sec == s]
        out.append([int(a.size), int((a > slow_ms).sum()), round(float(np.percentile(a, 99)), 1) if a.size else 0.0])
    return out


def cpu_by_second(samples: list[dict[str, Any]], t0: float, seconds: int) -> list[dict[str, float]]:
    """CPU ms by role for each second [t0 + s, t0 + s + 1), each sample's deltas spread evenly over its
    interval (the sampler's own resolution), plus ``steal`` and ``idle`` from the system counters."""
    out: list[dict[str, float]] = [{} for _ in range(seconds)]
    for smp in samples:
        hi, dt = smp["t"], max(smp["dt"], 1e-6)
        lo = hi - dt
        vals = dict(smp["cpu"])
        vals["steal"] = smp["sys"].get("steal", 0.0)
        vals["idle"] = smp["sys"].get("idle", 0.0)
        for s in range(max(0, int(np.floor(lo - t0))), min(seconds, int(np.ceil(hi - t0)))):
            overlap = min(hi, t0 + s + 1) - max(lo, t0 + s)
            if overlap <= 0:
                continue
            for k, v in vals.items():
                out[s][k] = out[s].get(k, 0.0) + 1000.0 * v * overlap / dt
    return [{k: round(v, 1) for k, v in d.items()} for d in out]


def worst_seconds(by_s: list[list], cpu: list[dict[str, float]], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` seconds with the most slow requests, each with its CPU split and the phase's median second
    beside it (what a normal second of the same phase looked like)."""
    if not by_s or not any(b[1] for b in by_s):
        return []
    roles = sorted({k for d in cpu for k in d})
    median = {k: round(float(np.median([d.get(k, 0.0) for d in cpu])), 1) for k in roles} if cpu else {}
    order = sorted(range(len(by_s)), key=lambda s: (-by_s[s][1], -by_s[s][2]))[:n]
    return [{"second": s, "requests": by_s[s][0], "slow": by_s[s][1], "p99_ms": by_s[s][2],
             "cpu_ms": cpu[s] if s < len(cpu) else {}, "median_cpu_ms": median} for s in order if by_s[s][1]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.cputrace", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--driver", type=int, default=0, help="pid labelled loadgen+driver")
    a = ap.parse_args(argv)
    sample(a.out, a.interval, a.driver)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
