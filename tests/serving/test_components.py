"""Encoder, model provider and retrievers as plain classes (no Ray)."""
import numpy as np
import pytest
import torch

from serving.encoder import FeastFeatures, History, ModelProvider, StaticFeatures, UserEncoder
from serving.retriever import ExactRetriever, Retriever
from serving.types import BackendUnavailable


def _provider(tiny, ready=lambda v: True):
    cat, cfg, m1, m2 = tiny
    models = {1: m1, 2: m2}
    state = {"latest": 1, "loads": 0}

    def load(v):
        state["loads"] += 1
        return models[v], {"catalog": cat.to_dict()}, v

    return ModelProvider(load, latest=lambda: state["latest"], ready=ready), state


def test_provider_follows_latest_only_when_ready_and_can_pin(tiny):
    ready = {1}
    p, state = _provider(tiny, ready=lambda v: v in ready)
    assert p.refresh() and p.current().version == 1
    old = p.current()
    state["latest"] = 2
    assert not p.refresh() and p.current() is old  # index has no version 2 yet: stay
    ready.add(2)
    assert p.refresh() and p.current().version == 2
    assert old.model is tiny[2]  # an in-flight batch holding the old object keeps a working model
    p.pin(1)  # rollback by pin
    assert p.current().version == 1
    assert not p.refresh()  # pinned: latest=2 is ignored
    p.pin(None)
    assert p.current().version == 2
    loads = state["loads"]
    assert not p.refresh() and state["loads"] == loads  # no reload when nothing changed


def test_provider_keeps_serving_when_a_load_fails(tiny):
    p, state = _provider(tiny)
    p.refresh()
    state["latest"] = 3  # not loadable
    assert not p.refresh() and p.current().version == 1 and "KeyError" in p.last_error


def test_encoder_statuses_and_vectors(tiny):
    cat, cfg, m1, _ = tiny
    p, _ = _provider(tiny)
    p.refresh()
    raw = cat.raw_ids
    feats = StaticFeatures({
        1: History(raw[:5].tolist(), list(range(1000, 1005))),
        2: History([999_999], [1]),  # only items the model does not know
        3: History(raw[10:70].tolist() + raw[:3].tolist(), None),  # longer than L, no times
    })
    enc = UserEncoder(p, feats, seed=0)
    r = enc.encode_batch([1, 2, 3, 4])
    assert [x.status for x in r] == ["ok", "empty_history", "ok", "unknown_user"]
    assert len(r[0].vector) == cfg.user_dim and r[0].version == 1 and r[0].seen == raw[:5].tolist()
    assert r[1].seen == [999_999] and r[3].vector is None
    # the vector is the model's own encoding of the same history (alone in its batch: same noise draw)
    one = UserEncoder(p, feats, seed=0).encode_batch([1])[0]
    hist = torch.zeros((1, cfg.seq_len), dtype=torch.long)
    hist[0, -5:] = torch.arange(1, 6)
    ts = torch.zeros((1, cfg.seq_len), dtype=torch.long)
    ts[0, -5:] = torch.arange(1000, 1005)
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        ref = m1.encode_users(hist, ts, ts.max(1).values, generator=g)[0]
    assert np.allclose(one.vector, ref.numpy(), atol=1e-5)


def test_encoder_without_model_or_features():
    p = ModelProvider(lambda v: (_ for _ in ()).throw(KeyError("empty registry")), latest=lambda: None)
    p.refresh()
    assert [x.status for x in UserEncoder(p, StaticFeatures({})).encode_batch([1, 2])] == ["model_unavailable"] * 2


def test_feast_unreachable_is_features_unavailable(tmp_path, tiny):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("features:\n  online_store: redis\n  redis_connection_string: 127.0.0.1:1\n"
                   f"  repo_dir: {tmp_path / 'repo'}\n")
    f = FeastFeatures(cfg)
    with pytest.raises(BackendUnavailable) as e:
        f.histories([1])
    assert e.value.kind == "features_unavailable"
    p, _ = _provider(tiny)
    p.refresh()
    assert UserEncoder(p, f).encode_batch([1])[0].status == "features_unavailable"


