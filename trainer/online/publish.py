"""Publishing a version: registry directory, item vectors into Milvus, then the ``LATEST`` pointer.

Order matters for readers: the registry version is written first (not yet latest), then its item vectors are
built into a new Milvus collection and the alias switched, and only then ``LATEST`` moves. The index alias is
therefore the single source of truth for "which version is live": serving should take the model version from
``ItemIndex.live_version()`` and load that registry version, so user tower and item vectors always match.

Publishing runs on a background thread from a CPU snapshot (model copy + item vectors), so training keeps
going while Milvus builds the collection; at most one publish is in flight. A failed publish (Milvus down, disk
full) is logged and counted (``t2diff_trainer_publish_failures_total``), ``LATEST`` stays where it was, and
training goes on: the next interval publishes a newer version, so an outage of the index never stops learning.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any

import numpy as np
import torch

from t2diff.data import Catalog
from t2diff.index import ItemIndex
from t2diff.registry import ModelRegistry
from trainer.online import telemetry

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, registry: ModelRegistry, index: ItemIndex | None, background: bool = True) -> None:
        self.registry, self.index, self.background = registry, index, background
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # last failure (kept for callers that must know)
        self.failures = 0
        self.last_failed = False  # the most recent publish failed: its events are not live yet
        self.history: list[dict[str, Any]] = []  # one row per publish
        self.freshness: list[np.ndarray] = []  # seconds from produce time to searchable, per event

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @torch.no_grad()
    def submit(self, model: torch.nn.Module, catalog: Catalog, extra: dict[str, Any], metrics: dict[str, Any],
               offsets: dict[int, int], produce_ts_ms: np.ndarray, **meta: Any) -> bool:
        """Snapshot now, publish (in the background). False if the previous publish is still running."""
        if self.busy:
            return False
        was = model.training
        model.eval()
        vectors = model.encode_items()[1:].float().cpu().numpy()  # (N, D), row i = catalog index i + 1
        model.train(was)
        snap = copy.deepcopy(model).cpu().eval()
        cat = Catalog.from_dict(catalog.to_dict())
        job = dict(model=snap, catalog=cat, vectors=vectors, extra={**extra, "catalog": cat.to_dict()},
                   metrics=metrics, offsets=dict(offsets), produce_ts_ms=np.asarray(produce_ts_ms), meta=meta,
                   t_submit=time.time())
        if self.background:
            self._thread = threading.Thread(target=self._run, args=(job,), name="publisher", daemon=True)
            self._thread.start()
        else:
            self._run(job)
        return True

    def _run(self, job: dict[str, Any]) -> None:
        try:
            t0 = time.time()
            version = self.registry.publish(job["model"], extra=job["extra"], metrics=job["metrics"],
                                            offsets=job["offsets"], set_latest=False, **job["meta"])
            t_reg = time.time()
            if self.index is not None:
                self.index.publish(version, job["catalog"].raw_ids, job["vectors"])
            t_live = time.time()
            self.registry.set_latest(version)
            fresh = t_live - job["produce_ts_ms"] / 1000.0  # (E,) seconds
            for x in fresh:
                telemetry.FRESHNESS_S.observe(float(x))
            self.freshness.append(fresh)
            telemetry.PUBLISH_S.observe(t_live - t0)
            telemetry.VERSION.set(version)
            row = {"version": version, "registry_s": t_reg - t0, "index_s": t_live - t_reg, "events": len(fresh),
                   "items": job["catalog"].num_items, "t_live": t_live,
                   "fresh_p50_s": float(np.percentile(fresh, 50)) if len(fresh) else None,
                   "fresh_max_s": float(fresh.max()) if len(fresh) else None}
            self.history.append(row)
            self.last_failed = False
            log.info("version %d live: %d items, registry %.2fs, index %.2fs, %d new events (freshness p50 %s s)",
                     version, row["items"], row["registry_s"], row["index_s"], row["events"],
                     f"{row['fresh_p50_s']:.1f}" if row["fresh_p50_s"] is not None else "-")
        except Exception as e:  # noqa: BLE001 -- counted and logged; training continues (see module doc)
            log.exception("publish failed; LATEST and the index alias stay on the previous version")
            telemetry.PUBLISH_FAILURES.inc()
            self.failures += 1
            self.last_failed = True
            self.error = e

    def raise_if_failed(self) -> None:
        if self.error is not None:
            e, self.error = self.error, None
            raise RuntimeError("publishing a version failed") from e

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def freshness_all(self) -> np.ndarray:
        return np.concatenate(self.freshness) if self.freshness else np.zeros(0)
