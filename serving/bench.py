"""``t2diff bench serve``: open-loop load on loopback against a locally started app.

Requests are scheduled at fixed intervals (open loop) and latency is measured from the *scheduled* send time,
so a stalled server shows up as latency instead of silently lowering the offered rate (coordinated
omission). Bounded: ``rate * duration`` requests at most per phase and a hard deadline per phase.

Phases, all in one run and one app: the treatment arm (T2Diff: Feast-style features -> diffusion user tower ->
Milvus) at each rate; the same rates on the control arm (SASRec two-tower, exact search) and on the
popularity arm (no model: the cost of Ray Serve + HTTP alone) as baselines, switched by rewriting the arms
file (no restart); a model version swap under load.
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving.cputrace import CpuTrace, cpu_by_second, per_second, snapshot, worst_seconds
from serving.metrics import GcTimer
from t2diff.net import free_port

log = logging.getLogger(__name__)


class GcWatch:
    """Garbage collections of this process while a phase runs: how many and how long each paused it (ms)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._timer = GcTimer(lambda generation, s: self.pauses.append(s * 1e3))

    def __enter__(self) -> "GcWatch":
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.stop()

    def summary(self) -> dict[str, float]:
        return {"count": len(self.pauses), "total_ms": round(sum(self.pauses), 1),
                "max_ms": round(max(self.pauses, default=0.0), 1)}


def server_counts(url: str) -> dict[str, float]:
    """From the ingress's /metrics, totals so far: garbage collections of its process and seconds paused (all
    generations); requests it timed end to end, and how many of those took <= 15 ms (a histogram bucket edge):
    the server's own view of the tail, without the HTTP path in front of the handler or the load generator."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out = {"gc_count": 0.0, "gc_seconds": 0.0, "e2e_count": 0.0, "e2e_le_15ms": 0.0}
    text = httpx.get(url + "/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if fam.name == "t2diff_serve_gc_pause_seconds":
                g = smp.labels.get("generation", "?")
                if smp.name.endswith("_count"):
                    out["gc_count"] += smp.value
                    out[f"gc_count_gen{g}"] = out.get(f"gc_count_gen{g}", 0.0) + smp.value
                elif smp.name.endswith("_sum"):
                    out["gc_seconds"] += smp.value
                    out[f"gc_seconds_gen{g}"] = out.get(f"gc_seconds_gen{g}", 0.0) + smp.value
            elif fam.name == "t2diff_serve_latency_seconds" and smp.labels.get("stage") == "end_to_end":
                if smp.name.endswith("_count"):
                    out["e2e_count"] += smp.value
                elif smp.name.endswith("_bucket") and float(smp.labels["le"]) == 0.015:
                    out["e2e_le_15ms"] += smp.value
    return out


async def _load(url: str, users: list[int], rate: float, duration_s: float, k: int, seed: int = 0,
                max_requests: int | None = None, loadgen_gc: bool = False) -> dict[str, Any]:
    """The load of one phase, with the garbage collections this process made during it.

    The generator's own garbage collector is off while requests are out (``loadgen_gc=False``): latency is
    counted from each request's due time, so a collection in this process (aiohttp leaves reference cycles per
    request, and this process also holds the Ray driver) delays sends and reads and would be counted as the
    server's. Its collections and pauses are reported either way (``loadgen_gc``)."""
    with GcWatch() as watch:
        if not loadgen_gc:
            gc.disable()
        try:
            res = await _requests(url, users, rate, duration_s, k, seed, max_requests)
        finally:
            gc.enable()
    res["loadgen_gc"] = watch.summary()
    gc.collect()  # what the phase left, outside any timed window
    return res


