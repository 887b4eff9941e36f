"""The recall path without Ray: routing, degraded modes, metrics, feedback."""
import asyncio
import json

import pytest

from serving.ab import ABRouter
from serving.feedback import FeedbackLog, FeedbackRecorder, RequestIds, read_feedback
from serving.metrics import ServingMetrics
from serving.pipeline import RecallPipeline, UnknownUser
from serving.popularity import PopularitySource
from serving.schemas import FeedbackEvent, RecallRequest
from serving.settings import ArmConfig, ExperimentConfig, ServingSettings, SourceConfig
from serving.types import BackendUnavailable, EncodeResult, SearchResult

POP = PopularitySource([100, 101, 102, 103, 104], [5, 4, 3, 2, 1])


def _settings(**kw):
    return ServingSettings(
        experiment=ExperimentConfig(salt="t", arms=[ArmConfig(name="treatment", weight=1, source="t2diff")]),
        sources={"t2diff": SourceConfig(), "popularity": SourceConfig(kind="popularity")}, timeout_s=0.2, **kw)


class Backend:
    """Fake encoder + retriever: user u has history [u, u+1]; the vector is [u]; search returns 1..k."""

    def __init__(self):
        self.encode_mode = "ok"
        self.search_mode = "ok"
        self.calls = []

    async def encode(self, source, user_id):
        m = self.encode_mode
        if m == "raise_unavailable":
            raise BackendUnavailable("features_unavailable", "redis down")
        if m == "crash":
            raise RuntimeError("boom")
        if m == "slow":
            await asyncio.sleep(1)
        if m in ("unknown_user", "empty_history", "model_unavailable", "features_unavailable"):
            return EncodeResult(m, seen=[101] if m == "empty_history" else [])
        return EncodeResult("ok", [float(user_id)], 7, seen=[1, 101], encode_ms=1.5)

    async def search(self, source, vector, k, exclude, version):
        self.calls.append((source, vector, k, list(exclude), version))
        if self.search_mode == "down":
            raise BackendUnavailable("index_unavailable", "milvus down")
        if self.search_mode == "shed":
            return SearchResult([], version, shed=True)
        items = [(i, 1.0 / i) for i in range(1, k + 3) if i not in exclude][:k]
        return SearchResult(items, version, search_ms=0.5)


def _pipe(settings=None, backend=None):
    s = settings or _settings()
    m = ServingMetrics()
    b = backend or Backend()
    p = RecallPipeline(s, ABRouter(s.experiment), POP, m, RequestIds("k"), b.encode, b.search)
    return p, b, m


def _val(m, name, **labels):
    return m.registry.get_sample_value(name, labels) or 0.0


def test_happy_path_uses_encoder_version_and_excludes_seen():
    p, b, m = _pipe()
    r = asyncio.run(p.recall(RecallRequest(user_id=5, k=3)))
    assert not r.fallback and r.source == "t2diff" and r.model_version == "7" and r.arm == "treatment"
    assert [c.item_id for c in r.items] == [2, 3, 4]  # 1 was seen
    assert b.calls[-1][4] == 7  # searched the encoder's version
    r2 = asyncio.run(p.recall(RecallRequest(user_id=5, k=3, exclude_seen=False)))
    assert [c.item_id for c in r2.items] == [1, 2, 3]
    assert _val(m, "t2diff_serve_requests_total", arm="treatment") == 2
    assert _val(m, "t2diff_serve_candidates_total", arm="treatment") == 6
    assert _val(m, "t2diff_serve_model_version_info", source="t2diff", version="7") == 1
    assert _val(m, "t2diff_serve_latency_seconds_count", deployment="encoder", stage="encode") == 2


@pytest.mark.parametrize("mode,reason", [
    ("unknown_user", "unknown_user"), ("empty_history", "empty_history"),
    ("features_unavailable", "features_unavailable"), ("raise_unavailable", "features_unavailable"),
    ("model_unavailable", "model_unavailable"), ("crash", "encoder_error"), ("slow", "timeout"),
])
def test_encoder_degraded_modes_fall_back(mode, reason):
    p, b, m = _pipe()
    b.encode_mode = mode
    r = asyncio.run(p.recall(RecallRequest(user_id=5, k=2)))
    assert r.fallback and r.fallback_reason == reason and r.source == "popularity" and r.model_version is None
    # empty_history still knows what the user saw (101) and keeps it out of the fallback
    assert [c.item_id for c in r.items] == ([100, 102] if mode == "empty_history" else [100, 101])
    assert _val(m, "t2diff_serve_fallbacks_total", arm="treatment", reason=reason) == 1
    assert _val(m, "t2diff_serve_requests_total", arm="treatment") == 1


