"""The fused topology's plain class (encoder + retriever in one replica) and the AOT-compiled user tower."""
import copy
import time

import numpy as np

from serving.encoder import History, ModelProvider, StaticFeatures, UserEncoder, compile_user_tower
from serving.recaller import Recaller
from serving.retriever import ExactRetriever, Retriever
from serving.types import BackendUnavailable


def _provider(tiny, prepare=None):
    cat, _, model, _ = tiny
    p = ModelProvider(lambda v: (copy.deepcopy(model), {"catalog": cat.to_dict()}, 1), latest=lambda: 1,
                      prepare=prepare)
    p.refresh()
    return p


def _features(cat):
    raw = cat.raw_ids
    return StaticFeatures({1: History(raw[:5].tolist(), list(range(1000, 1005))),
                           2: History([999_999], [1]),  # only unknown items: empty history
                           3: History(raw[20:40].tolist(), None)})


class DownSearcher:
    def search(self, vectors, k, exclude=None, version=None):
        raise BackendUnavailable("index_unavailable", "milvus down")


def test_recaller_encodes_then_searches_at_the_encoders_version(tiny):
    cat = tiny[0]
    p = _provider(tiny)
    enc = UserEncoder(p, _features(cat), seed=0, reseed_per_batch=True)
    exact = ExactRetriever.from_model(p.current().model, p.current().catalog, version=1)
    rec = Recaller(enc, Retriever(exact))
    out = rec.recall_batch([(1, 5, True, None), (2, 5, True, None), (3, 4, False, time.time() + 60),
                            (4, 5, True, None)])
    assert [e.status for e, _ in out] == ["ok", "empty_history", "ok", "unknown_user"]
    assert out[1][1] is None and out[3][1] is None  # no vector, no search: the ingress falls back
    (e1, s1), s3 = out[0], out[2][1]
    assert s1.version == 1 and len(s1.items) == 5 and not set(i for i, _ in s1.items) & set(e1.seen)
    assert len(s3.items) == 4
    # the same answer the split topology gives: the encoder's vector searched by the retriever
    ref = Retriever(exact).search_batch([(e1.vector, 5, e1.seen, 1)])[0]
    assert [i for i, _ in s1.items] == [i for i, _ in ref.items]
    assert np.allclose([x for _, x in s1.items], [x for _, x in ref.items], atol=1e-5)  # batch-of-3 vs 1 matmul


def test_recaller_index_down_fails_only_the_search(tiny):
    cat = tiny[0]
    rec = Recaller(UserEncoder(_provider(tiny), _features(cat), seed=0), Retriever(DownSearcher()))
    out = rec.recall_batch([(1, 5, True, None), (2, 5, True, None)])
    assert out[0][0].status == "ok" and out[0][1] == "index_unavailable"
    assert out[1][0].status == "empty_history" and out[1][1] is None


def test_recaller_sheds_past_deadline(tiny):
    cat = tiny[0]
    rec = Recaller(UserEncoder(_provider(tiny), _features(cat), seed=0), Retriever(DownSearcher()))
    (e, s), = rec.recall_batch([(1, 5, True, time.time() - 1)])
    assert e.status == "overloaded" and s is None


def test_compiled_user_tower_matches_eager_and_runs_before_going_live(tiny):
    """The AOT-compiled user tower == the eager one (same noise), for batch 1 and a larger batch (dynamic batch
    dimension), at the model's own step count and at fewer steps."""
    import functools

    cat, cfg = tiny[:2]
    prepared = []

    def prepare(lm, steps=None):
        compile_user_tower(lm, steps)
        prepared.append(lm.version)

    feats = StaticFeatures({u: History(cat.raw_ids[u:u + 3 + u % 7].tolist(), None) for u in range(1, 12)})
    for steps in (None, 3):
        compiled, eager = _provider(tiny, prepare=functools.partial(prepare, steps=steps)), _provider(tiny)
        assert prepared[-1] == 1  # compiled inside load, before current() could hand it out
        tower = compiled.current().model._compiled_tower
        assert tower is not None and tower.num_steps == (steps or cfg.diffusion_steps)
        for users in ([1], list(range(1, 12))):
            a = UserEncoder(compiled, feats, seed=3, reseed_per_batch=True, num_steps=steps).encode_batch(users)
            b = UserEncoder(eager, feats, seed=3, reseed_per_batch=True, num_steps=steps).encode_batch(users)
            va, vb = np.array([r.vector for r in a]), np.array([r.vector for r in b])
            assert va.shape == (len(users), cfg.user_dim)
            assert np.allclose(va, vb, atol=1e-4), np.abs(va - vb).max()
        # a step count the library was not built for runs eagerly, with the same result as the eager model
        other = 5
        a = UserEncoder(compiled, feats, seed=3, reseed_per_batch=True, num_steps=other).encode_batch([1, 2])
        b = UserEncoder(eager, feats, seed=3, reseed_per_batch=True, num_steps=other).encode_batch([1, 2])
        assert np.allclose([r.vector for r in a], [r.vector for r in b], atol=1e-6)