async def _requests(url: str, users: list[int], rate: float, duration_s: float, k: int, seed: int,
                    max_requests: int | None) -> dict[str, Any]:
    """aiohttp (several times cheaper per request than httpx: the generator shares the 2 cores with the
    server); a task is created when its request is due, not all up front."""
    import aiohttp

    n = int(rate * duration_s) if max_requests is None else min(max_requests, int(rate * duration_s))
    rng = np.random.default_rng(seed)
    picks = rng.choice(users, n)
    lat: list[float] = []
    sent: list[float] = []  # scheduled send time of each latency in `lat`, seconds into the phase
    codes: list[int] = []
    fallbacks = 0
    versions: dict[Any, int] = {}
    errors: dict[str, int] = {}
    reasons: dict[str, int] = {}
    conn = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=10.0)
    async with aiohttp.ClientSession(base_url=url, connector=conn, timeout=timeout) as session:
        t0 = time.perf_counter()
        t0_wall = time.time()  # the CPU trace's clock

        async def one(i: int, due: float) -> None:
            nonlocal fallbacks
            try:
                async with session.post("/recall", json={"user_id": int(picks[i]), "k": k}) as r:
                    body = await r.json() if r.status == 200 else None
                    codes.append(r.status)
                if body is not None:
                    fallbacks += bool(body["fallback"])
                    if body["fallback"]:
                        reasons[body["fallback_reason"]] = reasons.get(body["fallback_reason"], 0) + 1
                    versions[body["model_version"]] = versions.get(body["model_version"], 0) + 1
                else:
                    errors[str(r.status)] = errors.get(str(r.status), 0) + 1
            except Exception as e:
                codes.append(-1)
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            lat.append(time.perf_counter() - due)
            sent.append(due - t0)

        tasks = []
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1000.0
    ok = sum(c == 200 for c in codes)
    # p99 per 10 s of the phase: tells a tail spread over the phase (queueing) from a few stalls
    window = np.asarray(sent) // 10.0
    p99_10s = [round(float(np.percentile(a[window == w], 99)), 1) for w in np.unique(window)]
    by_s = per_second(np.asarray(sent), a, n / rate)
    return {"t0_wall": t0_wall, "by_s": by_s, "rate": rate, "requests": n, "ok": ok, "errors": n - ok, "error_kinds": errors,
            "fallbacks": fallbacks, "fallback_reasons": reasons, "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "p99_ms_by_10s": p99_10s, "over_15ms": int((a > 15.0).sum()),
            "mean_ms": float(a.mean()), "throughput_rps": ok / wall, "wall_s": wall, "versions": versions}


def load(url: str, users: list[int], rate: float, duration_s: float, k: int = 20, seed: int = 0,
         loadgen_gc: bool = False) -> dict[str, Any]:
    return asyncio.run(_load(url, users, rate, duration_s, k, seed, loadgen_gc=loadgen_gc))


def _cpu_by_process() -> dict[str, float]:
    """CPU seconds so far of this process and each Ray Serve actor (by role), to split a phase's CPU cost."""
    import psutil

    me = psutil.Process()
    mine = {me.pid, *(p.pid for p in me.children(recursive=True))}
    out: dict[str, float] = {}
    for pid, (role, cpu) in snapshot(me.pid).items():
        if pid in mine:
            role = "other" if role.startswith("outside:") or role == "ray-other" else role
            out[role] = out.get(role, 0.0) + cpu
    return out


def cpu_probe(n: int = 2_000_000) -> float:
    """Seconds a pure-Python loop of 10^7 additions takes on this box now (timed on ``n`` and scaled).

    Why: the 2-core VMs these runs share vary in speed over time (a 3-4x slower VM in run 16a; run 34's every
    process, HAProxy included, used 1.6-2x the CPU per request of run 27 with the same code). CPU ms per request
    alone cannot tell a slower machine from costlier code; this can, so each phase records it."""
    t = time.perf_counter()
    s = 0
    for i in range(n):
        s += i
    return round((time.perf_counter() - t) * 1e7 / n, 2)


