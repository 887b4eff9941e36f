"""Ray Serve deployments, one concern each, composed by handles (see serving/app.py):

    Ingress (FastAPI: /recall /feedback /healthz /metrics; A/B router, fallback, feedback log)
      -> UserEncoder_<source>  (Feast + user tower, @serve.batch, follows the registry, user_config pin)
      -> Retriever_<source>    (Milvus / exact top-K at the encoder's version, @serve.batch)

or, with ``serving.topology: fused`` (one hop per request instead of two; serving/recaller.py):

    Ingress -> Recaller_<source>  (the same UserEncoder and Retriever classes in one replica)

or, with ``serving.topology: local`` (no hop: the Recaller classes run inside the ingress replica):

    Ingress [+ RecallerReplica per source]

Each wraps a plain class from this package; the logic and its tests live there.

No ``from __future__ import annotations`` here: Ray pickles the ingress class by value, and FastAPI must see
the real request/response model classes in the route signatures, not strings to resolve later.
"""
import asyncio
import logging
import time
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve

from serving.ingress import HttpError
from serving.schemas import FeedbackRequest, FeedbackResponse, Health, RecallRequest, RecallResponse
from serving.settings import ServingSettings
from serving.types import EncodeResult, SearchResult

log = logging.getLogger(__name__)


class _EncoderReplica:
    """What an encoder replica does besides encoding: build the user tower on the right device, follow the
    registry on a poller, apply ``user_config``, batch concurrent calls. Shared by the UserEncoder and the
    Recaller; each defines ``_batch(list) -> list`` and calls ``self._call(one)``."""

    def _init_encoder(self, source: str, settings: dict[str, Any]) -> None:
        import torch

        from serving import components

        self.s = ServingSettings.model_validate(settings)
        torch.set_num_threads(self.s.torch_threads)
        device = "cuda" if self.s.num_gpus_encoder > 0 and torch.cuda.is_available() else "cpu"
        self.source = source
        self.encoder = components.encoder(self.s, source, device=device)
        self.encoder.warmup()
        self.poll_s = self.s.sources[source].poll_s
        # @serve.batch keeps ONE queue per decorated function and runs a batch on its first request's `self`:
        # decorated at class level, two instances in one process (topology "local": a Recaller per source in
        # the ingress replica) would share a queue and encode one source's users with the other's model.
        # Wrapping the bound method gives each instance its own queue.
        self._run = serve.batch(max_batch_size=self.s.batch.max_batch_size,
                                batch_wait_timeout_s=self.s.batch.wait_ms / 1000.0)(self._batch)
        self._max_batch = self.s.batch.max_batch_size
        self._init_pool()
        self._poller: Any = None  # started on the first request, inside the replica's loop

    def _init_pool(self) -> None:
        self._pool: Any = None
        if self.s.batch.threads:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.s.batch.threads, thread_name_prefix=f"batch-{self.source}")

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a worker thread: the replica's own pool (``batch.threads``) or asyncio's default."""
        if self._pool is None:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _call(self, one: Any) -> Any:
        """One request through the batch queue, or straight to ``_batch`` when batches are of one (nothing to
        batch): Ray's queue costs the event loop ~10 % of an ingress's GIL time at 200 rps, and with the user
        tower and the search both releasing the GIL, concurrent single-request batches in worker threads overlap
        (benchmarks/serve.md, runs 43-45)."""
        if self._max_batch == 1:
            return (await self._batch([one]))[0]
        return await self._run(one)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``user_config``: {"version": pin or null (follow the registry), "poll_s", "max_batch_size",
        "wait_ms", "num_steps"}. Applied in place: no replica restart, no dropped request."""
        if "poll_s" in user_config:
            self.poll_s = float(user_config["poll_s"])
        if "max_batch_size" in user_config:
            self._max_batch = int(user_config["max_batch_size"])
            self._run.set_max_batch_size(self._max_batch)
        if "wait_ms" in user_config:
            self._run.set_batch_wait_timeout_s(float(user_config["wait_ms"]) / 1000.0)
        if "num_steps" in user_config:
            self.encoder.num_steps = user_config["num_steps"]
        if "version" in user_config:
            self.encoder.provider.pin(user_config["version"])

    def _start_poller(self) -> None:
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await asyncio.to_thread(self.encoder.provider.refresh)
            except Exception:  # never let the poller die
                log.exception("registry poll failed")

    def status(self) -> dict[str, Any]:
        lm = self.encoder.provider.current()
        return {"version": lm.version if lm else None, "pinned": self.encoder.provider.pinned,
                "last_error": self.encoder.provider.last_error}


