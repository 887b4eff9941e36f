"""``t2diff ab report``: per-arm engagement from the feedback log, like the paper's Table 5, with 95 %
confidence intervals and the relative lift over the control arm; a PNG of the daily lift (its Figure 5).

Statistics. Users are the randomisation unit (sticky assignment), so events of one user are correlated and a
per-event binomial interval would be too narrow. Every metric is a ratio of per-user sums
(EVR = effective views / impressions, follow rate = follows / impressions, mean play = play seconds / plays);
its variance comes from the delta method over users:

    R = sum(x_u) / sum(n_u),   Var(R) ~= sum((x_u - R n_u)^2) / (sum(n_u))^2

and the lift of arm t over control c is R_t / R_c - 1 with Var ~= (R_t/R_c)^2 (Var_t/R_t^2 + Var_c/R_c^2)
(independent arms). Only feedback whose request id this service issued (``known``) is credited to an arm.
When the log has no impressions (an app that reports plays only), plays are the EVR / follow denominator.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

Z95 = 1.959963984540054


@dataclass
class Ratio:
    value: float
    se: float

    @property
    def ci(self) -> tuple[float, float]:
        return self.value - Z95 * self.se, self.value + Z95 * self.se


def ratio(x: np.ndarray, n: np.ndarray) -> Ratio:
    """Delta-method ratio of per-user sums (x_u, n_u)."""
    x, n = np.asarray(x, float), np.asarray(n, float)
    N = n.sum()
    if N <= 0:
        return Ratio(float("nan"), float("nan"))
    r = x.sum() / N
    var = ((x - r * n) ** 2).sum() / N**2
    return Ratio(float(r), float(math.sqrt(var)))


def lift(t: Ratio, c: Ratio) -> Ratio:
    if not (c.value and np.isfinite(c.value)) or not np.isfinite(t.value):
        return Ratio(float("nan"), float("nan"))
    q = t.value / c.value
    rel_var = (t.se / t.value) ** 2 if t.value else 0.0
    rel_var += (c.se / c.value) ** 2
    return Ratio(q - 1.0, abs(q) * math.sqrt(rel_var))


def load(path: Path) -> pd.DataFrame:
    from serving.feedback import read_feedback

    df = pd.DataFrame(read_feedback(Path(path)))
    if df.empty:
        raise ValueError(f"{path}: no feedback records")
    df = df[df["known"].astype(bool) & df["arm"].notna()].copy()
    df["play_s"] = pd.to_numeric(df["play_time_ms"], errors="coerce").fillna(0.0) / 1000.0
    df["day"] = pd.to_datetime(df["ts_ms"], unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    return df


def per_user(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, user): impressions, plays, effective views, follows, play seconds."""
    ev = df["event"]
    g = df.assign(imp=(ev == "impression").astype(int), play=(ev == "play").astype(int),
                  eff=((ev == "play") & df["effective"].astype(bool)).astype(int),
                  fol=(ev == "follow").astype(int), secs=np.where(ev == "play", df["play_s"], 0.0))
    return g.groupby(["arm", "user_id"])[["imp", "play", "eff", "fol", "secs"]].sum().reset_index()


def arm_metrics(u: pd.DataFrame, denom: str) -> dict[str, Ratio]:
    return {"evr": ratio(u["eff"], u[denom]), "play_s": ratio(u["secs"], u["play"]),
            "follow_rate": ratio(u["fol"], u[denom])}


def report(df: pd.DataFrame, control: str | None = None) -> dict[str, Any]:
    u = per_user(df)
    denom = "imp" if u["imp"].sum() > 0 else "play"
    arms = sorted(u["arm"].unique())
    if not arms:
        raise ValueError("no feedback credited to any arm")
    control = control if control in arms else ("control" if "control" in arms else arms[0])
    out: dict[str, Any] = {"control": control, "denominator": "impressions" if denom == "imp" else "plays",
                           "arms": {}}
    base = arm_metrics(u[u["arm"] == control], denom)
    for a in arms:
        ua = u[u["arm"] == a]
        m = arm_metrics(ua, denom)
        out["arms"][a] = {
            "users": int(len(ua)), "impressions": int(ua["imp"].sum()), "plays": int(ua["play"].sum()),
            **{k: {"value": r.value, "ci95": list(r.ci)} for k, r in m.items()},
            "lift": {k: {"value": lift(m[k], base[k]).value, "ci95": list(lift(m[k], base[k]).ci)}
                     for k in m} if a != control else None,
        }
    return out


def daily_lift(df: pd.DataFrame, control: str, metric: str = "evr") -> pd.DataFrame:
    rows = []
    for day, d in df.groupby("day"):
        u = per_user(d)
        denom = "imp" if u["imp"].sum() > 0 else "play"
        if control not in set(u["arm"]):
            continue
        base = arm_metrics(u[u["arm"] == control], denom)[metric]
        for a in sorted(set(u["arm"]) - {control}):
            lr = lift(arm_metrics(u[u["arm"] == a], denom)[metric], base)
            rows.append({"day": day, "arm": a, "lift": lr.value, "lo": lr.ci[0], "hi": lr.ci[1]})
    return pd.DataFrame(rows)


def format_table(rep: dict[str, Any]) -> str:
    def pct(r: dict[str, Any]) -> str:
        return f"{100 * r['value']:.2f}% [{100 * r['ci95'][0]:.2f}, {100 * r['ci95'][1]:.2f}]"

    def sec(r: dict[str, Any]) -> str:
        return f"{r['value']:.2f}s [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"

    lines = [f"control arm: {rep['control']}; EVR and follow rate per {rep['denominator'][:-1]}; 95% CI (delta "
             f"method over users)",
             f"{'arm':<12} {'users':>7} {'impr.':>8} {'plays':>8}  {'EVR':<26} {'mean play':<26} {'follow rate':<26}"]
    for a, r in rep["arms"].items():
        lines.append(f"{a:<12} {r['users']:>7} {r['impressions']:>8} {r['plays']:>8}  {pct(r['evr']):<26} "
                     f"{sec(r['play_s']):<26} {pct(r['follow_rate']):<26}")
    for a, r in rep["arms"].items():
        if r["lift"]:
            lines.append(f"lift {a} vs {rep['control']}: " + ", ".join(
                f"{k} {pct(v)}" for k, v in r["lift"].items()))
    return "\n".join(lines)


def plot_daily(dl: pd.DataFrame, path: Path, metric: str = "EVR") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for a, d in dl.groupby("arm"):
        x = pd.to_datetime(d["day"])
        ax.plot(x, 100 * d["lift"], marker="o", label=f"{a}")
        ax.fill_between(x, 100 * d["lo"], 100 * d["hi"], alpha=0.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel(f"{metric} lift vs control (%)")
    ax.set_title(f"Daily relative {metric} lift, 95% CI")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