def _set_arms(path: Path, source_weights: dict[str, float]) -> None:
    arms = [{"name": n, "weight": w, "source": n} for n, w in source_weights.items()]
    path.write_text(json.dumps({"salt": "bench", "arms": arms}))
    t = time.time() + 1
    os.utime(path, (t, t))


def run_bench(dataset: str | None, num_items: int, rates: list[float], duration_s: float,
              baseline_duration_s: float, swap_rate: float, swap_duration_s: float, steps: int | None,
              root: Path, model_path: Path | None = None, baseline_path: Path | None = None,
              k: int = 20, index: str = "milvus", topology: str = "split", compile_encoder: bool = False,
              wait_ms: float = 2.0, haproxy: bool = False, in_thread: bool = True,
              loadgen_gc: bool = False, index_uri: str | None = None, cputrace: bool = True,
              switch_interval_ms: float | None = None, max_batch_size: int = 32,
              threads: int = 0, gc_threshold: int | None = None) -> dict[str, Any]:
    import ray
    from ray import serve

    from serving.app import build_app, load_settings
    from serving.world import build_world

    t_start = time.perf_counter()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would cost CPU here
    # As `t2diff serve` deploys it (serving/cli.py); RAY_SERVE_THROUGHPUT_OPTIMIZED=0 measures Ray's defaults.
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    if haproxy:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    # Ray first: starting it after the loopback Milvus server has come up made its raylet time out here.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    root.mkdir(parents=True, exist_ok=True)
    arms_file = root / "arms.json"
    _set_arms(arms_file, {"t2diff": 1.0, "baseline": 0.0, "popularity": 0.0})
    world = build_world(root, num_items=num_items, num_users=5000, dataset=dataset, model_path=model_path,
                        baseline_path=baseline_path,
                        treatment_index=index, index_uri=index_uri,
                        serving={"arms_file": str(arms_file), "arms_reload_s": 0.5, "encoder_steps": steps,
                                 "batch": {"max_batch_size": max_batch_size, "wait_ms": wait_ms,
                                           "in_thread": in_thread, "threads": threads},
                                 "topology": topology, "switch_interval_ms": switch_interval_ms,
                                 **({} if gc_threshold is None else {"gc_threshold": gc_threshold}),
                                 "encoder_compile": compile_encoder})
    port = free_port()
    s = load_settings(world.config_path, port=port)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(s), name="bench", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    users = world.users
    out: dict[str, Any] = {"dataset": dataset or f"synthetic-{num_items}", "items": int(world.catalog.num_items),
                           "users": len(users), "encoder_steps": steps or world.model_cfg.diffusion_steps,
                           "arch": world.model_cfg.arch, "k": k,
                           "index": index if index_uri is None else f"{index} ({index_uri})", "topology": topology,
                           "encoder_compile": compile_encoder, "wait_ms": wait_ms, "in_thread": in_thread,
                           "switch_interval_ms": switch_interval_ms, "max_batch_size": max_batch_size,
                           "threads": threads, "gc_threshold": gc_threshold,
                           "loadgen_gc": loadgen_gc, "phases": []}

    def phase(rate: float, dur: float, seed: int = 0) -> dict[str, Any]:
        """One phase's load, with the server's collections and pauses during it (its /metrics, before/after)."""
        c0 = server_counts(url)
        res = load(url, users, rate, dur, k, seed, loadgen_gc=loadgen_gc)
        c1 = server_counts(url)
        d = {key: c1[key] - c0.get(key, 0.0) for key in c1}
        gens = sorted(key[len("gc_count_gen"):] for key in d if key.startswith("gc_count_gen") and d[key])
        res["server_gc"] = {"count": int(d["gc_count"]), "total_ms": round(1000 * d["gc_seconds"], 1),
                            "by_generation": {g: [int(d[f"gc_count_gen{g}"]),
                                                  round(1000 * d.get(f"gc_seconds_gen{g}", 0.0), 1)] for g in gens}}
        res["server_over_15ms"] = int(d["e2e_count"] - d["e2e_le_15ms"])
        return res

    # Per-second CPU by process beside per-second latency (serving/cputrace.py): which burst made a slow second.
    trace = CpuTrace(root / "cputrace.jsonl") if cputrace else None
    if trace is not None:
        trace.__enter__()
    try:
        load(url, users, 20, 5, k)  # warm-up: first batches, JIT-free but cold caches
        plan = [("t2diff", r, duration_s) for r in rates]
        plan += [("baseline", r, baseline_duration_s) for r in rates]
        plan += [("popularity", r, baseline_duration_s) for r in rates]
        current = "t2diff"
        for src, rate, dur in plan:
            if src != current:
                _set_arms(arms_file, {n: float(n == src) for n in ("t2diff", "baseline", "popularity")})
                time.sleep(1.5)  # > arms_reload_s
                current = src
            probe = cpu_probe()
            cpu0, la0 = _cpu_by_process(), os.getloadavg()[0]
            res = phase(rate, dur)
            res["cpu_probe_s"] = probe
            cpu1 = _cpu_by_process()
            # CPU ms per request by process role: where the time goes on these 2 shared cores
            res["cpu_ms_per_req"] = {r: round(1000 * (cpu1.get(r, 0) - cpu0.get(r, 0)) / max(1, res["requests"]), 2)
                                     for r in cpu1 if cpu1.get(r, 0) - cpu0.get(r, 0) > 0.01}
            res["loadavg_1m"] = [round(la0, 1), round(os.getloadavg()[0], 1)]
            res["source"] = src
            log.info("%-10s %5.0f rps: p50 %.1f ms p99 %.1f ms, %.0f rps done, %d errors, %d fallbacks", src, rate,
                     res["p50_ms"], res["p99_ms"], res["throughput_rps"], res["errors"], res["fallbacks"])
            out["phases"].append(res)
        # model version swap under load
        _set_arms(arms_file, {"t2diff": 1.0, "baseline": 0.0, "popularity": 0.0})
        time.sleep(1.5)
        import subprocess
        import sys
        import threading

        swap: dict[str, Any] = {}

        def publish() -> None:
            # A separate process, as the trainer would be: a publish in this process would hold the GIL
            # (torch, gRPC) and stall the load generator's event loop, measuring ourselves instead.
            time.sleep(swap_duration_s / 3)
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "serving.world", "publish", str(root)], capture_output=True,
                               text=True, timeout=120)
            swap["publish_s"] = time.perf_counter() - t0
            if r.returncode == 0:
                swap["version"] = int(r.stdout.strip().splitlines()[-1])
            else:
                log.error("publish failed: %s", r.stderr[-2000:])

        th = threading.Thread(target=publish)
        th.start()
        res = phase(swap_rate, swap_duration_s, seed=1)
        th.join()
        res.update(source="t2diff", phase="swap", **swap)
        log.info("swap: %d requests, %d errors, %d fallbacks, versions %s", res["requests"], res["errors"],
                 res["fallbacks"], res["versions"])
        out["swap"] = res
    finally:
        if trace is not None:
            trace.__exit__(None, None, None)
            samples = trace.read()
            for p in out["phases"] + ([out["swap"]] if "swap" in out else []):
                p["cpu_by_s"] = cpu_by_second(samples, p["t0_wall"], len(p["by_s"]))
                p["worst_seconds"] = worst_seconds(p["by_s"], p["cpu_by_s"])
        serve.shutdown()
        ray.shutdown()
        world.stop_index()
    out["wall_s"] = time.perf_counter() - t_start
    out["device"] = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU; "
                     f"RAY_SERVE_THROUGHPUT_OPTIMIZED={os.environ.get('RAY_SERVE_THROUGHPUT_OPTIMIZED', '')}, "
                     f"RAY_SERVE_ENABLE_HA_PROXY={os.environ.get('RAY_SERVE_ENABLE_HA_PROXY', '0')}")
    return out
