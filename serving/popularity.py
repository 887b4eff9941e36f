"""Popularity candidates: the fallback of every arm (and an arm of its own if configured).

Lives in the ingress process on purpose: it must answer when Feast, Milvus or the encoder are down, so it
depends on nothing but a ranked array in memory.
"""
from __future__ import annotations

import logging
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)


class PopularitySource:
    def __init__(self, item_ids: Iterable[int], scores: Iterable[float], name: str = "popularity") -> None:
        ids = np.asarray(list(item_ids), dtype=np.int64)
        sc = np.asarray(list(scores), dtype=np.float64)
        if ids.shape != sc.shape:
            raise ValueError("item_ids and scores differ in length")
        order = np.argsort(-sc, kind="stable")
        self.name = name
        self.item_ids, self.scores = ids[order], sc[order]

    def top(self, k: int, exclude: Iterable[int] | None = None) -> list[tuple[int, float]]:
        ex = set(int(x) for x in exclude) if exclude else set()
        out: list[tuple[int, float]] = []
        for i, s in zip(self.item_ids[: k + len(ex)].tolist(), self.scores[: k + len(ex)].tolist()):
            if i not in ex:
                out.append((i, s))
                if len(out) == k:
                    break
        return out

    @classmethod
    def from_counts(cls, items: np.ndarray, ts_ms: np.ndarray | None = None, recent_days: float | None = 30.0,
                    name: str = "popularity") -> "PopularitySource":
        """Interaction counts, over the last ``recent_days`` of the data when timestamps are given (what is
        popular now, not over the whole log); scores are shares of that window's interactions."""
        items = np.asarray(items, dtype=np.int64)
        if ts_ms is not None and recent_days is not None and len(items):
            ts_ms = np.asarray(ts_ms, dtype=np.int64)
            items = items[ts_ms >= ts_ms.max() - int(recent_days * 86_400_000)]
        ids, counts = np.unique(items, return_counts=True)
        return cls(ids, counts / max(1, counts.sum()), name=name)

    @classmethod
    def from_dataset(cls, dataset: str, recent_days: float | None = 30.0) -> "PopularitySource":
        from t2diff.data import load_dataset

        inter, _ = load_dataset(dataset)
        src = cls.from_counts(inter.item, inter.ts_ms, recent_days)
        log.info("popularity from %s: %d items (last %s days)", dataset, len(src.item_ids), recent_days)
        return src
