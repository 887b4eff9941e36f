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
    """AOTInductor U-Net == eager U-Net (same noise), for batch 1 and a larger batch (dynamic batch dim)."""
    cat, cfg = tiny[:2]
    prepared = []

    def prepare(lm):
        compile_user_tower(lm)
        prepared.append(lm.version)

    compiled, eager = _provider(tiny, prepare=prepare), _provider(tiny)
    assert prepared == [1]  # compiled inside load, before current() could hand it out
    assert compiled.current().model.diffusion.denoiser is not compiled.current().model.diffusion.unet
    feats = StaticFeatures({u: History(cat.raw_ids[u:u + 3 + u % 7].tolist(), None) for u in range(1, 12)})
    for users in ([1], list(range(1, 12))):
        a = UserEncoder(compiled, feats, seed=3, reseed_per_batch=True).encode_batch(users)
        b = UserEncoder(eager, feats, seed=3, reseed_per_batch=True).encode_batch(users)
        va, vb = np.array([r.vector for r in a]), np.array([r.vector for r in b])
        assert va.shape == (len(users), cfg.user_dim)
        assert np.allclose(va, vb, atol=1e-4), np.abs(va - vb).max()


def test_a_new_version_reuses_the_compiled_package_with_its_own_weights(tiny, monkeypatch):
    """Versions of one architecture share one AOTInductor package: the second gets its weights swapped in
    (no child-process compile), and each loaded runner keeps computing with its own version's weights."""
    import torch

    from serving import aot
    from t2diff.model import ModelConfig, build_model

    cat, cfg, m1, m2 = tiny
    r1 = aot.compile_in_child(m1, cfg.seq_len)  # built here (or by the test above: same architecture)

    def no_child(*a, **k):
        raise AssertionError("compiled again for an architecture already compiled")

    monkeypatch.setattr(aot.subprocess, "run", no_child)
    r2 = aot.compile_in_child(m2, cfg.seq_len)
    u1, u2 = m1.diffusion.unet, m2.diffusion.unet
    L = u1.padded_length(cfg.seq_len)
    g = torch.Generator().manual_seed(0)
    for B in (1, 5):
        z, x = torch.randn(B, L, cfg.edim, generator=g), torch.randn(B, L, cfg.edim, generator=g)
        t = torch.tensor(3)
        with torch.no_grad():
            e1, e2 = u1(z, x, t), u2(z, x, t)
        assert not torch.allclose(e1, e2, atol=1e-3)  # two versions, two sets of weights
        torch.testing.assert_close(r1(z, x, t), e1, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(r2(z, x, t), e2, atol=1e-5, rtol=1e-4)
    # no reference cycles per call (the package's own __call__ makes one per call through torch's pytree): their
    # collection stalls a serving replica under load
    import gc

    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            r1(z, x, t)
        assert gc.collect() == 0
    finally:
        gc.enable()
    other = build_model(ModelConfig(num_items=cat.num_items, num_tags=cat.num_tags, max_tags=cat.max_tags,
                                    diffusion_steps=8, step_weight=0.5), torch.as_tensor(cat.tags))
    assert aot.arch_key(other.diffusion.unet, cfg.seq_len) != aot.arch_key(u1, cfg.seq_len)
    assert aot.arch_key(u2, cfg.seq_len) == aot.arch_key(u1, cfg.seq_len)
