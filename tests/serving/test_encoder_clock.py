"""The small seams that let serving's plain classes run the demo's in-process arms: a caller's request clock for
the time-lag feature, a per-batch noise draw, and the one effective-view rule."""
import numpy as np
import pytest
import torch

from serving.encoder import History, ModelProvider, StaticFeatures, UserEncoder
from serving.feedback import is_effective_view
from serving.world import synthetic_catalog


TS1 = [1_000 * 3 ** (i // 2) for i in range(20)]  # spread over many lag buckets
TS2 = [2_000 * 2 ** i for i in range(15)]


@pytest.fixture(scope="module")
def tiny():
    from t2diff.model import ModelConfig, build_model

    cat = synthetic_catalog(40, seed=2)
    cfg = ModelConfig(num_items=cat.num_items, num_tags=cat.num_tags, max_tags=cat.max_tags, diffusion_steps=4)
    torch.manual_seed(0)
    model = build_model(cfg, torch.as_tensor(cat.tags))
    p = ModelProvider(lambda v: (model, {"catalog": cat.to_dict()}, "v1"))
    p.refresh()
    # user 1: longer than the model's last session (10), so the older items go through the time-lag attention
    feats = StaticFeatures({1: History(cat.raw_ids[:20].tolist(), TS1),
                            2: History(cat.raw_ids[20:35].tolist(), TS2)})
    return cat, cfg, model, p, feats


def _reference(model, cfg, idx, ts, now):
    L = cfg.seq_len
    hist = torch.zeros((1, L), dtype=torch.long)
    hist_ts = torch.zeros((1, L), dtype=torch.long)
    hist[0, L - len(idx):] = torch.as_tensor(idx)
    hist_ts[0, L - len(ts):] = torch.as_tensor(ts)
    g = torch.Generator().manual_seed(0)
    return model.encode_users(hist, hist_ts, torch.tensor([now]), generator=g)[0].float().numpy()


def test_request_clock_feeds_the_time_lag_and_defaults_to_the_latest_event(tiny):
    cat, cfg, model, p, feats = tiny
    enc = UserEncoder(p, feats, seed=0, reseed_per_batch=True)
    later = 3 * 86_400_000
    with_clock = enc.encode_batch([1], now_ms=[later])[0]
    np.testing.assert_allclose(with_clock.vector, _reference(model, cfg, list(range(1, 21)), TS1,
                                                             later), rtol=1e-5, atol=1e-6)
    default = enc.encode_batch([1])[0]
    np.testing.assert_allclose(default.vector, _reference(model, cfg, list(range(1, 21)), TS1,
                                                          TS1[-1]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(default.vector, with_clock.vector)  # the lag buckets differ: the clock was used
    # in a batch, a None entry is "no clock" for that request only, and each clock goes to its own request
    vec = lambda now: [r.vector for r in enc.encode_batch([2, 1], now_ms=now)]  # noqa: E731
    mixed = vec([None, later])
    assert mixed == vec([TS2[-1], later])  # None = the user's latest event
    assert mixed[1] != vec([None, None])[1] and mixed[0] != vec([later, later])[0]


def test_request_clock_survives_deadline_shedding(tiny):
    import time

    cat, cfg, model, p, feats = tiny
    enc = UserEncoder(p, feats, seed=0, reseed_per_batch=True)
    later = 3 * 86_400_000
    r = enc.encode_batch([2, 1], deadlines=[time.time() - 1, time.time() + 60], now_ms=[5, later])
    assert r[0].status == "overloaded" and r[1].status == "ok"
    np.testing.assert_allclose(r[1].vector, enc.encode_batch([1], now_ms=[later])[0].vector, rtol=1e-6)


def test_reseed_per_batch_gives_one_vector_per_history(tiny):
    cat, cfg, model, p, feats = tiny
    fixed = UserEncoder(p, feats, seed=0, reseed_per_batch=True)
    assert fixed.encode_batch([1])[0].vector == fixed.encode_batch([1])[0].vector
    running = UserEncoder(p, feats, seed=0)  # one generator for the replica's life: a new draw per batch
    assert running.encode_batch([1])[0].vector != running.encode_batch([1])[0].vector
    with pytest.raises(ValueError):
        UserEncoder(p, feats, reseed_per_batch=True)


def test_effective_view_rule_on_scalars_and_arrays():
    assert is_effective_view(True, None, 7_000) is True
    assert is_effective_view(None, 7_000, 7_000) is True
    assert is_effective_view(False, 6_999, 7_000) is False
    assert is_effective_view(None, None, 7_000) is False
    assert is_effective_view(np.bool_(False), np.int64(8_000), 7_000) is True
    got = is_effective_view(np.array([1, 0, 0, 1]), np.array([0, 7_000, 6_999, 9_000]), 7_000)
    assert got.dtype == bool and got.tolist() == [True, True, False, True]
    assert is_effective_view(np.array([True, False]), None, 7_000).tolist() == [True, False]
    assert is_effective_view(None, np.array([1, 10_000]), 7_000).tolist() == [False, True]


def test_feedback_recorder_uses_the_rule(tmp_path):
    from serving.feedback import FeedbackLog, FeedbackRecorder, RequestIds
    from serving.metrics import ServingMetrics
    from serving.schemas import FeedbackEvent

    rec = FeedbackRecorder(RequestIds("s"), FeedbackLog(tmp_path / "fb.jsonl"), ServingMetrics(), evr_threshold_s=7.0)
    ev = lambda **kw: FeedbackEvent(request_id="x", user_id=1, item_id=2, event="play", **kw)  # noqa: E731
    assert rec.is_effective(ev(play_time_ms=7_000)) and rec.is_effective(ev(long_view=True))
    assert not rec.is_effective(ev(play_time_ms=6_999, long_view=False)) and not rec.is_effective(ev())
