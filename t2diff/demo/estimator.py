"""Counterfactual engagement estimator: a candidate set earns the logged engagement of the items it contains.

For request moment r with next-watched set N_r (distinct items, each with its logged play time, effective-view
and follow flags; see ``moments.py``) and an arm's candidate set C_r:

    hit_r       = 1[C_r ∩ N_r ≠ ∅]                       (hit rate)
    recall_r    = |C_r ∩ N_r| / |N_r|                     (recall of what the user really watched next)
    evr_r       = 1[∃ i ∈ C_r ∩ N_r effectively viewed]   (effective-view rate: the set earned an effective view)
    play_s_r    = Σ_{i ∈ C_r ∩ N_r} play_time_i / 1000    (play duration earned, seconds)
    follow_r    = 1[∃ i ∈ C_r ∩ N_r followed]             (follow rate)

Per arm we report the mean over requests with a 95 % CI: Wilson for the 0/1 metrics, Student t for the others.
Every arm is asked for *every* request moment, so arms are compared **paired**: the relative lift
mean(T)/mean(C) − 1 gets a delta-method CI built from the per-request pairs, and a paired t-test p-value.
The biases of this estimator are discussed in docs/DEMO.md ("Counterfactual estimator").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from t2diff.demo.moments import RequestMoment

METRICS = ("hit", "recall", "evr", "play_s", "follow")
BINARY = {"hit", "evr", "follow"}
MIN_EVENTS = 5  # successes an arm needs on a 0/1 metric before its lift gets a (normal-approximation) CI


def score_request(moment: RequestMoment, candidates: Iterable[int]) -> dict[str, float]:
    """Engagement one candidate set earns at one request moment (the formulas in the module doc)."""
    cand = {int(c) for c in candidates}
    got = [w for w in moment.next if w.item in cand]
    n = len(moment.next)
    return {
        "hit": float(bool(got)),
        "recall": len(got) / n if n else 0.0,
        "evr": float(any(w.effective for w in got)),
        "play_s": sum(w.play_ms for w in got) / 1000.0,
        "follow": float(any(w.follow for w in got)),
    }


def score_table(moments: Sequence[RequestMoment], answers: Mapping[str, Mapping[str, Sequence[int]]]) -> pd.DataFrame:
    """One row per (request, arm) that was answered. ``answers[request_id][arm] = candidate raw ids``."""
    rows = []
    for m in moments:
        for arm, cands in answers.get(m.request_id, {}).items():
            rows.append({"request_id": m.request_id, "user_id": m.user_id, "ts_ms": m.ts_ms, "arm": arm,
                         "n_next": len(m.next), **score_request(m, cands)})
    return pd.DataFrame(rows, columns=["request_id", "user_id", "ts_ms", "arm", "n_next", *METRICS])


@dataclass
class Estimate:
    mean: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def mean_ci(x: np.ndarray, binary: bool, level: float = 0.95, nonneg: bool = True) -> Estimate:
    """Wilson interval for 0/1 data (sane at 0 or 1 successes), Student t otherwise. NaN bounds when n < 2."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if binary:
        ci = stats.binomtest(int(round(x.sum())), n).proportion_ci(level, method="wilson")
        return Estimate(m, float(ci.low), float(ci.high), n)
    if n < 2:
        return Estimate(m, math.nan, math.nan, n)
    se = float(x.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return Estimate(m, m, m, n)
    lo, hi = stats.t.interval(level, n - 1, loc=m, scale=se)
    if nonneg:  # recall and play time cannot be negative; a t interval on skewed small samples can reach below 0
        lo = max(lo, 0.0)
    return Estimate(m, float(lo), float(hi), n)


def paired_lift(t: np.ndarray, c: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Relative lift mean(t)/mean(c) − 1 over paired samples with a delta-method CI and paired t-test p.

    Var(R) ≈ (Var(t̄) − 2R·Cov(t̄, c̄) + R²·Var(c̄)) / c̄², R = t̄/c̄, the pairing entering through Cov."""
    t = np.asarray(t, dtype=float)
    c = np.asarray(c, dtype=float)
    n = len(t)
    out = {"lift": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, "n": n}
    if n < 2 or len(c) != n:
        return out
    mt, mc = float(t.mean()), float(c.mean())
    if mc == 0:
        return out  # lift undefined against a control that earned nothing
    r = mt / mc
    cov = np.cov(np.vstack([t, c]), ddof=1) / n  # covariance of the two means
    var_r = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (mc * mc)
    z = stats.norm.ppf(0.5 + level / 2)
    sd = math.sqrt(max(var_r, 0.0))
    diff = t - c
    p = 1.0 if np.all(diff == diff[0]) and diff[0] == 0 else float(stats.ttest_rel(t, c).pvalue)
    out.update(lift=r - 1, lo=r - 1 - z * sd, hi=r - 1 + z * sd, p=p)
    return out


def unpaired_lift(t: np.ndarray, c: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Lift between independent samples (arms that answered different requests, e.g. a sticky per-user split):
    delta method with Var(R) ≈ Var(t̄)/c̄² + t̄²·Var(c̄)/c̄⁴, Welch t-test p."""
    t = np.asarray(t, dtype=float)
    c = np.asarray(c, dtype=float)
    out = {"lift": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, "n": int(min(len(t), len(c)))}
    if len(t) < 2 or len(c) < 2 or c.mean() == 0:
        return out
    mt, mc = float(t.mean()), float(c.mean())
    vt, vc = t.var(ddof=1) / len(t), c.var(ddof=1) / len(c)
    r = mt / mc
    sd = math.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    z = stats.norm.ppf(0.5 + level / 2)
    p = 1.0 if vt == 0 and vc == 0 and mt == mc else float(stats.ttest_ind(t, c, equal_var=False).pvalue)
    out.update(lift=r - 1, lo=r - 1 - z * sd, hi=r - 1 + z * sd, p=p)
    return out


def pick_control(arms: Sequence[str], preferred: str | None = None) -> str:
    """The lift baseline: the configured arm, else the first arm whose name does not say T2Diff."""
    if preferred is not None:
        if preferred not in arms:
            raise ValueError(f"control arm {preferred!r} not among the answered arms {list(arms)}")
        return preferred
    for a in arms:
        if "t2diff" not in a.lower():
            return a
    return arms[0]


def ab_summary(table: pd.DataFrame, control: str | None = None, level: float = 0.95) -> dict:
    """Per-arm means with CIs and lifts against ``control``, paired on the requests every arm answered."""
    arms = sorted(table["arm"].unique().tolist())
    if not arms:
        return {"arms": {}, "control": None, "paired_requests": 0, "level": level}
    ctrl = pick_control(arms, control)
    wide = {m: table.pivot_table(index="request_id", columns="arm", values=m, aggfunc="first") for m in METRICS}
    complete = wide[METRICS[0]].dropna().index  # requests answered by every arm: the paired sample
    paired = len(complete) >= 2
    res: dict[str, dict] = {}
    for arm in arms:
        sub = table[table["arm"] == arm]
        entry: dict[str, dict] = {"n": int(len(sub)), "metrics": {}, "lift": {}}
        for m in METRICS:
            entry["metrics"][m] = mean_ci(sub[m].to_numpy(), m in BINARY, level).as_dict()
            if arm == ctrl:
                continue
            if paired:
                t, c = wide[m].loc[complete, arm].to_numpy(), wide[m].loc[complete, ctrl].to_numpy()
                lift = paired_lift(t, c, level)
            else:  # no common requests: compare as independent samples
                t, c = sub[m].to_numpy(), table.loc[table["arm"] == ctrl, m].to_numpy()
                lift = unpaired_lift(t, c, level)
            if m in BINARY and min(np.sum(t), np.sum(c)) < MIN_EVENTS:
                # The delta method is a normal approximation; with a handful of successes (follows) it returns
                # degenerate intervals such as [-100 %, -100 %]. Say "not enough events" instead.
                lift.update(lo=math.nan, hi=math.nan)
            entry["lift"][m] = lift
        res[arm] = entry
    return {"arms": res, "control": ctrl, "paired_requests": int(len(complete)), "paired": paired, "level": level}


def prequential(table: pd.DataFrame, buckets: int, metric: str = "recall") -> pd.DataFrame:
    """Mean ``metric`` per arm over equal-width time buckets of the replay (each request is scored before its
    events reach the trainer: test-then-train, i.e. prequential)."""
    if table.empty:
        return pd.DataFrame(columns=["bucket_start_ms", "arm", metric, "n"])
    lo, hi = int(table["ts_ms"].min()), int(table["ts_ms"].max()) + 1
    edges = np.linspace(lo, hi, buckets + 1)
    b = np.clip(np.searchsorted(edges, table["ts_ms"].to_numpy(), side="right") - 1, 0, buckets - 1)
    g = table.assign(bucket=b).groupby(["bucket", "arm"])[metric].agg(["mean", "size"]).reset_index()
    g["bucket_start_ms"] = edges[g["bucket"].to_numpy()].astype(np.int64)
    return g.rename(columns={"mean": metric, "size": "n"})[["bucket_start_ms", "arm", metric, "n"]]
