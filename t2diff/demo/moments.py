"""Request moments from the real KuaiRand-Pure log: when a user was about to act, and what they watched next.

The day split: the slice covers Beijing days 2022-04-25 .. 05-08; the first ``warm_days`` train the model offline,
the next ``replay_days`` are replayed as a live stream. A *request moment* is the first logged event of a user's
session inside the replay window (previous event of that user, over the whole log, more than ``session_gap``
earlier): the feed asked the recall system for candidates at that moment. What the user *watched next* is the
set of distinct items the log shows them watching (click or long view) from that moment on, within the horizon.
The counterfactual estimator (``estimator.py``) scores candidate sets against that set.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from serving.feedback import is_effective_view

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
BEIJING = timezone(timedelta(hours=8))  # KuaiRand's `date` column is the Beijing-time date


@dataclass(frozen=True)
class DaySplit:
    warm_start_ms: int  # first Beijing midnight of the slice
    warm_end_ms: int  # = replay start; the offline warm start sees events strictly before it
    replay_end_ms: int

    def describe(self) -> str:
        f = lambda ms: datetime.fromtimestamp(ms / 1000, BEIJING).strftime("%Y-%m-%d")  # noqa: E731
        return (f"warm start {f(self.warm_start_ms)}..{f(self.warm_end_ms - 1)} (Beijing days), "
                f"replay {f(self.warm_end_ms)}..{f(self.replay_end_ms - 1)}")


def day_split(log_df: pd.DataFrame, warm_days: int, replay_days: int) -> DaySplit:
    """Cut the slice at Beijing midnights. Rows before the first midnight (a few from 04-24) join the warm part."""
    first = str(int(log_df["date"].min()))
    day0 = datetime(int(first[:4]), int(first[4:6]), int(first[6:8]), tzinfo=BEIJING)
    start = int(day0.timestamp() * 1000)
    n_days = int(np.ceil((int(log_df["time_ms"].max()) - start + 1) / DAY_MS))
    if warm_days + replay_days > n_days:
        raise ValueError(f"warm_days + replay_days = {warm_days + replay_days} > {n_days} days in the slice")
    warm_end = start + warm_days * DAY_MS
    return DaySplit(start, warm_end, warm_end + replay_days * DAY_MS)


@dataclass(frozen=True)
class Watched:
    """One distinct item the user watched after the request moment, with its logged engagement."""

    item: int
    ts_ms: int  # first watch inside the horizon
    play_ms: int  # summed over repeats inside the horizon
    long_view: bool
    effective: bool  # long_view or play_ms >= threshold (serving.feedback.is_effective_view)
    follow: bool


@dataclass
class RequestMoment:
    request_id: str
    user_id: int
    ts_ms: int
    history: list[int]  # raw item ids watched before ts_ms (oldest -> newest, <= 50)
    next: list[Watched] = field(default_factory=list)

    @property
    def next_items(self) -> set[int]:
        return {w.item for w in self.next}


def watched_mask(df: pd.DataFrame) -> np.ndarray:
    """A row is a watch when the user clicked it or the log flags a long view (autoplay feeds have views
    without clicks; skipped impressions have neither)."""
    return ((df["is_click"].to_numpy() == 1) | (df["long_view"].to_numpy() == 1))


def extract_request_moments(
    log_df: pd.DataFrame,
    split: DaySplit,
    session_gap_ms: int = 30 * 60_000,
    min_history: int = 1,
    horizon_ms: int = DAY_MS,
    horizon_events: int = 20,
    ev_threshold_ms: int = 10_000,
    history_len: int = 50,
) -> tuple[list[RequestMoment], dict[str, int]]:
    """Every request moment in the replay window, time-ordered, and counts of what was dropped and why.

    Moments whose user watched nothing inside the horizon are dropped (every arm earns 0 there; keeping them only
    rescales all arms alike), and so are users with fewer than ``min_history`` watches before t (nothing to
    encode; the serving fallback would answer)."""
    cols = ["user_id", "video_id", "time_ms", "is_click", "long_view", "play_time_ms", "is_follow"]
    df = log_df[cols].sort_values(["user_id", "time_ms"], kind="stable").reset_index(drop=True)
    w = watched_mask(df)
    users = df["user_id"].to_numpy(np.int64)
    items = df["video_id"].to_numpy(np.int64)
    ts = df["time_ms"].to_numpy(np.int64)
    play = df["play_time_ms"].to_numpy(np.int64)
    lv = df["long_view"].to_numpy() == 1
    fol = df["is_follow"].to_numpy() == 1
    bounds = np.flatnonzero(np.diff(users)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(df)]])
    counts = {"session_starts": 0, "too_little_history": 0, "nothing_watched_next": 0, "moments": 0}
    out: list[RequestMoment] = []
    for s, e in zip(starts, ends):
        u_ts = ts[s:e]
        in_window = (u_ts >= split.warm_end_ms) & (u_ts < split.replay_end_ms)
        if not in_window.any():
            continue
        prev = np.concatenate([[np.iinfo(np.int64).min // 2], u_ts[:-1]])
        is_start = in_window & ((u_ts - prev) > session_gap_ms)
        u_w = w[s:e]
        for j in np.flatnonzero(is_start):
            counts["session_starts"] += 1
            t = int(u_ts[j])
            before = np.flatnonzero(u_w[:j] & (u_ts[:j] < t))
            if len(before) < min_history:
                counts["too_little_history"] += 1
                continue
            nxt: dict[int, list] = {}
            for k in range(j, e - s):
                if u_ts[k] >= t + horizon_ms:
                    break
                if not u_w[k]:
                    continue
                r = s + k
                it = int(items[r])
                if it not in nxt:
                    if len(nxt) >= horizon_events:
                        break
                    nxt[it] = [int(ts[r]), 0, False, False]
                agg = nxt[it]
                agg[1] += int(play[r])
                agg[2] |= bool(lv[r])
                agg[3] |= bool(fol[r])
            if not nxt:
                counts["nothing_watched_next"] += 1
                continue
            watched = [Watched(it, a[0], a[1], a[2], is_effective_view(a[2], a[1], ev_threshold_ms), a[3])
                       for it, a in nxt.items()]
            hist = [int(x) for x in items[s + before[-history_len:]]]
            out.append(RequestMoment(f"u{int(users[s])}-t{t}", int(users[s]), t, hist, watched))
    out.sort(key=lambda m: (m.ts_ms, m.user_id))
    counts["moments"] = len(out)
    log.info("request moments: %s", counts)
    return out, counts


def sample_moments(moments: list[RequestMoment], max_requests: int, seed: int = 0) -> list[RequestMoment]:
    """Uniform sample without replacement (seeded), returned in time order so the replay stays causal."""
    if len(moments) <= max_requests:
        return list(moments)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(moments), size=max_requests, replace=False))
    return [moments[i] for i in pick]