def test_exact_retriever_matches_brute_force_and_excludes():
    rng = np.random.default_rng(0)
    ids, vecs = np.arange(100, 400), rng.normal(size=(300, 8)).astype(np.float32)
    q = rng.normal(size=(3, 8)).astype(np.float32)
    ex = ExactRetriever(ids, vecs, version=5)
    top = ex.search(q, 10, [[], ids[np.argmax(vecs @ q[1])].tolist() and [int(ids[np.argmax(vecs @ q[1])])], []])
    for b in (0, 2):
        assert [i for i, _ in top[b]] == ids[np.argsort(-(vecs @ q[b]))[:10]].tolist()
    assert int(ids[np.argmax(vecs @ q[1])]) not in [i for i, _ in top[1]] and len(top[1]) == 10
    with pytest.raises(BackendUnavailable):
        ex.search(q, 5, version=6)  # never mix versions


def test_retriever_batches_by_version_and_trims_k():
    calls = []

    class S:
        def search(self, vectors, k, exclude=None, version=None):
            calls.append((len(vectors), k, version))
            return [[(i, 1.0) for i in range(k)] for _ in vectors]

    r = Retriever(S()).search_batch([([0.0], 3, [], 1), ([0.0], 5, [], 1), ([0.0], 2, [], 2)])
    assert sorted(calls) == [(1, 2, 2), (2, 5, 1)]
    assert [len(x.items) for x in r] == [3, 5, 2] and [x.version for x in r] == [1, 1, 2]

    class Down:
        def search(self, *a, **k):
            raise ConnectionError("milvus gone")

    with pytest.raises(BackendUnavailable) as e:
        Retriever(Down()).search_batch([([0.0], 3, [], 1)])
    assert e.value.kind == "index_unavailable"


def test_encoder_sheds_requests_past_their_deadline(tiny):
    import time

    cat, cfg, m1, _ = tiny
    p, _ = _provider(tiny)
    p.refresh()
    feats = StaticFeatures({1: History(cat.raw_ids[:5].tolist()), 2: History(cat.raw_ids[5:9].tolist())})
    r = UserEncoder(p, feats).encode_batch([1, 2, 1], [time.time() + 60, time.time() - 1, time.time() + 60])
    assert [x.status for x in r] == ["ok", "overloaded", "ok"] and r[1].vector is None
    assert len(r[0].vector) == len(r[2].vector) == cfg.user_dim


@pytest.mark.integration
def test_milvus_restart_released_collection_is_reloaded(tmp_path):
    """Milvus Lite brings collections back released after a restart: the retriever loads, not fails."""
    from serving.components import LazySearcher
    from serving.settings import ServingSettings
    from t2diff.index import ItemIndex
    from t2diff.lite_server import stop_lite_server

    uri = str(tmp_path / "m.db")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"index:\n  uri: {uri}\n")
    idx = ItemIndex(uri)
    try:
        idx.publish(1, [1, 2, 3], np.eye(3, 8))
        idx.close()
        stop_lite_server(uri)  # the next client starts a fresh server: collection is on disk, released
        s = ServingSettings(config_path=cfg, sources={"t2diff": {}, "popularity": {"kind": "popularity"}},
                            experiment={"arms": [{"name": "a", "weight": 1, "source": "t2diff"}]})
        ls = LazySearcher(s, "t2diff")
        assert ls.has_version(1)
        assert ls.search(np.eye(1, 8), 2, [[]], version=1) == [[(1, 1.0), (2, 0.0)]]
    finally:
        stop_lite_server(uri)