def _tower_inputs(model, cfg, B, steps, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(0, model.items.num_items + 1, (B, cfg.seq_len), generator=g)  # (B, n), some padding
    hist[:, :cfg.seq_len // 3] = 0
    ts = torch.where(hist > 0, torch.randint(1, 10**9, (B, cfg.seq_len), generator=g), 0)
    noise = torch.randn(model.diffusion.noise_shape(B, cfg.seq_len, cfg.edim, steps), generator=g)
    it = model.items
    return hist, ts, ts.amax(1), noise, it.id_weight.detach(), it.tag_weight.detach(), it.item_tags


def test_a_new_version_reuses_the_compiled_library_with_its_own_weights(tiny, monkeypatch):
    """Versions of one architecture share one compiled library: the second gets its weights loaded into its own
    container (no child-process compile), each computes with its own version's weights, a grown catalogue runs
    on the same library (the item tables are inputs), and a different architecture gets a different key."""
    import gc

    import torch

    from t2diff.model import aot
    from t2diff.model import ModelConfig, build_model
    from t2diff.model.t2diff import encode_from_noise

    cat, cfg, m1, m2 = tiny
    steps = cfg.diffusion_steps
    r1 = aot.compile_in_child(m1, cfg.seq_len)  # built here (or by the test above: same architecture)

    def no_child(*a, **k):
        raise AssertionError("compiled again for an architecture already compiled")

    monkeypatch.setattr(aot.subprocess, "run", no_child)
    r2 = aot.compile_in_child(m2, cfg.seq_len)

    def eager(m, inputs):
        with torch.no_grad():
            return encode_from_noise(m.diffusion, m.user_tower, m.cfg, *inputs[:4], steps, *inputs[4:])

    for B in (1, 5):
        inputs = _tower_inputs(m1, cfg, B, steps)
        e1, e2 = eager(m1, inputs), eager(m2, inputs)
        assert not torch.allclose(e1, e2, atol=1e-3)  # two versions, two sets of weights
        torch.testing.assert_close(r1(*inputs), e1, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r2(*inputs), e2, atol=1e-5, rtol=1e-4)
    # the catalogue grows (the stream trainer's new items): same key, same library, bigger tables as inputs
    m2.add_items(torch.ones(7, cfg.max_tags, dtype=torch.long))
    assert aot.arch_key(m2, cfg.seq_len, steps) == aot.arch_key(m1, cfg.seq_len, steps)
    r3 = aot.compile_in_child(m2, cfg.seq_len)
    inputs = _tower_inputs(m2, cfg, 4, steps, seed=1)
    inputs[0][:, -1] = m2.items.num_items  # a new item as the latest event
    torch.testing.assert_close(r3(*inputs), eager(m2, inputs), atol=1e-5, rtol=1e-4)
    # no reference cycles per call: their collection stalls a serving replica under load
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            r1(*_tower_inputs(m1, cfg, 2, steps))
        assert gc.collect() == 0
    finally:
        gc.enable()
    other = build_model(ModelConfig(num_items=cat.num_items, num_tags=cat.num_tags, max_tags=cat.max_tags,
                                    diffusion_steps=8, step_weight=0.5), torch.as_tensor(cat.tags))
    assert aot.arch_key(other, cfg.seq_len, steps) != aot.arch_key(m1, cfg.seq_len, steps)
    assert aot.arch_key(m1, cfg.seq_len, 3) != aot.arch_key(m1, cfg.seq_len, steps)


def test_the_compiled_tower_runs_without_the_gil(tiny):
    """While one thread is inside the compiled tower, another thread keeps running Python: the largest pause
    the main thread sees during the call is a small part of the call (holding the GIL, it would be all of it)."""
    import threading

    from t2diff.model import aot

    cat, cfg, m1, _ = tiny
    tower = aot.compile_in_child(m1, cfg.seq_len)
    inputs = _tower_inputs(m1, cfg, 4096, cfg.diffusion_steps)
    tower(*inputs)  # warm
    span: list[float] = []
    started = threading.Event()

    def work():
        started.set()
        t0 = time.perf_counter()
        tower(*inputs)
        span.extend([t0, time.perf_counter()])

    th = threading.Thread(target=work)
    ticks = []
    th.start()
    started.wait()
    while th.is_alive():
        ticks.append(time.perf_counter())
    th.join()
    t0, t1 = span
    inside = [t for t in ticks if t0 <= t <= t1]
    assert t1 - t0 > 0.02, "the call is too short to tell"
    gaps = np.diff([t0, *inside, t1])
    assert gaps.max() < 0.5 * (t1 - t0), (gaps.max(), t1 - t0)


def test_tied_models_are_served_eager_not_compiled(caplog):
    """A tied_input model reads the item tower's output, which the exported tower does not: no AOT compile."""
    import types

    import torch

    from t2diff.model import ModelConfig, build_model

    cfg = ModelConfig(num_items=5, num_tags=2, max_tags=1, seq_len=8, session_len=2, tied_input=True)
    model = build_model(cfg, torch.zeros(6, 1, dtype=torch.long))
    lm = types.SimpleNamespace(model=model, device="cpu", version=7, seq_len=8)
    with caplog.at_level("WARNING"):
        compile_user_tower(lm)  # returns at once: no child compile
    assert model._compiled_tower is None and "served eager" in caplog.text
