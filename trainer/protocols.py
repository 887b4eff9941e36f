"""Evaluation protocols: how users' sequences become training / validation / test samples.

Protocol P (the paper's, ``ml_1m_process.py`` of the official code), with one deliberate change:
  * users are split 80/20 at random (seeded here; the official code uses an unseeded shuffle);
  * a validation split is carved from the training users (the official code selects the epoch on the TEST
    set; we select on validation and touch the test set once);
  * training users give up to ``train_targets`` (10) random target positions at index >= ``seq_len`` (50); a
    user with <= 50 interactions gives only the last item; validation / test users give 1 random target by
    the same rule; the history window is the ``seq_len`` items before the target, left-padded with 0.
  The official code draws positions once while preprocessing, so the training samples are fixed across
  epochs; we do the same.

Protocol L (RecBole-style, for comparison with the literature): chronological leave-one-out. The last item of
each user is the test target, the second-last the validation target, every earlier position >= 1 a training
target (sliding window). Full ranking with the user's earlier items filtered out (RecBole's default).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

log = logging.getLogger(__name__)

Sequences = dict[int, tuple[np.ndarray, np.ndarray]]  # raw user id -> (item indices, ts_ms), in order


@dataclass
class SampleSet:
    """Samples in the ARCHITECTURE.md batch format, stored as whole tensors."""

    hist: torch.Tensor  # (S, L) int64, left-padded with 0, most recent last
    hist_ts: torch.Tensor  # (S, L) int64 ms, 0 at padding
    target: torch.Tensor  # (S,) int64 model index 1..N
    target_ts: torch.Tensor  # (S,) int64 ms ("now")
    user: torch.Tensor  # (S,) int64 raw user id
    # Optional seen-item filter (protocol L): CSR over samples, items to drop from the ranking.
    seen_ptr: torch.Tensor | None = None  # (S+1,)
    seen_items: torch.Tensor | None = None  # (E,)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def to(self, device: torch.device | str) -> "SampleSet":
        """The model inputs on ``device`` (the seen-item filter stays on the host)."""
        return SampleSet(self.hist.to(device), self.hist_ts.to(device), self.target.to(device),
                         self.target_ts.to(device), self.user, self.seen_ptr, self.seen_items)

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return {
            "hist": self.hist[idx].to(device),
            "hist_ts": self.hist_ts[idx].to(device),
            "target": self.target[idx].to(device),
            "target_ts": self.target_ts[idx].to(device),
        }

    def exclusions(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(rows, items) pairs of seen items for the samples ``idx`` (rows relative to the batch)."""
        if self.seen_ptr is None or self.seen_items is None:
            return None
        starts, ends = self.seen_ptr[idx], self.seen_ptr[idx + 1]
        counts = ends - starts  # (B,)
        rows = torch.repeat_interleave(torch.arange(len(idx)), counts)
        offs = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        items = self.seen_items[torch.repeat_interleave(starts, counts) + offs]
        return rows, items


@dataclass
class Split:
    protocol: str
    train: SampleSet
    val: SampleSet
    test: SampleSet
    info: dict = field(default_factory=dict)


class _Builder:
    """Collects (user, sequence, target position) triples and cuts the history windows."""

    def __init__(self, seq_len: int, with_seen: bool = False) -> None:
        self.L = seq_len
        self.with_seen = with_seen
        self.rows: list[tuple[int, np.ndarray, np.ndarray, int]] = []

    def add(self, user: int, items: np.ndarray, ts: np.ndarray, pos: int) -> None:
        if pos < 1:
            raise ValueError("a target needs at least one item of history")
        self.rows.append((user, items, ts, pos))

    def build(self) -> SampleSet:
        S, L = len(self.rows), self.L
        hist = np.zeros((S, L), dtype=np.int64)
        hist_ts = np.zeros((S, L), dtype=np.int64)
        target = np.zeros(S, dtype=np.int64)
        target_ts = np.zeros(S, dtype=np.int64)
        user = np.zeros(S, dtype=np.int64)
        seen_ptr = [0]
        seen: list[np.ndarray] = []
        for s, (u, items, ts, pos) in enumerate(self.rows):
            lo = max(0, pos - L)
            w = pos - lo  # real items in the window; the rest is left padding
            hist[s, L - w:] = items[lo:pos]
            hist_ts[s, L - w:] = ts[lo:pos]
            target[s], target_ts[s], user[s] = items[pos], ts[pos], u
            if self.with_seen:
                prev = np.unique(items[:pos])
                seen.append(prev)
                seen_ptr.append(seen_ptr[-1] + len(prev))
        out = SampleSet(torch.from_numpy(hist), torch.from_numpy(hist_ts), torch.from_numpy(target),
                        torch.from_numpy(target_ts), torch.from_numpy(user))
        if self.with_seen:
            out.seen_ptr = torch.as_tensor(seen_ptr, dtype=torch.int64)
            out.seen_items = torch.from_numpy(np.concatenate(seen) if seen else np.zeros(0, dtype=np.int64))
        return out