@serve.deployment(name="UserEncoder", ray_actor_options={"num_cpus": 0})
class EncoderDeployment(_EncoderReplica):
    def __init__(self, source: str, settings: dict[str, Any]) -> None:
        from serving import components

        self._init_encoder(source, settings)
        components.settle_gc(self.s.gc_threshold, self.s.switch_interval_ms)

    async def _batch(self, reqs: list[tuple[int, float]]) -> list[EncodeResult]:
        # off the event loop so the next batch keeps filling while this one runs the user tower
        return await self._in_thread(self.encoder.encode_batch, [u for u, _ in reqs], [d for _, d in reqs])

    async def encode(self, user_id: int, deadline: float) -> EncodeResult:
        """``deadline``: time.time() past which the ingress no longer waits (it falls back); shed if reached."""
        self._start_poller()
        return await self._call((user_id, deadline))


class RecallerReplica(_EncoderReplica):
    """A UserEncoder and a Retriever in one process (serving/recaller.py says why): its own deployment in
    topology "fused", one instance per model source inside the ingress replica in topology "local"."""

    def __init__(self, source: str, settings: dict[str, Any]) -> None:
        from serving import components
        from serving.recaller import Recaller

        self._init_encoder(source, settings)
        retriever = components.retriever(self.s, source)
        getattr(retriever.searcher, "warm", lambda: None)()
        self.recaller = Recaller(self.encoder, retriever)
        components.settle_gc(self.s.gc_threshold, self.s.switch_interval_ms)

    async def _batch(self, queries: list[tuple]) -> list[tuple[EncodeResult, Any]]:
        if not self.s.batch.in_thread:
            return self.recaller.recall_batch(queries)
        return await self._in_thread(self.recaller.recall_batch, queries)

    async def recall(self, user_id: int, k: int, exclude_seen: bool, deadline: float) -> tuple[EncodeResult, Any]:
        self._start_poller()
        return await self._call((user_id, k, exclude_seen, deadline))


RecallerDeployment = serve.deployment(name="Recaller", ray_actor_options={"num_cpus": 0})(RecallerReplica)


@serve.deployment(name="Retriever", ray_actor_options={"num_cpus": 0})
class RetrieverDeployment:
    def __init__(self, source: str, settings: dict[str, Any]) -> None:
        from serving import components

        self.s = ServingSettings.model_validate(settings)
        self.retriever = components.retriever(self.s, source)
        getattr(self.retriever.searcher, "warm", lambda: None)()  # connect to Milvus before traffic
        self._search = serve.batch(max_batch_size=self.s.batch.max_batch_size,
                                   batch_wait_timeout_s=self.s.batch.wait_ms / 1000.0)(self._batch)
        components.settle_gc(self.s.gc_threshold, self.s.switch_interval_ms)

    async def _batch(self, queries: list[tuple]) -> list[SearchResult]:
        return await asyncio.to_thread(self.retriever.search_batch, queries)

    async def search(self, vector: list[float], k: int, exclude: list[int], version: Any,
                     deadline: Optional[float] = None) -> SearchResult:
        return await self._search((vector, k, exclude, version, deadline))


api = FastAPI(title="T2Diff recall", version="1",
              description="Candidate source for the feed: diffusion-conditioned user encoding + ANN recall, A/B arms.")


# Handlers are registered at import and BEFORE @serve.ingress (it captures the app when the class is
# decorated; Starlette also refuses middleware once the app has started). They reach the
# replica's IngressCore through serving.ingress.ACTIVE (an importable module: Ray pickles this one's
# decorated class by value, so a global here would not be the same object in the replica).


def _active_core() -> Any:
    import serving.ingress  # resolved in the replica at call time: the real module, not a pickled copy

    return serving.ingress.ACTIVE.get("core")


@api.exception_handler(RequestValidationError)
async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    core = _active_core()
    if core is not None:
        core.metrics.bad_requests.labels(request.url.path.strip("/") or "root", "validation").inc()
    errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
    return JSONResponse({"error": "invalid request", "detail": errors}, status_code=422)


