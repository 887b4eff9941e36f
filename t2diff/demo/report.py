"""The demo's report: A/B table with CIs and lifts, freshness, serving latency, prequential recall; text, JSON, PNGs.

Everything printed is measured in the run that prints it; a figure that could not be measured is listed under
"skipped" with the reason instead of being filled in.
"""
from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from t2diff.demo.estimator import METRICS, ab_summary, prequential, score_table
from t2diff.demo.moments import BEIJING, RequestMoment

log = logging.getLogger(__name__)

METRIC_LABEL = {"hit": "hit rate", "recall": "recall", "evr": "EVR", "play_s": "play s/req", "follow": "follow rate"}


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    x = np.asarray([s for s in samples_ms if s is not None and math.isfinite(s)], dtype=float)
    if len(x) == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"n": int(len(x)), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "max_ms": float(x.max()), "mean_ms": float(x.mean())}


def build_report(
    moments: Sequence[RequestMoment],
    answers: Mapping[str, Mapping[str, Sequence[int]]],
    *,
    latency_ms: Mapping[str, Sequence[float]],
    freshness_ms: Mapping[str, Sequence[float]],
    trainer_prequential: Sequence[Mapping[str, Any]] = (),
    control: str | None = None,
    buckets: int = 12,
    meta: Mapping[str, Any] | None = None,
    skipped: Sequence[str] = (),
) -> dict[str, Any]:
    table = score_table(moments, answers)
    ab = ab_summary(table, control)
    pq = prequential(table, buckets)
    return {
        "meta": dict(meta or {}),
        "requests": {"moments": len(moments), "answered_rows": int(len(table))},
        "ab": ab,
        "freshness": {k: percentiles(v) for k, v in freshness_ms.items()},
        "latency": {k: percentiles(v) for k, v in latency_ms.items()},
        "prequential": pq.to_dict(orient="records"),
        "trainer_prequential": list(trainer_prequential),
        "skipped": list(skipped),
        "_table": table,  # not serialised; kept for plots
    }


def _fmt(x: float, pct: bool) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.2f}%" if pct else f"{x:.3f}"


