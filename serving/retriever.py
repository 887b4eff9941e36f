"""Retriever: top-K items by inner product for a batch of user vectors, excluding seen items on request.

``MilvusRetriever`` searches t2diff.index.ItemIndex at the *same version* as the encoder that produced the
vector (the collection of that version, kept searchable through its grace period after a swap), so a
request that straddles a model swap never mixes a new user vector with old item vectors.
``ExactRetriever`` is brute force in process, for a checkpoint source (e.g. the SASRec control) whose
catalogue is small and has no collection of its own.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving.types import BackendUnavailable, SearchResult

log = logging.getLogger(__name__)


class Searcher(Protocol):
    def search(self, vectors: Any, k: int, exclude: list[list[int]] | None = None,
               version: Any = None) -> list[list[tuple[int, float]]]: ...


class Retriever:
    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher

    def search_batch(self, queries: list[tuple]) -> list[SearchResult]:
        """queries: (vector (D,), k, exclude raw ids, version[, deadline]). One backend call per distinct
        version; a query past its deadline (time.time()) is shed, not searched."""
        t0 = time.perf_counter()
        out: list[SearchResult | None] = [None] * len(queries)
        by_version: dict[Any, list[int]] = {}
        now = time.time()
        for j, q in enumerate(queries):
            if len(q) > 4 and q[4] is not None and q[4] <= now:
                out[j] = SearchResult([], q[3], shed=True)
                continue
            by_version.setdefault(q[3], []).append(j)
        for version, js in by_version.items():
            vecs = np.asarray([queries[j][0] for j in js], dtype=np.float32)  # (B, D)
            kmax = max(queries[j][1] for j in js)
            try:
                rows = self.searcher.search(vecs, kmax, [queries[j][2] for j in js], version=version)
            except BackendUnavailable:
                raise
            except Exception as e:
                raise BackendUnavailable("index_unavailable", f"{type(e).__name__}: {e}") from e
            for j, row in zip(js, rows):
                out[j] = SearchResult(row[: queries[j][1]], version)
        ms = (time.perf_counter() - t0) * 1000.0
        for r in out:
            r.search_ms = ms  # type: ignore[union-attr]
        return out  # type: ignore[return-value]


class ExactRetriever:
    """Exact inner-product top-K over an in-memory (N, D) matrix."""

    def __init__(self, raw_ids: np.ndarray, vectors: np.ndarray, version: Any = None) -> None:
        self.raw_ids = np.asarray(raw_ids, dtype=np.int64)  # (N,)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D)
        self.version = version
        self._pos = {int(r): i for i, r in enumerate(self.raw_ids)}

    def search(self, vectors: Any, k: int, exclude: list[list[int]] | None = None,
               version: Any = None) -> list[list[tuple[int, float]]]:
        if version is not None and self.version is not None and version != self.version:
            raise BackendUnavailable("index_unavailable", f"have version {self.version}, asked for {version}")
        q = np.asarray(vectors, dtype=np.float32)
        scores = q @ self.vectors.T  # (B, N)
        out = []
        for b in range(len(q)):
            s = scores[b]
            for x in (exclude[b] if exclude else []):
                p = self._pos.get(int(x))
                if p is not None:
                    s[p] = -np.inf
            kk = min(k, len(s))
            top = np.argpartition(-s, kk - 1)[:kk]
            top = top[np.argsort(-s[top], kind="stable")]
            out.append([(int(self.raw_ids[i]), float(s[i])) for i in top if np.isfinite(s[i])])
        return out

    @classmethod
    def from_model(cls, model: Any, catalog: Any, version: Any = None) -> "ExactRetriever":
        import torch

        with torch.inference_mode():
            e_i = model.encode_items().float().cpu().numpy()  # (N+1, D), row 0 = padding
        return cls(catalog.raw_ids, e_i[1:], version)


def milvus_searcher(config_path: Path | None, uri: str | None = None, collection_prefix: str | None = None) -> Any:
    from t2diff.index import IndexSettings, ItemIndex

    settings = IndexSettings.load(config_path, key="index")
    over: dict[str, Any] = {}
    if collection_prefix:
        over = {"collection_prefix": collection_prefix, "alias": f"{collection_prefix}_live"}
    try:
        return ItemIndex(uri, settings=settings, **over)
    except Exception as e:
        raise BackendUnavailable("index_unavailable", f"cannot open index: {e}") from e
