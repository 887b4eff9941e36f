"""What the ingress replica does, without Ray or HTTP: limits, the recall pipeline, feedback, health.
The FastAPI routes in serving/deployments.py are one-line calls into :class:`IngressCore`."""
from __future__ import annotations

import logging
import time
from typing import Any

from serving.ab import ABRouter
from serving.feedback import FeedbackLog, FeedbackRecorder, RequestIds
from serving.metrics import ServingMetrics
from serving.pipeline import EncodeFn, RecallFn, RecallPipeline, SearchFn, UnknownUser
from serving.popularity import PopularitySource
from serving.schemas import FeedbackRequest, FeedbackResponse, Health, RecallRequest, RecallResponse
from serving.settings import ServingSettings

log = logging.getLogger(__name__)


# The IngressCore of this process (one ingress replica per process), for the FastAPI exception handlers.
ACTIVE: dict[str, Any] = {}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class IngressCore:
    def __init__(self, settings: ServingSettings, encode: EncodeFn | None, search: SearchFn | None,
                 popularity: PopularitySource | None = None, metrics: ServingMetrics | None = None,
                 recall_fn: RecallFn | None = None) -> None:
        from serving import components

        self.s = settings
        self.metrics = metrics or ServingMetrics()
        self.router = ABRouter(settings.experiment, settings.arms_file, settings.arms_reload_s,
                               allowed_sources=set(settings.sources),
                               on_reload=lambda r: self.metrics.arm_reloads.labels(r).inc())
        self.popularity = popularity or components.popularity(settings)
        self.ids = RequestIds(settings.request_secret, settings.recent_requests)
        self.pipeline = RecallPipeline(settings, self.router, self.popularity, self.metrics, self.ids, encode, search,
                                       recall_fn)
        self.flog = FeedbackLog(settings.feedback_path())
        self.recorder = FeedbackRecorder(self.ids, self.flog, self.metrics, settings.evr_threshold_s,
                                         produce=self._producer() if settings.feedback_to_event_log else None)
        for a in self.router.arms():
            self.metrics.requests.labels(a.name)  # expose every arm at 0 from the start

    async def recall(self, req: RecallRequest) -> RecallResponse:
        if req.k is not None and req.k > self.s.k_max:
            self.metrics.bad_requests.labels("recall", "k_too_large").inc()
            raise HttpError(422, f"k={req.k} is above the limit {self.s.k_max}")
        try:
            return await self.pipeline.recall(req)
        except UnknownUser as e:
            raise HttpError(404, str(e)) from e

    def feedback(self, req: FeedbackRequest) -> FeedbackResponse:
        if len(req.events) > self.s.max_feedback_events:
            self.metrics.bad_requests.labels("feedback", "too_many_events").inc()
            raise HttpError(413, f"{len(req.events)} events; at most {self.s.max_feedback_events} per request")
        accepted, unknown = self.recorder.record(req.events)
        return FeedbackResponse(accepted=accepted, unknown_request_ids=unknown)

    def health(self) -> Health:
        """Always 200 (the service answers, from the fallback if need be); "degraded" while a backend
        failure made a request fall back in the last 30 s."""
        lf = self.pipeline.last_backend_failure
        degraded = lf is not None and time.time() - lf < 30.0
        return Health(status="degraded" if degraded else "ok", arms={a.name: a.source for a in self.router.arms()},
                      model_versions=dict(self.metrics.versions()),
                      fallbacks=int(sum(s.value for m in self.metrics.fallbacks.collect() for s in m.samples
                                        if s.name.endswith("_total"))))

    def _producer(self) -> Any:
        """Feedback as streaming Events on the same topic the trainer and the feature consumer read, carrying
        request_id and arm; the idempotency key makes a retried /feedback harmless downstream."""
        from streaming.events import Event, encode, key_of
        from streaming.log import open_event_log
        from streaming.settings import StreamSettings

        st = StreamSettings.load(self.s.config_path, key="stream")
        elog = open_event_log(st)

        def produce(records: list[dict[str, Any]]) -> None:
            for r in records:
                ev = Event(user_id=r["user_id"], item_id=r["item_id"], event_type=r["event"], ts_ms=r["ts_ms"],
                           play_time_ms=r["play_time_ms"], request_id=r["request_id"][:128], arm=r["arm"],
                           idempotency_key=f"fb:{r['request_id']}:{r['item_id']}:{r['event']}:{r['ts_ms']}"[:256])
                elog.produce(st.topic, key_of(ev), encode(ev), timestamp_ms=r["ts_ms"])
            elog.flush()

        return produce