@api.exception_handler(HttpError)
async def _http(request: Request, exc: HttpError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


class BodyLimit:
    """ASGI middleware: a body over ``max_body_bytes`` gets a 413 with a message, counted in bad_requests.

    Plain ASGI rather than ``@api.middleware("http")``: Starlette runs each request of such a middleware in an
    anyio task group whose cancel scope, CancelledError and traceback form reference cycles: ~40 of the ~110 cyclic
    objects per request an ingress replica made (gc.DEBUG_SAVEALL; the rest: the AOT package loader's per-call
    pytree, no longer used: t2diff/model/aot.py). At 200 rps
    the young-generation collections that freed them (~56k objects every ~2.5 s) stalled the replica 12-75 ms each:
    the p99 tail (benchmarks/serve.md, run 17).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        core = _active_core()
        limit = core.s.max_body_bytes if core is not None else 16_384
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if length.isdigit() and int(length) <= limit:
                return await self.app(scope, receive, send)
        elif scope["method"] in ("POST", "PUT", "PATCH"):  # no length given (chunked): read it here first
            messages, size = [], 0
            while True:
                m = await receive()
                messages.append(m)
                size += len(m.get("body", b""))
                if m["type"] != "http.request" or not m.get("more_body") or size > limit:
                    break
            if size <= limit:
                replay = iter(messages)

                async def receive_again() -> dict:
                    return next(replay, None) or await receive()

                return await self.app(scope, receive_again, send)
        else:
            return await self.app(scope, receive, send)
        if core is not None:
            core.metrics.bad_requests.labels(scope["path"].strip("/") or "root", "body_too_large").inc()
        await JSONResponse({"error": f"body larger than {limit} bytes"}, status_code=413)(scope, receive, send)


api.add_middleware(BodyLimit)


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class IngressDeployment:
    def __init__(self, settings: dict[str, Any], encoders: dict[str, Any], retrievers: dict[str, Any],
                 recallers: Optional[dict[str, Any]] = None, local: Optional[list[str]] = None) -> None:
        """``encoders`` + ``retrievers`` (topology "split") or ``recallers`` ("fused"): handles by source;
        ``local`` ("local"): the sources whose Recaller runs in this replica."""
        from serving import components
        from serving.deployments import RecallerReplica  # by reference in the replica (this class is by value)
        from serving.ingress import IngressCore

        self.s = ServingSettings.model_validate(settings)
        self.encoders, self.retrievers, self.recallers = encoders, retrievers, recallers or {}
        self.local = {name: RecallerReplica(name, settings) for name in local or []}
        if self.s.topology == "fused":
            self.core = IngressCore(self.s, None, None, recall_fn=self._recall)
        elif self.s.topology == "local":
            self.core = IngressCore(self.s, None, None, recall_fn=self._recall_local)
        else:
            self.core = IngressCore(self.s, self._encode, self._search)
        import serving.ingress

        serving.ingress.ACTIVE["core"] = self.core
        components.settle_gc(self.s.gc_threshold, self.s.switch_interval_ms)
        self.core.metrics.watch_gc()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Topology "local": ``{"recallers": {source: <the encoder's user_config>}}`` (version pin, batching,
        steps), applied in place to that source's in-process Recaller."""
        for name, cfg in (user_config.get("recallers") or {}).items():
            if name in self.local:
                self.local[name].reconfigure(cfg)

    async def _encode(self, source: str, user_id: int) -> EncodeResult:
        return await self.encoders[source].encode.remote(user_id, time.time() + self.s.timeout_s)

    async def _recall(self, source: str, user_id: int, k: int, exclude_seen: bool):
        return await self.recallers[source].recall.remote(user_id, k, exclude_seen, time.time() + self.s.timeout_s)

    async def _recall_local(self, source: str, user_id: int, k: int, exclude_seen: bool):
        return await self.local[source].recall(user_id, k, exclude_seen, time.time() + self.s.timeout_s)

    async def _search(self, source: str, vector: list[float], k: int, exclude: list[int], version: Any):
        return await self.retrievers[source].search.remote(vector, k, exclude, version, time.time() + self.s.timeout_s)

    @api.post("/recall", response_model=RecallResponse)
    async def recall(self, req: RecallRequest) -> Any:
        return await self.core.recall(req)

    @api.post("/feedback", response_model=FeedbackResponse)
    async def feedback(self, req: FeedbackRequest) -> Any:
        return self.core.feedback(req)

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Any:
        return self.core.health()

    @api.get("/metrics")
    async def metrics(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.core.metrics.render(), media_type=CONTENT_TYPE_LATEST)
