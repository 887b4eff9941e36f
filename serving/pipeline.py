"""The recall path as a plain class: route -> encode -> search, with every degraded mode answered by the
fallback source. The ingress deployment runs it with Ray Serve handles as ``encode`` / ``search`` (topology
"split") or as one ``recall_fn`` (topology "fused"); tests run it with in-process fakes.

Degraded modes (answered 200 with ``fallback: true`` and a reason, counted in ``t2diff_serve_fallbacks``):
unknown_user, empty_history, features_unavailable, model_unavailable, index_unavailable, encoder_error,
search_error, recall_error (the fused call itself failed), timeout, overloaded. Only the popularity source itself
failing would leave nothing to answer with, and it is an in-memory array.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from serving.ab import ABRouter
from serving.feedback import RequestIds
from serving.metrics import ServingMetrics
from serving.popularity import PopularitySource
from serving.schemas import Candidate, RecallRequest, RecallResponse
from serving.settings import ServingSettings
from serving.types import BackendUnavailable, EncodeResult, SearchResult

log = logging.getLogger(__name__)

EncodeFn = Callable[[str, int], Awaitable[EncodeResult]]  # (source, user_id)
SearchFn = Callable[[str, list[float], int, list[int], "int | str | None"], Awaitable[SearchResult]]
# Topology "fused": encode + search in one backend call (source, user_id, k, exclude_seen) -> the encoder's
# result and the search result, or the fallback reason when the search could not run (serving/recaller.py).
RecallFn = Callable[[str, int, int, bool], Awaitable["tuple[EncodeResult, SearchResult | str | None]"]]


class UnknownUser(LookupError):
    """Raised instead of falling back when ``settings.unknown_user == "reject"`` (the ingress maps it to 404)."""


class RecallPipeline:
    def __init__(self, settings: ServingSettings, router: ABRouter, popularity: PopularitySource,
                 metrics: ServingMetrics, ids: RequestIds, encode: EncodeFn | None, search: SearchFn | None,
                 recall_fn: RecallFn | None = None) -> None:
        """``encode`` + ``search`` (two backend calls, topology "split") or ``recall_fn`` (one, "fused")."""
        if recall_fn is None and (encode is None or search is None):
            raise ValueError("need encode and search, or recall_fn")
        self.s, self.router, self.popularity, self.m, self.ids = settings, router, popularity, metrics, ids
        self.encode, self.search, self.recall_fn = encode, search, recall_fn
        self.last_backend_failure: float | None = None  # time.time() of the last fallback caused by a backend

    # Fallbacks that say something is broken (as opposed to a cold user, which is normal traffic).
    BACKEND_REASONS = {"features_unavailable", "model_unavailable", "index_unavailable", "encoder_error",
                       "search_error", "recall_error", "timeout", "overloaded"}

    async def recall(self, req: RecallRequest) -> RecallResponse:
        t0 = time.perf_counter()
        k = req.k if req.k is not None else self.s.k_default
        arm = self.router.assign(req.user_id)
        src = self.s.sources[arm.source]
        source = arm.source
        items: list[tuple[int, float]] | None
        if src.kind == "popularity":
            items, reason, version, seen = self.popularity.top(k), None, None, []
        else:
            items, reason, version, seen = await self._model(arm.source, req.user_id, k, req.exclude_seen)
        if reason is not None:
            if reason == "unknown_user" and self.s.unknown_user == "reject":
                self.m.bad_requests.labels("recall", "unknown_user").inc()
                raise UnknownUser(f"user {req.user_id} has no session features")
            self.m.fallbacks.labels(arm.name, reason).inc()
            if reason in self.BACKEND_REASONS:
                self.last_backend_failure = time.time()
            items = self.popularity.top(k, exclude=seen if req.exclude_seen else None)
            source, version = self.s.fallback_source, None
        rid = self.ids.new(arm.name, user_id=req.user_id, source=source,
                           model_version=None if version is None else str(version))
        self.m.requests.labels(arm.name).inc()
        self.m.candidates.labels(arm.name).inc(len(items))
        self.m.latency.labels("ingress", "end_to_end").observe(time.perf_counter() - t0)
        return RecallResponse(
            request_id=rid, user_id=req.user_id, arm=arm.name, source=source,
            model_version=None if version is None else str(version),
            items=[Candidate(item_id=i, score=s) for i, s in items],
            fallback=reason is not None, fallback_reason=reason)

    async def _model(self, source: str, user_id: int, k: int, exclude_seen: bool):
        """(items or None, fallback reason or None, model version, seen items) from a model source."""
        if self.recall_fn is not None:
            got = await self._guard("recaller", self.recall_fn(source, user_id, k, exclude_seen))
            if isinstance(got, str):
                return None, got, None, []
            enc, res = got
        else:
            enc = await self._guard("encoder", self.encode(source, user_id))  # type: ignore[misc]
            res = None
        if isinstance(enc, str):
            return None, enc, None, []
        self.m.latency.labels("encoder", "encode").observe(enc.encode_ms / 1000.0)
        if enc.status != "ok":
            return None, enc.status, None, enc.seen
        self.m.set_version(source, None if enc.version is None else str(enc.version))
        if self.recall_fn is None:
            exclude = enc.seen if exclude_seen else []
            res = await self._guard("retriever",
                                    self.search(source, enc.vector, k, exclude, enc.version))  # type: ignore[misc]
        elif isinstance(res, str):
            self.m.errors.labels("retriever", res).inc()  # the fused replica caught it; count it as split would
        if res is None:  # fused: an "ok" encode always comes with a search result or a reason
            return None, "recall_error", None, enc.seen
        if isinstance(res, str):
            return None, res, None, enc.seen
        if res.shed:
            return None, "overloaded", None, enc.seen
        self.m.latency.labels("retriever", "search").observe(res.search_ms / 1000.0)
        return res.items, None, enc.version, enc.seen

    async def _guard(self, deployment: str, aw: Awaitable):
        """The awaited result, or the fallback reason (a string) when the backend failed or was too slow."""
        try:
            return await asyncio.wait_for(aw, timeout=self.s.timeout_s)
        except asyncio.TimeoutError:
            self.m.errors.labels(deployment, "timeout").inc()
            return "timeout"
        except BackendUnavailable as e:
            self.m.errors.labels(deployment, e.kind).inc()
            return e.kind
        except Exception as e:  # Ray wraps remote exceptions; find a BackendUnavailable cause if there is one
            kind = _unwrap_kind(e)
            if kind is None:
                log.exception("%s failed", deployment)
                kind = {"encoder": "encoder_error", "retriever": "search_error"}.get(deployment, "recall_error")
            self.m.errors.labels(deployment, kind).inc()
            return kind


def _unwrap_kind(e: BaseException) -> str | None:
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 5:
        if isinstance(cur, BackendUnavailable):
            return cur.kind
        cause = getattr(cur, "cause", None)  # ray.exceptions.RayTaskError.cause
        cur = cause if isinstance(cause, BaseException) else cur.__cause__
        seen += 1
    # last resort: the remote traceback text names the kind ("index_unavailable: ...")
    text = str(e)
    for kind in ("index_unavailable", "features_unavailable", "model_unavailable"):
        if f"{kind}: " in text:
            return kind
    return None