@pytest.mark.integration
def test_cli_rollback_moves_registry_and_index(tmp_path, tiny):
    from t2diff.cli import main
    from t2diff.index import ItemIndex
    from t2diff.lite_server import stop_lite_server
    from t2diff.registry import ModelRegistry

    cat, cfg, m1, m2 = tiny
    uri = str(tmp_path / "m.db")
    conf = tmp_path / "c.yaml"
    conf.write_text(f"index:\n  uri: {uri}\nregistry:\n  root: {tmp_path / 'reg'}\n")
    reg = ModelRegistry(tmp_path / "reg")
    idx = ItemIndex(uri)
    try:
        for m in (m1, m2):
            v = reg.publish(m, extra={"catalog": cat.to_dict()})
            idx.publish(v, cat.raw_ids, m.encode_items()[1:].detach())
        assert reg.latest() == 2 and idx.live_version() == 2
        assert main(["serve", "--config", str(conf), "--rollback", "1"]) == 0
        assert reg.latest() == 1 and idx.live_version() == 1
    finally:
        idx.close()
        stop_lite_server(uri)


def test_exact_by_version_serves_the_encoders_version_not_latest(tiny):
    from serving.components import ExactByVersion

    cat, cfg, m1, m2 = tiny
    p, state = _provider(tiny)
    ex = ExactByVersion(p)
    state["latest"] = 2
    q = np.ones((1, cfg.user_dim), dtype=np.float32)
    r1 = ex.search(q, 5, [[]], version=1)
    r2 = ex.search(q, 5, [[]], version=2)  # loaded on demand
    e1 = m1.encode_items()[1:].detach().numpy() @ q[0]
    e2 = m2.encode_items()[1:].detach().numpy() @ q[0]
    assert [i for i, _ in r1[0]] == cat.raw_ids[np.argsort(-e1)[:5]].tolist()
    assert [i for i, _ in r2[0]] == cat.raw_ids[np.argsort(-e2)[:5]].tolist()
    assert ex.search(q, 5, [[]], version=1) == r1  # a pinned / rolled-back version stays servable
    with pytest.raises(BackendUnavailable):
        ex.search(q, 5, [[]], version=9)


def test_retriever_sheds_queries_past_their_deadline():
    import time

    seen = []

    class S:
        def search(self, vectors, k, exclude=None, version=None):
            seen.append(len(vectors))
            return [[(1, 1.0)] for _ in vectors]

    r = Retriever(S()).search_batch([([0.0], 1, [], 1, time.time() - 1), ([0.0], 1, [], 1, time.time() + 60),
                                     ([0.0], 1, [], 1)])
    assert [x.shed for x in r] == [True, False, False] and seen == [2] and r[0].items == []


def test_warmup_runs_the_model_once_and_tolerates_no_model(tiny):
    p, _ = _provider(tiny)
    UserEncoder(p, StaticFeatures({})).warmup()  # no model loaded yet: nothing to do, no error
    p.refresh()
    calls = []
    model = p.current().model
    orig = model.encode_users
    model.encode_users = lambda *a, **k: calls.append(a[0].shape) or orig(*a, **k)
    try:
        UserEncoder(p, StaticFeatures({}), num_steps=2).warmup()
    finally:
        del model.encode_users
    assert calls == [(1, tiny[1].seq_len)]


def test_settle_gc_freezes_start_up_objects_and_raises_the_young_threshold():
    import gc

    from serving.components import settle_gc

    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        settle_gc(0)  # 0 = Python's defaults: nothing frozen, thresholds untouched
        assert gc.get_freeze_count() == frozen and gc.get_threshold() == before
        settle_gc(50_000)
        assert gc.get_freeze_count() > frozen + 1000  # the imported libraries at least
        assert gc.get_threshold() == (50_000, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_settle_gc_sets_the_gil_switch_interval_only_when_configured():
    import sys

    from serving.components import settle_gc
    from serving.settings import ServingSettings

    before = sys.getswitchinterval()
    try:
        settle_gc(0)
        assert sys.getswitchinterval() == before
        settle_gc(0, 0.5)
        assert sys.getswitchinterval() == 0.0005
    finally:
        sys.setswitchinterval(before)
    assert ServingSettings().switch_interval_ms is None
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError):
        ServingSettings(switch_interval_ms=0)