def test_index_down_falls_back_and_counts_error():
    p, b, m = _pipe()
    b.search_mode = "down"
    r = asyncio.run(p.recall(RecallRequest(user_id=5, k=2)))
    assert r.fallback and r.fallback_reason == "index_unavailable"
    assert [c.item_id for c in r.items] == [100, 102]  # seen 101 excluded from the fallback too
    assert _val(m, "t2diff_serve_errors_total", deployment="retriever", kind="index_unavailable") == 1
    assert p.last_backend_failure is not None


def test_shed_search_falls_back_as_overloaded():
    p, b, m = _pipe()
    b.search_mode = "shed"
    r = asyncio.run(p.recall(RecallRequest(user_id=5, k=2)))
    assert r.fallback and r.fallback_reason == "overloaded" and len(r.items) == 2


def test_unknown_user_reject_mode_raises():
    p, b, m = _pipe(_settings(unknown_user="reject"))
    b.encode_mode = "unknown_user"
    with pytest.raises(UnknownUser):
        asyncio.run(p.recall(RecallRequest(user_id=5, k=2)))
    assert _val(m, "t2diff_serve_bad_requests_total", endpoint="recall", reason="unknown_user") == 1


def test_popularity_arm_and_default_k():
    s = ServingSettings(
        experiment=ExperimentConfig(arms=[ArmConfig(name="pop", weight=1, source="popularity")]),
        sources={"popularity": SourceConfig(kind="popularity")}, k_default=4)
    p, b, m = _pipe(s)
    r = asyncio.run(p.recall(RecallRequest(user_id=1)))
    assert not r.fallback and r.source == "popularity" and len(r.items) == 4 and b.calls == []


def test_feedback_known_unknown_and_metrics(tmp_path):
    p, b, m = _pipe()
    r = asyncio.run(p.recall(RecallRequest(user_id=5, k=2)))
    flog = FeedbackLog(tmp_path / "fb.jsonl")
    rec = FeedbackRecorder(p.ids, flog, m, evr_threshold_s=7.0)
    evs = [FeedbackEvent(request_id=r.request_id, user_id=5, item_id=2, event="impression"),
           FeedbackEvent(request_id=r.request_id, user_id=5, item_id=2, event="play", play_time_ms=9000),
           FeedbackEvent(request_id=r.request_id, user_id=5, item_id=3, event="play", play_time_ms=1000),
           FeedbackEvent(request_id=r.request_id, user_id=5, item_id=3, event="play", play_time_ms=1000,
                         long_view=True),
           FeedbackEvent(request_id=r.request_id, user_id=5, item_id=2, event="follow"),
           FeedbackEvent(request_id="forged.treatment.00000000", user_id=5, item_id=2, event="impression"),
           FeedbackEvent(request_id=r.request_id, user_id=6, item_id=2, event="impression")]
    accepted, unknown = rec.record(evs)
    assert (accepted, unknown) == (7, 2)
    rows = read_feedback(tmp_path / "fb.jsonl")
    assert len(rows) == 7 and [x["known"] for x in rows] == [True] * 5 + [False] * 2
    assert rows[0]["arm"] == "treatment" and rows[0]["model_version"] == "7"
    assert [x["effective"] for x in rows[1:4]] == [True, False, True]
    assert _val(m, "t2diff_serve_impressions_total", arm="treatment") == 1
    assert _val(m, "t2diff_serve_plays_total", arm="treatment") == 3
    assert _val(m, "t2diff_serve_effective_views_total", arm="treatment") == 2
    assert _val(m, "t2diff_serve_follows_total", arm="treatment") == 1
    assert _val(m, "t2diff_serve_play_duration_seconds_count", arm="treatment") == 3
    assert _val(m, "t2diff_serve_feedback_unknown_request_total", reason="unknown_request_id") == 1
    assert _val(m, "t2diff_serve_feedback_unknown_request_total", reason="user_mismatch") == 1


def test_request_id_valid_across_replicas_after_eviction():
    a, b = RequestIds("secret", remember=1), RequestIds("secret", remember=0)
    rid = a.new("control", user_id=1)
    assert b.resolve(rid)[0] == "control"  # another replica, nothing remembered: the signature carries it
    assert RequestIds("other").resolve(rid)[0] is None
    tampered = rid.replace(".control.", ".treatment.")
    assert b.resolve(tampered)[0] is None


