"""The recall path as a plain class: route -> encode -> search, with every degraded mode answered by the
fallback source. The ingress deployment runs it with Ray Serve handles as ``encode`` / ``search``; tests run it
with in-process fakes.

Degraded modes (answered 200 with ``fallback: true`` and a reason, counted in ``t2diff_serve_fallbacks``):
unknown_user, empty_history, features_unavailable, model_unavailable, index_unavailable, encoder_error,
search_error, timeout. Only the popularity source itself failing would leave nothing to answer with, and it
is an in-memory array.
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


class UnknownUser(LookupError):
    """Raised instead of falling back when ``settings.unknown_user == "reject"`` (the ingress maps it to 404)."""


class RecallPipeline:
    def __init__(self, settings: ServingSettings, router: ABRouter, popularity: PopularitySource,
                 metrics: ServingMetrics, ids: RequestIds, encode: EncodeFn, search: SearchFn) -> None:
        self.s, self.router, self.popularity, self.m, self.ids = settings, router, popularity, metrics, ids
        self.encode, self.search = encode, search
        self.last_backend_failure: float | None = None  # time.time() of the last fallback caused by a backend

    # Fallbacks that say something is broken (as opposed to a cold user, which is normal traffic).
    BACKEND_REASONS = {"features_unavailable", "model_unavailable", "index_unavailable", "encoder_error",
                       "search_error", "timeout", "overloaded"}

    async def recall(self, req: RecallRequest) -> RecallResponse:
        t0 = time.perf_counter()
        k = req.k if req.k is not None else self.s.k_default
        arm = self.router.assign(req.user_id)
        src = self.s.sources[arm.source]
        items: list[tuple[int, float]] | None = None
        reason: str | None = None
        version = None
        seen: list[int] = []
        if src.kind == "popularity":
            items = self.popularity.top(k)
            source = arm.source
        else:
            source = arm.source
            enc = await self._guard("encoder", self.encode(arm.source, req.user_id))
            if isinstance(enc, str):
                reason = enc
            else:
                self.m.latency.labels("encoder", "encode").observe(enc.encode_ms / 1000.0)
                seen = enc.seen
                if enc.status != "ok":
                    reason = enc.status
                else:
                    version = enc.version
                    self.m.set_version(arm.source, None if version is None else str(version))
                    exclude = seen if req.exclude_seen else []
                    res = await self._guard("retriever", self.search(arm.source, enc.vector, k, exclude, version))
                    if isinstance(res, str):
                        reason = res
                    elif res.shed:
                        reason = "overloaded"
                    else:
                        self.m.latency.labels("retriever", "search").observe(res.search_ms / 1000.0)
                        items = res.items
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
                kind = f"{'encoder' if deployment == 'encoder' else 'search'}_error"
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
