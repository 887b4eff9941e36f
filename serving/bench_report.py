"""The serving bench's report: the markdown section ``t2diff bench serve`` prints (and appends to
benchmarks/serve.md with ``--md``) and its latency plot, both from the result dict ``serving.bench.run_bench``
returns (also saved as ``result.json``, so a report can be rebuilt from a past run)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def markdown(res: dict[str, Any], command: str) -> str:
    lines = [f"### {res['dataset']}: {res['items']} items, {res['users']} users, arch {res['arch']}, "
             f"{res['encoder_steps']} reverse steps, k={res['k']}, treatment index {res.get('index', 'milvus')}, "
             f"topology {res.get('topology', 'split')}, encoder compile {res.get('encoder_compile', False)}, "
             f"batch window {res.get('wait_ms', 2.0):g} ms"
             + ("" if res.get("in_thread", True) else ", batches on the event loop")
             + ("" if res.get("switch_interval_ms") is None else f", GIL switch interval {res['switch_interval_ms']:g} ms")
             + ("" if res.get("max_batch_size", 32) != 1 else ", unbatched (max_batch_size 1)")
             + ("" if not res.get("threads") else f", {res['threads']} worker threads")
             + ("" if res.get("gc_threshold") is None else f", young-generation GC threshold {res['gc_threshold']}"),
             "", f"Command: `{command}`  ", f"Device: {res['device']}; wall time {res['wall_s']:.0f} s", "",
             "| source | offered rps | requests | p50 ms | p99 ms | mean ms | done rps | errors | fallbacks | "
             "load avg (1 min) | speed probe s | CPU ms/request by process |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in res["phases"]:
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(p.get("cpu_ms_per_req", {}).items(), key=lambda x: -x[1]))
        la = p.get("loadavg_1m", ["?", "?"])
        lines.append(f"| {p['source']} | {p['rate']:.0f} | {p['requests']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | "
                     f"{p['mean_ms']:.1f} | {p['throughput_rps']:.0f} | {p['errors']} | {p['fallbacks']} | "
                     f"{la[0]} -> {la[1]} | {p.get('cpu_probe_s', '-')} | {cpu} |")
    lines += ["", "Speed probe: seconds for 10^7 pure-Python additions just before the phase (lower is faster; the same "
              "code on a slower moment of a shared VM shows as a higher probe and more CPU ms per request everywhere)."]
    lines += ["", "p99 per 10 s window (ms) and requests over 15 ms, by phase (and how many the ingress itself timed "
              "over 15 ms, from its handler's start); garbage collections during the phase in the ingress process "
              "and in the load generator (its collector "
              f"{'on' if res.get('loadgen_gc') else 'off while requests are out'}): count / total ms paused:"]
    timed = res["phases"] + ([res["swap"]] if res.get("swap") else [])  # every phase with latencies, swap last
    for p in timed:
        if "p99_ms_by_10s" in p:
            gcs = ""
            if "server_gc" in p:
                sg, lg = p["server_gc"], p["loadgen_gc"]
                gens = ", ".join(f"gen {g}: {c} / {ms} ms" for g, (c, ms) in sg.get("by_generation", {}).items())
                gcs = (f"; GC server {sg['count']} / {sg['total_ms']} ms" + (f" ({gens})" if gens else "") +
                       f", load generator {lg['count']} / {lg['total_ms']} ms")
            server = f" ({p['server_over_15ms']} by the ingress)" if "server_over_15ms" in p else ""
            lines.append(f"{p.get('phase', p['source'])} {p['rate']:.0f} rps: {p['p99_ms_by_10s']}, "
                         f"{p['over_15ms']} over 15 ms{server}{gcs}  ")
    worst = [(p, w) for p in timed for w in p.get("worst_seconds", [])]
    if worst:
        lines += ["", "Seconds with the most requests over 15 ms, with the CPU ms each process role used in that "
                  "second (serving/cputrace.py; the phase's median second in brackets; steal = time the VM's host "
                  "took; roles under 20 ms left out):"]
        for p, w in worst:
            cpu = ", ".join(f"{k} {v:.0f} [{w['median_cpu_ms'].get(k, 0):.0f}]"
                            for k, v in sorted(w["cpu_ms"].items(), key=lambda x: -x[1]) if v >= 20 or k == "steal")
            lines.append(f"{p.get('phase', p['source'])} {p['rate']:.0f} rps, second {w['second']}: {w['slow']} of "
                         f"{w['requests']} over 15 ms (p99 {w['p99_ms']} ms); {cpu}  ")
    sw = res.get("swap")
    if sw:
        lines += ["", f"Version swap under load ({sw['rate']:.0f} rps, {sw['requests']} requests, new version "
                  f"{sw.get('version')} published in {sw.get('publish_s', float('nan')):.1f} s mid-run): "
                  f"{sw['errors']} failed, {sw['fallbacks']} fallbacks {sw.get('fallback_reasons', {})}, responses by version {sw['versions']}, "
                  f"p50 {sw['p50_ms']:.1f} ms, p99 {sw['p99_ms']:.1f} ms."]
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for src, color in (("t2diff", "C0"), ("baseline", "C1"), ("popularity", "C2")):
        ph = [p for p in res["phases"] if p["source"] == src]
        if ph:
            ax.plot([p["rate"] for p in ph], [p["p99_ms"] for p in ph], marker="o", color=color, label=f"{src} p99")
            ax.plot([p["rate"] for p in ph], [p["p50_ms"] for p in ph], marker=".", ls="--", color=color,
                    label=f"{src} p50")
    ax.axhline(15, color="grey", lw=0.8, ls=":", label="p99 goal 15 ms")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"/recall latency, {res['dataset']} ({res['items']} items)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