def test_gpu_graph_gets_the_configured_reverse_process(monkeypatch, tiny):
    """serving.encoder_reverse reaches the CUDA-graphed encoder; a U-Net the Triton kernel cannot run stays on
    the graphed PyTorch loop (the capture itself needs a GPU, so GraphedEncoder is replaced here)."""
    import t2diff.model.graphed as graphed
    import t2diff.model.triton_reverse as tr
    from serving.encoder import LoadedModel, UserEncoder
    from t2diff.model import ModelConfig, build_model

    cat, cfg, model, _ = tiny
    made = []

    class FakeGraphed:
        def __init__(self, model, batch_size, num_steps=None, reverse=None, **kw):
            made.append((batch_size, num_steps, reverse))

    monkeypatch.setattr(graphed, "GraphedEncoder", FakeGraphed)
    monkeypatch.setattr(tr, "triton", object())  # "installed", whatever this machine has
    odd = build_model(ModelConfig(num_items=cat.num_items, num_tags=cat.num_tags, max_tags=cat.max_tags,
                                  unet_channels=(4, 8, 16)), torch.as_tensor(cat.tags))
    for m, reverse, want in ((model, "torch", None), (model, "triton", "triton"), (odd, "triton", None)):
        enc = UserEncoder(None, None, num_steps=5, cuda_graph_batch=8, reverse=reverse)
        g = enc._graph_for(LoadedModel(m, cat, version=1, seq_len=cfg.seq_len, device="cuda"))
        assert isinstance(g, FakeGraphed) and made[-1] == (8, 5, want)
        assert enc._graph_for(LoadedModel(m, cat, version=1, seq_len=cfg.seq_len, device="cpu")) is None


def test_batches_of_one_skip_the_batch_queue_and_reconfigure_switches_back():
    """serving.batch.max_batch_size 1: a request goes straight to the replica's ``_batch`` (no Ray batch queue);
    a larger size set by user_config sends requests through the queue again."""
    import asyncio

    from serving.deployments import RecallerReplica

    class Queue:
        def __init__(self):
            self.size, self.calls = None, []

        async def __call__(self, one):
            self.calls.append(one)
            return ("queued", one)

        def set_max_batch_size(self, n):
            self.size = n

    r = object.__new__(RecallerReplica)  # the plain class, without Ray or a model
    batches = []

    async def batch(qs):
        batches.append(qs)
        return [("direct", q) for q in qs]

    r._batch, r._run, r._max_batch = batch, Queue(), 1
    assert asyncio.run(r._call((7, 5, True, 0.0))) == ("direct", (7, 5, True, 0.0))
    assert batches == [[(7, 5, True, 0.0)]] and r._run.calls == []
    r.reconfigure({"max_batch_size": 8})
    assert r._run.size == 8 and r._max_batch == 8
    assert asyncio.run(r._call((8, 5, True, 0.0))) == ("queued", (8, 5, True, 0.0))
    assert len(batches) == 1


def test_batch_threads_bound_the_worker_pool():
    """serving.batch.threads N: the replica's batches run in its own pool of N threads (never more at once),
    0 keeps asyncio's default executor."""
    import asyncio
    import threading
    import time as _time

    from serving.deployments import RecallerReplica
    from serving.settings import ServingSettings

    class Recaller:
        def __init__(self):
            self.lock, self.now, self.peak, self.names = threading.Lock(), 0, 0, set()

        def recall_batch(self, qs):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
                self.names.add(threading.current_thread().name)
            _time.sleep(0.02)
            with self.lock:
                self.now -= 1
            return [("ok", q) for q in qs]

    def replica(threads):
        r = object.__new__(RecallerReplica)  # the plain class, without Ray or a model
        r.s = ServingSettings.model_validate({"batch": {"max_batch_size": 1, "threads": threads}})
        r.source, r._max_batch, r.recaller = "t2diff", 1, Recaller()
        r._init_pool()
        return r

    async def burst(r, n):
        return await asyncio.gather(*(r._call((u, 5, True, None)) for u in range(n)))

    r = replica(2)
    assert asyncio.run(burst(r, 8)) == [("ok", (u, 5, True, None)) for u in range(8)]
    assert r.recaller.peak == 2 and all(n.startswith("batch-t2diff") for n in r.recaller.names)
    d = replica(0)
    asyncio.run(burst(d, 8))
    assert d.recaller.peak > 2 and not any(n.startswith("batch-") for n in d.recaller.names)
