"""Degraded mode of the demo: arms answered in process when the serving app cannot be started.

Same arms, same checkpoints, exact inner-product search over the whole catalogue, histories built from the
events the demo itself produced (what the feature consumer would hold with zero lag). The report marks the
mode (``client_mode: in_process``) and lists serving as skipped: no latency figure here says anything about the
HTTP service. The recall itself is serving's, run without Ray: its model provider, user encoder (given the
request moment as the time-lag clock) and exact retriever; only the histories and the arm choice are the demo's.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Callable

from serving.components import ExactByVersion
from serving.encoder import History, ModelProvider, UserEncoder
from serving.retriever import Retriever
from serving.types import BackendUnavailable
from t2diff.demo.moments import watched_mask
from t2diff.demo.replay import Answer

log = logging.getLogger(__name__)

POSITIVE = {"click", "play", "like", "follow"}  # the feature consumer's default positive types


class _Source:
    """One model source answered in process by serving's own plain classes: :class:`UserEncoder` (history
    padding, time lags, the model's user tower) over the demo's histories, then exact inner-product search
    (:class:`ExactByVersion`) over the whole catalogue of the same model version."""

    def __init__(self, provider: ModelProvider, features: Any) -> None:
        self.provider = provider
        # A fixed noise draw per request: two arms on one model version give one answer (paired comparison).
        self.encoder = UserEncoder(provider, features, seed=0, reseed_per_batch=True)
        self.retriever = Retriever(ExactByVersion(provider))  # loads the provider's model now

    @property
    def version(self) -> str | None:
        lm = self.provider.current()
        return None if lm is None else str(lm.version)

    def recall(self, user_id: int, k: int, now_ms: int | None) -> list[int]:
        enc = self.encoder.encode_batch([user_id], now_ms=[now_ms])[0]
        if enc.status != "ok":
            return []  # unknown user / nothing the model knows: the popularity fallback answers
        res = self.retriever.search_batch([(enc.vector, k, [], enc.version)])[0]
        return [i for i, _ in res.items]


def _checkpoint_loader(path: Path) -> Callable[[Any], tuple[Any, dict[str, Any], str]]:
    def load(version: Any) -> tuple[Any, dict[str, Any], str]:
        from t2diff.model import load_checkpoint

        model, extra = load_checkpoint(path, map_location="cpu")
        return model, extra, f"file:{Path(path).name}"

    return load


def _registry_loader(registry: Any) -> Callable[[Any], tuple[Any, dict[str, Any], int]]:
    """Loads a registry version, remembering the last one: the retriever asks for exactly the version the
    encoder's provider has just loaded (one read of it, not two)."""
    last: dict[Any, tuple[Any, dict[str, Any], int]] = {}

    def load(version: Any) -> tuple[Any, dict[str, Any], int]:
        if version is None or version not in last:
            model, extra, meta = registry.load(version)
            last.clear()
            last[version] = (model, extra, int(meta.get("version", version)))
        return last[version]

    return load


class DirectRecall:
    """Duck-types RecallClient (``mode``, ``recall``, ``feedback``, ``errors``, ``switch_retries``, ``close``),
    and is the feature source (``histories``) of its own encoders."""

    mode = "in_process"

    def __init__(self, arms: list[dict[str, Any]], checkpoints: dict[str, Path], registry_root: Path | None,
                 popular_items: list[int], history_len: int = 50) -> None:
        import torch

        torch.set_num_threads(1)  # 2 cores shared with the trainer and the consumer; batch-1 encodes gain nothing
        self.arms = {a["name"]: a["source"] for a in arms}
        self.hist: dict[int, deque] = defaultdict(lambda: deque(maxlen=history_len))
        self.sources: dict[str, _Source] = {
            src: _Source(ModelProvider(_checkpoint_loader(Path(path))), self)
            for src, path in checkpoints.items() if Path(path).exists()}
        self.registry = None
        if registry_root is not None:
            from t2diff.registry import ModelRegistry

            self.registry = ModelRegistry(registry_root)
        self._next_poll = 0.0
        self.popular = list(popular_items)
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

    def histories(self, user_ids: list[int]) -> list[History | None]:
        """serving's FeatureSource over the demo's own events: what the feature consumer would hold, zero lag."""
        out: list[History | None] = []
        for u in user_ids:
            h = self.hist.get(int(u))
            out.append(History([i for i, _ in h], [t for _, t in h]) if h else None)
        return out

    def _registry_source(self) -> _Source | None:
        """The registry's latest version (polled every 2 s); None before the first publish."""
        if self.registry is None:
            return None
        if time.time() >= self._next_poll:
            self._next_poll = time.time() + 2.0
            reg = self.sources.get("t2diff")
            if reg is not None:
                reg.provider.refresh()  # cheap when LATEST has not moved; a failed load keeps the old version
            elif self.registry.latest() is not None:
                provider = ModelProvider(_registry_loader(self.registry), latest=self.registry.latest)
                self.sources["t2diff"] = _Source(provider, self)
        return self.sources.get("t2diff")

    def recall(self, user_id: int, k: int, arm: str | None, now_ms: int | None = None) -> Answer | None:
        src = self.arms.get(arm or "", "popularity")
        t0 = time.perf_counter()
        items: list[int] = []
        version = None
        source = self._registry_source() if src == "t2diff" else self.sources.get(src)
        if src == "t2diff" and source is None:
            source = self.sources.get("t2diff_frozen")  # no registry version yet: the warm start it came from
        if source is not None:
            version = source.version
            try:
                items = source.recall(user_id, k, now_ms)
            except BackendUnavailable as e:  # no item vectors for the version: answer with the fallback
                log.warning("in-process %s arm: %s", src, e)
                self.errors += 1
        fallback = False
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
    past = log_df[(log_df["time_ms"] < until_ms).to_numpy() & watched_mask(log_df)]
    return [int(x) for x in past["video_id"].value_counts().index[:n]]
