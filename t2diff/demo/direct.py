"""Degraded mode of the demo: arms answered in process when the serving app cannot be started.

Same arms, same checkpoints, exact inner-product search over the whole catalogue, histories built from the
events the demo itself produced (what the feature consumer would hold with zero lag). The report marks the
mode (``client_mode: in_process``) and lists serving as skipped: no latency figure here says anything about the
HTTP service.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

from t2diff.demo.replay import Answer

log = logging.getLogger(__name__)

POSITIVE = {"click", "play", "like", "follow"}  # the feature consumer's default positive types


class _Model:
    def __init__(self, model: Any, catalog: Any, version: str) -> None:
        import torch

        self.model, self.catalog, self.version = model.eval(), catalog, version
        with torch.no_grad():
            self.items = model.encode_items()[1:].float()  # (N, D), row i = model index i + 1
        self.seq_len = int(getattr(model, "cfg", None).seq_len if hasattr(model, "cfg") else 50)

    def recall(self, hist: list[tuple[int, int]], now_ms: int, k: int) -> list[int]:
        import torch

        known = [(self.catalog.index(i), t) for i, t in hist if i in self.catalog][-self.seq_len:]
        if not known:
            return []
        L = self.seq_len
        h = torch.zeros(1, L, dtype=torch.long)  # (1, L) left-padded, most recent last
        ht = torch.zeros(1, L, dtype=torch.long)
        h[0, L - len(known):] = torch.tensor([i for i, _ in known])
        ht[0, L - len(known):] = torch.tensor([t for _, t in known])
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            u = self.model.encode_users(h, ht, torch.tensor([now_ms]), generator=g)  # (1, D)
            top = torch.topk(u.float() @ self.items.T, min(k, self.items.shape[0]), dim=1).indices[0]
        return [int(x) for x in self.catalog.raw((top + 1).numpy())]


class DirectRecall:
    """Duck-types RecallClient (``mode``, ``recall``, ``feedback``, ``errors``, ``switch_retries``, ``close``)."""

    mode = "in_process"

    def __init__(self, arms: list[dict[str, Any]], checkpoints: dict[str, Path], registry_root: Path | None,
                 popular_items: list[int], history_len: int = 50) -> None:
        import torch

        from t2diff.data import Catalog
        from t2diff.model import load_checkpoint

        torch.set_num_threads(1)  # 2 cores shared with the trainer and the consumer; batch-1 encodes gain nothing
        self.arms = {a["name"]: a["source"] for a in arms}
        self.models: dict[str, _Model] = {}
        for src, path in checkpoints.items():
            if Path(path).exists():
                m, extra = load_checkpoint(path, map_location="cpu")
                self.models[src] = _Model(m, Catalog.from_dict(extra["catalog"]), f"file:{Path(path).name}")
        self.registry = None
        if registry_root is not None:
            from t2diff.registry import ModelRegistry

            self.registry = ModelRegistry(registry_root)
        self._reg_version: int | None = None
        self._next_poll = 0.0
        self.popular = list(popular_items)
        self.hist: dict[int, deque] = defaultdict(lambda: deque(maxlen=history_len))
        self.errors = 0
        self.switch_retries = 0

    def observe(self, event: Any) -> None:
        et = getattr(event.event_type, "value", event.event_type)
        if et in POSITIVE:
            h = self.hist[event.user_id]
            if not h or h[-1] != (event.item_id, event.ts_ms):
                h.append((event.item_id, event.ts_ms))

    def observe_frame(self, frame: Any) -> None:
        """Bulk :meth:`observe` over a streaming.replay event frame (the warm days)."""
        pos = frame[frame["event_type"].isin(list(POSITIVE))].drop_duplicates(["user_id", "item_id", "ts_ms"])
        for u, g in pos.groupby("user_id", sort=False):
            self.hist[int(u)].extend(zip(g["item_id"].tolist(), g["ts_ms"].tolist()))

    def _registry_model(self) -> _Model | None:
        if self.registry is None:
            return None
        if time.time() >= self._next_poll:
            self._next_poll = time.time() + 2.0
            v = self.registry.latest()
            if v is not None and v != self._reg_version:
                from t2diff.data import Catalog

                model, extra, _ = self.registry.load(v)
                self.models["t2diff"] = _Model(model, Catalog.from_dict(extra["catalog"]), str(v))
                self._reg_version = v
        return self.models.get("t2diff") if self._reg_version is not None else None

    def recall(self, user_id: int, k: int, arm: str | None, now_ms: int | None = None) -> Answer | None:
        src = self.arms.get(arm or "", "popularity")
        t0 = time.perf_counter()
        items: list[int] = []
        version = None
        fallback = False
        model = self._registry_model() if src == "t2diff" else self.models.get(src)
        if src == "t2diff" and model is None:
            model = self.models.get("t2diff_frozen")  # no registry version yet: the warm start it came from
        if model is not None:
            items = model.recall(list(self.hist.get(user_id, ())), now_ms or 0, k)
            version = model.version
        if not items:
            items, fallback = self.popular[:k], src != "popularity"
        return Answer(arm or "popular", items, 1000 * (time.perf_counter() - t0), version, fallback,
                      f"direct-{user_id}-{arm}")

    def feedback(self, moment: Any, answer: Answer) -> int:
        return 0  # no app to report to

    def close(self) -> None:
        pass


def popular_items(log_df: Any, until_ms: int, n: int = 1000) -> list[int]:
    """Most watched items before ``until_ms`` (the warm days): the popularity arm without future knowledge."""
    past = log_df[(log_df["time_ms"] < until_ms) & ((log_df["is_click"] == 1) | (log_df["long_view"] == 1))]
    return [int(x) for x in past["video_id"].value_counts().index[:n]]