def format_report(rep: Mapping[str, Any]) -> str:
    lines: list[str] = []
    meta = rep.get("meta", {})
    lines.append("=" * 100)
    lines.append("T2Diff end-to-end demo: A/B replay on KuaiRand-Pure (counterfactual engagement, 95% CIs)")
    for k in ("split", "requests_note", "wall_s", "phases_s", "machine", "command", "client_mode",
              "arm_switch_retries", "fallback_answers", "model_versions_served", "registry_versions",
              "events_produced", "feedback_events"):
        if k in meta:
            v = meta[k]
            if k == "model_versions_served":
                v = {a: (f"{len(x)} versions ({x[0]}..{x[-1]})" if len(x) > 2 else x) for a, x in v.items()}
            lines.append(f"  {k}: {v}")
    ab = rep["ab"]
    lines.append(f"  request moments: {rep['requests']['moments']}, paired (answered by every arm): "
                 f"{ab.get('paired_requests', 0)}, control arm: {ab.get('control')}")
    lines.append("")
    head = f"{'arm':<18}{'n':>6}  " + "  ".join(f"{METRIC_LABEL[m]:>28}" for m in METRICS)
    lines.append(head)
    for arm, e in ab.get("arms", {}).items():
        cells = []
        for m in METRICS:
            v = e["metrics"][m]
            pct = m != "play_s"
            cells.append(f"{_fmt(v['mean'], pct):>9} [{_fmt(v['lo'], pct)}, {_fmt(v['hi'], pct)}]".rjust(28))
        lines.append(f"{arm:<18}{e['n']:>6}  " + "  ".join(cells))
    for arm, e in ab.get("arms", {}).items():
        if not e["lift"]:
            continue
        cells = []
        for m in METRICS:
            lf = e["lift"][m]
            cells.append(f"{_fmt(lf['lift'], True):>9} [{_fmt(lf['lo'], True)}, {_fmt(lf['hi'], True)}]".rjust(28))
        lines.append(f"{'lift ' + arm:<18}{'':>6}  " + "  ".join(cells))
        lines.append(f"{'  paired p':<18}{'':>6}  " + "  ".join(f"{_fmt(e['lift'][m]['p'], False):>28}" for m in METRICS))
    lines.append("")
    lines.append("freshness (wall-clock lag)        n      p50 ms      p90 ms      p99 ms      max ms")
    for name, p in rep["freshness"].items():
        lines.append(_pline(name, p))
    lines.append("recall latency (client side)      n      p50 ms      p90 ms      p99 ms      max ms")
    for name, p in rep["latency"].items():
        lines.append(_pline(name, p))
    pq = pd.DataFrame(rep["prequential"])
    if not pq.empty:
        lines.append("")
        lines.append("prequential recall over replay time (scored before the events reach the trainer)")
        wide = pq.pivot_table(index="bucket_start_ms", columns="arm", values="recall")
        lines.append(f"{'bucket (Beijing)':<18}" + "".join(f"{a:>16}" for a in wide.columns))
        for ts, row in wide.iterrows():
            t = datetime.fromtimestamp(int(ts) / 1000, BEIJING).strftime("%m-%d %H:%M")
            lines.append(f"{t:<18}" + "".join(f"{_fmt(v, True):>16}" for v in row.to_numpy()))
    tp = rep.get("trainer_prequential") or []
    if tp:
        last = tp[-1]
        lines.append(f"trainer's own prequential figure (last of {len(tp)} samples): "
                     + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
    if rep.get("skipped"):
        lines.append("")
        lines.append("SKIPPED / DEGRADED (not measured in this run):")
        lines.extend(f"  - {s}" for s in rep["skipped"])
    lines.append("=" * 100)
    return "\n".join(lines)


def _pline(name: str, p: Mapping[str, float]) -> str:
    if not p.get("n"):
        return f"  {name:<30}{0:>3}  (no samples)"
    return (f"  {name:<30}{p['n']:>4}  {p['p50_ms']:>10.1f}  {p['p90_ms']:>10.1f}  {p['p99_ms']:>10.1f}"
            f"  {p['max_ms']:>10.1f}")


def write_report(rep: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, report.txt, requests.csv (per request x arm scores) and the PNGs; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table: pd.DataFrame = rep.get("_table", pd.DataFrame())
    paths = {"json": out_dir / "report.json", "txt": out_dir / "report.txt", "csv": out_dir / "requests.csv"}
    serialisable = {k: v for k, v in rep.items() if not k.startswith("_")}
    paths["json"].write_text(json.dumps(serialisable, indent=2, default=_json_default))
    paths["txt"].write_text(format_report(rep) + "\n")
    table.to_csv(paths["csv"], index=False)
    paths.update(plot_report(rep, out_dir))
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def plot_report(rep: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, Path] = {}
    arms = list(rep["ab"].get("arms", {}))
    colors = {a: plt.cm.tab10(i % 10) for i, a in enumerate(arms)}
    # --- A/B: per-arm means with CIs (top), lift vs control with CIs (bottom)
    if arms:
        fig, axes = plt.subplots(2, len(METRICS), figsize=(4 * len(METRICS), 7))
        for j, m in enumerate(METRICS):
            ax = axes[0, j]
            for i, a in enumerate(arms):
                v = rep["ab"]["arms"][a]["metrics"][m]
                err = [[max(v["mean"] - v["lo"], 0)], [max(v["hi"] - v["mean"], 0)]] if not math.isnan(v["lo"]) else None
                ax.bar(i, v["mean"], yerr=err, color=colors[a], capsize=4)
            ax.set_xticks(range(len(arms)), arms, rotation=20)
            ax.set_title(METRIC_LABEL[m])
            ax2 = axes[1, j]
            lifted = [a for a in arms if rep["ab"]["arms"][a]["lift"]]
            for i, a in enumerate(lifted):
                lf = rep["ab"]["arms"][a]["lift"][m]
                if math.isnan(lf["lift"]):
                    continue
                ax2.errorbar(i, 100 * lf["lift"], yerr=[[100 * (lf["lift"] - lf["lo"])], [100 * (lf["hi"] - lf["lift"])]],
                             fmt="o", color=colors[a], capsize=4)
            ax2.axhline(0, color="grey", lw=0.8)
            ax2.set_xticks(range(len(lifted)), lifted, rotation=20)
            ax2.set_title(f"lift vs {rep['ab']['control']} (%)")
        fig.suptitle("Counterfactual A/B on the KuaiRand replay (95% CIs; paired lifts)")
        fig.tight_layout()
        out["ab_png"] = out_dir / "ab.png"
        fig.savefig(out["ab_png"], dpi=110)
        plt.close(fig)
    # --- freshness and latency percentiles
    for key, title, fname in (("freshness", "Freshness lags (wall clock)", "freshness.png"),
                              ("latency", "Serving latency per arm (client-side, HTTP)", "latency.png")):
        items = [(k, p) for k, p in rep[key].items() if p.get("n")]
        if not items:
            continue
        fig, ax = plt.subplots(figsize=(8, 4))
        x = np.arange(len(items))
        for off, q in zip((-0.25, 0, 0.25), ("p50_ms", "p90_ms", "p99_ms")):
            ax.bar(x + off, [p[q] for _, p in items], width=0.25, label=q.replace("_ms", ""))
        ax.set_xticks(x, [f"{k}\n(n={p['n']})" for k, p in items])
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        out[fname.replace(".", "_")] = out_dir / fname
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
    # --- prequential recall over replay time
    pq = pd.DataFrame(rep["prequential"])
    tp = pd.DataFrame(rep.get("trainer_prequential") or [])
    if not pq.empty:
        fig, ax = plt.subplots(figsize=(9, 4))
        for a in arms:
            s = pq[pq["arm"] == a]
            t = [datetime.fromtimestamp(v / 1000, timezone.utc) for v in s["bucket_start_ms"]]
            ax.plot(t, s["recall"], marker="o", color=colors.get(a), label=f"{a} (serving, counterfactual)")
        if not tp.empty and {"event_ts_ms", "recall"} <= set(tp.columns):
            t = [datetime.fromtimestamp(v / 1000, timezone.utc) for v in tp["event_ts_ms"]]
            ax.plot(t, tp["recall"], color="black", ls="--", label=f"trainer prequential ({tp['metric'].iloc[-1] if 'metric' in tp else 'Recall@K'})")
        ax.set_ylabel("recall of next-watched items")
        ax.set_xlabel("event time (UTC)")
        ax.set_title("Prequential recall over the replay (test-then-train)")
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        out["prequential_png"] = out_dir / "prequential.png"
        fig.savefig(out["prequential_png"], dpi=110)
        plt.close(fig)
    return out