def split_users(users: list[int], seed: int, test_frac: float = 0.2, val_frac: float = 0.1) -> tuple[list, list, list]:
    """Seeded user-level split: ``test_frac`` of all users for test, then ``val_frac`` of the remaining
    (training) users for validation. Returns sorted (train, val, test) user lists, pairwise disjoint."""
    users = sorted(int(u) for u in users)
    rng = np.random.default_rng(seed)
    perm = [users[i] for i in rng.permutation(len(users))]
    n_test = int(round(test_frac * len(users)))
    test, rest = perm[:n_test], perm[n_test:]
    n_val = int(round(val_frac * len(rest)))
    val, train = rest[:n_val], rest[n_val:]
    return sorted(train), sorted(val), sorted(test)


def target_positions(n: int, k: int, seq_len: int, rng: np.random.Generator) -> list[int]:
    """Official rule: up to ``k`` distinct random positions >= seq_len; a sequence of <= seq_len items gives
    only its last position. Sorted ascending."""
    if n <= seq_len:
        return [n - 1]
    cand = np.arange(seq_len, n)
    take = min(k, len(cand))
    return sorted(int(p) for p in rng.choice(cand, size=take, replace=False))


def protocol_p(seqs: Sequences, seed: int = 0, seq_len: int = 50, train_targets: int = 10,
               test_frac: float = 0.2, val_frac: float = 0.1) -> Split:
    """The paper's protocol (module docstring). Users with fewer than 2 items are skipped."""
    users = [u for u, (items, _) in seqs.items() if len(items) >= 2]
    tr, va, te = split_users(users, seed, test_frac, val_frac)
    rng = np.random.default_rng([seed, 1])  # positions: an independent stream from the split
    sets = {}
    for name, group, k in (("train", tr, train_targets), ("val", va, 1), ("test", te, 1)):
        b = _Builder(seq_len)
        for u in group:
            items, ts = seqs[u]
            for p in target_positions(len(items), k, seq_len, rng):
                b.add(u, items, ts, p)
        sets[name] = b.build()
    info = {"users": {"train": len(tr), "val": len(va), "test": len(te)},
            "samples": {k: len(v) for k, v in sets.items()}, "seed": seed}
    log.info("protocol P: %s", info)
    return Split("P", sets["train"], sets["val"], sets["test"], info)


def protocol_l(seqs: Sequences, seq_len: int = 50, filter_seen: bool = True, max_train_per_user: int | None = None,
               seed: int = 0) -> Split:
    """Chronological leave-one-out (module docstring). Users need >= 3 items. ``max_train_per_user`` keeps only
    the most recent training targets of each user (None = all)."""
    tr, va, te = _Builder(seq_len), _Builder(seq_len, filter_seen), _Builder(seq_len, filter_seen)
    n_users = 0
    for u in sorted(seqs):
        items, ts = seqs[u]
        n = len(items)
        if n < 3:
            continue
        n_users += 1
        first = 1 if max_train_per_user is None else max(1, n - 2 - max_train_per_user)
        for p in range(first, n - 2):
            tr.add(u, items, ts, p)
        va.add(u, items, ts, n - 2)
        te.add(u, items, ts, n - 1)
    sets = {"train": tr.build(), "val": va.build(), "test": te.build()}
    info = {"users": n_users, "samples": {k: len(v) for k, v in sets.items()}, "filter_seen": filter_seen}
    log.info("protocol L: %s", info)
    return Split("L", sets["train"], sets["val"], sets["test"], info)


def build_split(protocol: str, seqs: Sequences, seed: int = 0, seq_len: int = 50, **kw) -> Split:
    if protocol.upper() == "P":
        return protocol_p(seqs, seed=seed, seq_len=seq_len, **kw)
    if protocol.upper() == "L":
        return protocol_l(seqs, seq_len=seq_len, seed=seed, **kw)
    raise ValueError(f"unknown protocol {protocol!r}; expected P or L")
