"""Replay producer: the shared data sets as events, in event-time order, at real speed x a factor or as fast
as possible (``t2diff stream replay --dataset kuairand --speed 1000``).

KuaiRand-Pure log rows (each row is one exposure): ``impression`` for every row, plus ``click`` (is_click),
``play`` (long_view), ``like`` (is_like), ``follow`` (is_follow), with play time and duration on click/play.
ML-1M ratings with a timestamp: rating >= 4 is a positive ``play``, below 4 an ``impression`` (rows without a
timestamp, see its PROVENANCE.md, are skipped and counted). Idempotency keys are derived from the row content,
so replaying twice, or an exact duplicate row in the data, is dropped downstream as a duplicate.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
from tqdm import tqdm

from streaming.events import Event, encode, key_of
from streaming.log import EventLog
from streaming.metrics import EVENTS_PRODUCED
from t2diff.paths import data_dir

log = logging.getLogger(__name__)

DATASETS = ("kuairand", "ml-1m")


def kuairand_frame(root: Path | None = None, types: Iterable[str] | None = None) -> pd.DataFrame:
    from t2diff.data import load_kuairand_log

    df = load_kuairand_log(root)
    parts = []
    cols = ["user_id", "video_id", "time_ms", "play_time_ms", "duration_ms"]
    for etype, mask, with_play in (("impression", None, False), ("click", "is_click", True),
                                   ("play", "long_view", True), ("like", "is_like", False),
                                   ("follow", "is_follow", False)):
        sub = df[cols] if mask is None else df.loc[df[mask] == 1, cols]
        part = pd.DataFrame({"user_id": sub["user_id"], "item_id": sub["video_id"], "ts_ms": sub["time_ms"],
                             "event_type": etype,
                             "play_time_ms": sub["play_time_ms"] if with_play else -1,
                             "duration_ms": sub["duration_ms"] if with_play else -1})
        part["order"] = sub.index.to_numpy() * 8 + len(parts)  # keeps one row's signals together, in order
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    if types is not None:
        out = out[out["event_type"].isin(list(types))]
    out = out.sort_values(["ts_ms", "order"], kind="stable").drop(columns="order").reset_index(drop=True)
    out["idempotency_key"] = ("kr:" + out["user_id"].astype(str) + ":" + out["item_id"].astype(str) + ":"
                              + out["ts_ms"].astype(str) + ":" + out["event_type"])
    return out


def ml1m_frame(root: Path | None = None, types: Iterable[str] | None = None) -> pd.DataFrame:
    root = Path(root or data_dir())
    df = pd.read_csv(root / "ml-1m" / "ratings_full_ts_partial.csv.gz")
    missing = int(df["timestamp"].isna().sum())
    if missing:
        log.info("ml-1m: skipping %d ratings without a timestamp", missing)
    df = df.dropna(subset=["timestamp"])
    out = pd.DataFrame({"user_id": df["user_id"].astype("int64"), "item_id": df["movie_id"].astype("int64"),
                        "ts_ms": df["timestamp"].astype("int64") * 1000,
                        "event_type": np.where(df["rating"] >= 4, "play", "impression"),
                        "play_time_ms": -1, "duration_ms": -1})
    if types is not None:
        out = out[out["event_type"].isin(list(types))]
    out = out.sort_values(["ts_ms", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    out["idempotency_key"] = ("ml:" + out["user_id"].astype(str) + ":" + out["item_id"].astype(str) + ":"
                              + out["event_type"])
    return out


def dataset_frame(name: str, root: Path | None = None, types: Iterable[str] | None = None) -> pd.DataFrame:
    if name in ("kuairand", "kuairand-pure"):
        return kuairand_frame(root, types)
    if name in ("ml-1m", "ml1m"):
        return ml1m_frame(root, types)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def frame_events(df: pd.DataFrame) -> Iterator[Event]:
    for u, i, t, et, pt, d, k in zip(df["user_id"].tolist(), df["item_id"].tolist(), df["ts_ms"].tolist(),
                                     df["event_type"].tolist(), df["play_time_ms"].tolist(),
                                     df["duration_ms"].tolist(), df["idempotency_key"].tolist()):
        yield Event(user_id=u, item_id=i, event_type=et, ts_ms=t, play_time_ms=pt if pt >= 0 else None,
                    duration_ms=d if d >= 0 else None, idempotency_key=k)


@dataclass
class ReplayStats:
    events: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def replay(event_log: EventLog, events: Iterable[Event], topic: str = "events", speed: float | None = None,
           rate: float | None = None, limit: int | None = None, progress: bool = True,
           flush_every: int = 2000) -> ReplayStats:
    """Produce ``events`` in order. ``speed``: event-time x factor (1000 = 1000x real time); ``rate``: a fixed
    number of events per second; neither: as fast as possible. Flushes at least every ``flush_every`` events
    and whenever it waits, so consumers see events promptly."""
    if speed is not None and speed <= 0 or rate is not None and rate <= 0:
        raise ValueError("speed and rate must be > 0")
    st = ReplayStats()
    t0 = time.monotonic()
    ev0_ts: int | None = None
    counter = EVENTS_PRODUCED.labels(topic)
    bar = tqdm(total=limit, unit="ev", disable=not progress, mininterval=2.0, desc=f"replay -> {topic}")
    pending = 0
    for ev in events:
        if limit is not None and st.events >= limit:
            break
        if speed is not None or rate is not None:
            if ev0_ts is None:
                ev0_ts = ev.ts_ms
            due = (ev.ts_ms - ev0_ts) / 1000 / speed if speed is not None else st.events / rate
            wait = due - (time.monotonic() - t0)
            if wait > 0:
                if pending:
                    event_log.flush()
                    pending = 0
                time.sleep(wait)
        event_log.produce(topic, key_of(ev), encode(ev))
        st.events += 1
        pending += 1
        if pending >= flush_every:
            event_log.flush()
            counter.inc(pending)
            bar.update(pending)
            pending = 0
    event_log.flush()
    counter.inc(pending)
    bar.update(pending)
    bar.close()
    st.seconds = time.monotonic() - t0
    log.info("replayed %d events in %.1fs (%.0f events/s)", st.events, st.seconds, st.rate)
    return st
