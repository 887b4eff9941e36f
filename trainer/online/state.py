"""Trainer state that lives beside the model and must survive a restart: per-user histories, the replay
buffer, recently seen idempotency keys. Each has ``state_dict`` / ``load_state_dict`` of plain numpy arrays
so the checkpoint stays compact and loads without pickled classes.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np


class UserHistories:
    """Last ``seq_len`` positives (model item index, event ts ms) per raw user id, oldest first."""

    def __init__(self, seq_len: int) -> None:
        self.seq_len = seq_len
        self._items: dict[int, list[int]] = {}
        self._ts: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def window(self, user: int) -> tuple[list[int], list[int]]:
        return self._items.get(user, []), self._ts.get(user, [])

    def append(self, user: int, item: int, ts_ms: int) -> None:
        self.write_and_append(user, item, ts_ms)

    def write_and_append(self, user: int, item: int, ts_ms: int, row_items: np.ndarray | None = None,
                         row_ts: np.ndarray | None = None, min_len: int = 0) -> int:
        """The trainer's per-event step in one lookup: write the user's window *before* this event, left-padded,
        into ``row_items`` / ``row_ts`` (zeros, length seq_len; None = do not write) when it has >= ``min_len``
        items, then append the event. Returns that window's length."""
        it = self._items.get(user)
        if it is None:
            it, ts = self._items[user], self._ts[user] = [], []
        else:
            ts = self._ts[user]
        n = len(it)
        if row_items is not None and n and n >= min_len:
            row_items[-n:] = it
            row_ts[-n:] = ts
        it.append(item)
        ts.append(ts_ms)
        if n >= self.seq_len:
            del it[0], ts[0]
        return n

    def fill(self, rows: list[tuple[list[int], list[int]]]) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded (B, L) item and ts arrays from ``window`` snapshots (most recent last)."""
        L = self.seq_len
        hist = np.zeros((len(rows), L), dtype=np.int64)
        hts = np.zeros((len(rows), L), dtype=np.int64)
        for r, (it, ts) in enumerate(rows):
            n = len(it)
            if n:
                hist[r, L - n:] = it
                hts[r, L - n:] = ts
        return hist, hts

    def state_dict(self) -> dict[str, Any]:
        users = np.fromiter(self._items.keys(), dtype=np.int64, count=len(self._items))
        lens = np.fromiter((len(v) for v in self._items.values()), dtype=np.int64, count=len(self._items))
        items = np.fromiter((x for v in self._items.values() for x in v), dtype=np.int64, count=int(lens.sum()))
        ts = np.fromiter((x for v in self._ts.values() for x in v), dtype=np.int64, count=int(lens.sum()))
        return {"seq_len": self.seq_len, "users": users, "lens": lens, "items": items, "ts": ts}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.seq_len = int(d["seq_len"])
        ends = np.cumsum(d["lens"])
        starts = ends - d["lens"]
        items, ts = d["items"].tolist(), d["ts"].tolist()
        self._items = {int(u): items[s:e] for u, s, e in zip(d["users"].tolist(), starts.tolist(), ends.tolist())}
        self._ts = {int(u): ts[s:e] for u, s, e in zip(d["users"].tolist(), starts.tolist(), ends.tolist())}


class ReplayBuffer:
    """Ring buffer of recent training samples; mixing them into each step keeps a small stream from making
    the model forget what it learnt offline (uniform over the last ``capacity`` samples)."""

    def __init__(self, capacity: int, seq_len: int, seed: int = 0) -> None:
        self.capacity, self.seq_len = capacity, seq_len
        self.hist = np.zeros((capacity, seq_len), dtype=np.int64)  # (C, L)
        self.hist_ts = np.zeros((capacity, seq_len), dtype=np.int64)  # (C, L)
        self.target = np.zeros(capacity, dtype=np.int64)  # (C,)
        self.target_ts = np.zeros(capacity, dtype=np.int64)  # (C,)
        self.size = 0
        self.pos = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, hist: np.ndarray, hist_ts: np.ndarray, target: np.ndarray, target_ts: np.ndarray) -> None:
        n = len(target)
        if self.capacity == 0 or n == 0:
            return
        if n > self.capacity:  # only the newest fit
            hist, hist_ts, target, target_ts = hist[-self.capacity:], hist_ts[-self.capacity:], \
                target[-self.capacity:], target_ts[-self.capacity:]
            n = self.capacity
        idx = (self.pos + np.arange(n)) % self.capacity
        self.hist[idx], self.hist_ts[idx], self.target[idx], self.target_ts[idx] = hist, hist_ts, target, target_ts
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def sample(self, n: int) -> dict[str, np.ndarray] | None:
        if self.size == 0 or n <= 0:
            return None
        idx = self.rng.integers(0, self.size, size=n)
        return {"hist": self.hist[idx], "hist_ts": self.hist_ts[idx], "target": self.target[idx],
                "target_ts": self.target_ts[idx]}

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "size": self.size, "pos": self.pos, "rng": self.rng.bit_generator.state,
                "hist": self.hist[: self.size].copy(), "hist_ts": self.hist_ts[: self.size].copy(),
                "target": self.target[: self.size].copy(), "target_ts": self.target_ts[: self.size].copy()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if int(d["capacity"]) != self.capacity or d["hist"].shape[1:] != (self.seq_len,):
            raise ValueError("replay buffer shape changed since the checkpoint; start a new work_dir")
        n = int(d["size"])
        self.hist[:n], self.hist_ts[:n], self.target[:n], self.target_ts[:n] = \
            d["hist"], d["hist_ts"], d["target"], d["target_ts"]
        self.size, self.pos = n, int(d["pos"])
        self.rng.bit_generator.state = d["rng"]


class RecentKeys:
    """Bounded set of recent idempotency keys (oldest evicted first) for duplicate detection."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[str, None] = OrderedDict()

    def seen(self, key: str) -> bool:
        """True if ``key`` was seen; otherwise remembers it."""
        if self.capacity == 0:
            return False
        if key in self._keys:
            return True
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"keys": list(self._keys)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self._keys = OrderedDict((k, None) for k in d["keys"])
