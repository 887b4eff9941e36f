"""Prequential (test-then-train) evaluation: every new positive is ranked against the whole catalogue by the
current model *before* the model trains on it.

Ranks follow trainer.metrics (rank = #items scored strictly higher + 1; padding excluded). The running
figures -- cumulative and over the last ``window`` events -- are prometheus gauges and are logged. Each
scored event is also written to a JSONL score log (partition, offset, user, item, ts, rank[, frozen rank]) so
the figures can be recomputed (``recompute``) and audited; on resume the log is cut back to the length
recorded in the checkpoint, so a replayed event is logged once.
"""
from __future__ import annotations

import json
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from trainer.metrics import batch_metric_sums, metrics_from_ranks
from trainer.online import telemetry

log = logging.getLogger(__name__)


class RunningRanks:
    """Cumulative and sliding-window Recall@K / MRR@K over a stream of ranks."""

    def __init__(self, ks: Sequence[int], window: int) -> None:
        self.ks = tuple(int(k) for k in ks)
        self.window = window
        self.n = 0
        self.sums = {f"{m}@{k}": 0.0 for k in self.ks for m in ("recall", "mrr")}
        self.recent: deque[int] = deque(maxlen=window)

    def add(self, ranks: np.ndarray) -> None:
        r = np.asarray(ranks, dtype=np.int64)
        for key, v in batch_metric_sums(torch.from_numpy(r), self.ks).items():
            self.sums[key] += v
        self.n += len(r)
        self.recent.extend(r.tolist())

    def cumulative(self) -> dict[str, float]:
        return {key: v / self.n for key, v in self.sums.items()} if self.n else {}

    def windowed(self) -> dict[str, float]:
        return metrics_of(np.fromiter(self.recent, dtype=np.int64), self.ks) if self.recent else {}

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "sums": dict(self.sums), "recent": list(self.recent)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.n, self.sums = int(d["n"]), dict(d["sums"])
        self.recent = deque(d["recent"], maxlen=self.window)


def metrics_of(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K / MRR@K means (trainer.metrics) without the count, so every key is a gauge; NaN when empty."""
    r = np.asarray(ranks, dtype=np.int64)
    if len(r) == 0:
        return {f"{m}@{k}": float("nan") for k in ks for m in ("recall", "mrr")}
    out = metrics_from_ranks(torch.from_numpy(r), ks)
    out.pop("n")
    return out


_META_KEYS = ("p", "o", "u", "i", "ts", "step")  # what the stream trainer records per event
_LINE = '{"p":%d,"o":%d,"u":%d,"i":%d,"ts":%d,"step":%d,"rank":%d'


def _log_lines(meta: list[dict[str, Any]], ranks: list[int], frozen: list[int] | None) -> str:
    """Score-log JSONL for a batch: the trainer's integer fields through one format string (the same bytes
    json.dumps(separators=(",", ":")) writes, at a fraction of its cost per event); anything else via json."""
    out = []
    for i, m in enumerate(meta):
        if tuple(m) == _META_KEYS and all(type(v) is int for v in m.values()):
            line = _LINE % (m["p"], m["o"], m["u"], m["i"], m["ts"], m["step"], ranks[i])
            out.append(line + (',"rank_frozen":%d}' % frozen[i] if frozen is not None else "}"))
        else:
            row = {**m, "rank": int(ranks[i])}
            if frozen is not None:
                row["rank_frozen"] = int(frozen[i])
            out.append(json.dumps(row, separators=(",", ":")))
    return "\n".join(out) + "\n"


class Prequential:
    """Running figures for the online model (and optionally the frozen start model) plus the score log."""

    def __init__(self, ks: Sequence[int], window: int, log_path: Path | None, frozen: bool = False) -> None:
        self.online = RunningRanks(ks, window)
        self.frozen = RunningRanks(ks, window) if frozen else None
        self.log_path = log_path
        self._fh = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(log_path, "a", buffering=1 << 20)

    def add(self, meta: list[dict[str, Any]], ranks: np.ndarray, frozen_ranks: np.ndarray | None = None) -> None:
        """``meta[i]``: the event's identity (partition, offset, user, item, ts_ms, step); ranks (B,)."""
        self.online.add(ranks)
        telemetry.PREQ_EVENTS.labels(model="online").inc(len(ranks))
        if self.frozen is not None and frozen_ranks is not None:
            self.frozen.add(frozen_ranks)
            telemetry.PREQ_EVENTS.labels(model="frozen").inc(len(frozen_ranks))
        if self._fh is not None and len(meta):
            self._fh.write(_log_lines(meta, np.asarray(ranks).tolist(),
                                      None if frozen_ranks is None else np.asarray(frozen_ranks).tolist()))
        self.export()

    def export(self) -> None:
        for name, rr in (("online", self.online), ("frozen", self.frozen)):
            if rr is None:
                continue
            for scope, vals in (("cumulative", rr.cumulative()), ("window", rr.windowed())):
                for key, v in vals.items():
                    metric, k = key.split("@")
                    g = telemetry.PREQ_RECALL if metric == "recall" else telemetry.PREQ_MRR
                    g.labels(k=k, model=name, scope=scope).set(v)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.online.n, "online": self.online.cumulative(),
                               "online_window": self.online.windowed()}
        if self.frozen is not None:
            out["frozen"] = self.frozen.cumulative()
        return out

    # ---- durability: the log length is part of the checkpoint
    def sync(self) -> int:
        """Flush and fsync the score log; returns its length in bytes (stored in the checkpoint)."""
        if self._fh is None:
            return 0
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return self._fh.tell()

    def truncate(self, size: int) -> None:
        """Cut the score log back to ``size`` bytes (events after the checkpoint are replayed and re-logged)."""
        if self._fh is None:
            return
        self._fh.flush()
        cur = os.path.getsize(self.log_path)
        if cur > size:
            log.info("score log: dropping %d bytes written after the last checkpoint", cur - size)
        os.truncate(self.log_path, min(size, cur))
        self._fh.seek(0, os.SEEK_END)

    def state_dict(self) -> dict[str, Any]:
        return {"online": self.online.state_dict(), "frozen": self.frozen.state_dict() if self.frozen else None}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.online.load_state_dict(d["online"])
        if self.frozen is not None and d.get("frozen"):
            self.frozen.load_state_dict(d["frozen"])
        self.export()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_score_log(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def recompute(path: str | Path, ks: Sequence[int], window: int | None = None,
              column: str = "rank") -> dict[str, float]:
    """Recall@K / MRR@K from the score log alone (cumulative, or over the last ``window`` rows)."""
    rows = read_score_log(path)
    if window is not None:
        rows = rows[-window:]
    return metrics_of(np.array([r[column] for r in rows], dtype=np.int64), ks)