def test_feedback_also_produced_to_the_event_log(tmp_path):
    from serving.ingress import IngressCore
    from streaming.events import decode
    from streaming.log import open_event_log
    from streaming.settings import StreamSettings

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"stream:\n  log_dir: {tmp_path / 'log'}\n")
    s = _settings(feedback_to_event_log=True, feedback_log=tmp_path / "fb.jsonl", config_path=cfg)
    b = Backend()
    core = IngressCore(s, b.encode, b.search, popularity=POP)
    r = asyncio.run(core.recall(RecallRequest(user_id=5, k=2)))
    from serving.schemas import FeedbackRequest
    core.feedback(FeedbackRequest(events=[
        FeedbackEvent(request_id=r.request_id, user_id=5, item_id=2, event="play", play_time_ms=8000, ts_ms=1000)]))
    cons = open_event_log(StreamSettings.load(cfg, key="stream")).consumer("events", "t")
    recs = cons.poll(100, 1.0)
    assert len(recs) == 1
    ev = decode(recs[0].value)
    assert (ev.user_id, ev.item_id, ev.event_type.value, ev.arm, ev.request_id) == (5, 2, "play", "treatment",
                                                                                   r.request_id)
    assert len(read_feedback(tmp_path / "fb.jsonl")) == 1


def test_ingress_core_maps_limits_and_unknown_users_to_4xx(tmp_path):
    from serving.ingress import HttpError, IngressCore
    from serving.schemas import FeedbackRequest

    b = Backend()
    core = IngressCore(_settings(unknown_user="reject", k_max=10, k_default=5, max_feedback_events=2,
                                 feedback_log=tmp_path / "fb.jsonl"), b.encode, b.search, popularity=POP)
    with pytest.raises(HttpError) as e:
        asyncio.run(core.recall(RecallRequest(user_id=5, k=11)))
    assert e.value.status == 422 and "limit 10" in e.value.message
    b.encode_mode = "unknown_user"
    with pytest.raises(HttpError) as e:
        asyncio.run(core.recall(RecallRequest(user_id=5, k=3)))
    assert e.value.status == 404 and "user 5" in e.value.message
    ev = FeedbackEvent(request_id="x", user_id=1, item_id=1, event="impression")
    with pytest.raises(HttpError) as e:
        core.feedback(FeedbackRequest(events=[ev, ev, ev]))
    assert e.value.status == 413
    assert core.health().status == "ok"  # a cold user is not a backend failure
    with pytest.raises(ValueError):
        RecallRequest.model_validate({"user_id": 1, "k": 3.0})  # strict: no float -> int coercion


class FusedBackend(Backend):
    """The fake backend behind one fused call, as serving.recaller.Recaller answers it."""

    async def recall(self, source, user_id, k, exclude_seen):
        enc = await self.encode(source, user_id)
        if enc.status != "ok":
            return enc, None
        if self.search_mode == "down":
            return enc, "index_unavailable"
        return enc, await self.search(source, enc.vector, k, enc.seen if exclude_seen else [], enc.version)


def _fused(**kw):
    s = _settings(**kw)
    m, b = ServingMetrics(), FusedBackend()
    return RecallPipeline(s, ABRouter(s.experiment), POP, m, RequestIds("k"), None, None, recall_fn=b.recall), b, m


def test_fused_path_answers_like_split():
    p, b, m = _fused()
    r = asyncio.run(p.recall(RecallRequest(user_id=5, k=3)))
    assert not r.fallback and r.model_version == "7" and [c.item_id for c in r.items] == [2, 3, 4]
    assert _val(m, "t2diff_serve_latency_seconds_count", deployment="encoder", stage="encode") == 1
    assert _val(m, "t2diff_serve_latency_seconds_count", deployment="retriever", stage="search") == 1
    sp, _, _ = _pipe()
    assert asyncio.run(sp.recall(RecallRequest(user_id=5, k=3))).items == r.items


@pytest.mark.parametrize("setup,reason", [
    (("encode_mode", "empty_history"), "empty_history"),
    (("encode_mode", "crash"), "recall_error"),
    (("search_mode", "down"), "index_unavailable"),
    (("search_mode", "shed"), "overloaded"),
])
def test_fused_degraded_modes_fall_back(setup, reason):
    p, b, m = _fused()
    setattr(b, *setup)
    r = asyncio.run(p.recall(RecallRequest(user_id=5, k=3)))
    assert r.fallback and r.fallback_reason == reason and r.source == "popularity" and len(r.items) == 3
    assert _val(m, "t2diff_serve_fallbacks_total", arm="treatment", reason=reason) == 1
    if reason == "index_unavailable":
        assert _val(m, "t2diff_serve_errors_total", deployment="retriever", kind="index_unavailable") == 1
    if reason == "recall_error":
        assert _val(m, "t2diff_serve_errors_total", deployment="recaller", kind="recall_error") == 1


def test_pipeline_needs_a_backend():
    s = _settings()
    with pytest.raises(ValueError, match="recall_fn"):
        RecallPipeline(s, ABRouter(s.experiment), POP, ServingMetrics(), RequestIds("k"), None, None)
