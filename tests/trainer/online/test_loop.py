"""End to end on a local log: prequential figures, dead letters, cold items, publish to registry + Milvus."""
import numpy as np
import torch
from prometheus_client import REGISTRY

from streaming.deadletter import read_dead_letters
from streaming.events import EventType, decode, encode
from t2diff.registry import ModelRegistry
from trainer.online.loop import SCORE_LOG, StreamTrainer
from trainer.online.prequential import read_score_log, recompute
from trainer.online.synthetic import produce, synthetic_events


def test_stream_trainer_end_to_end(stack):
    cat, el, st = stack["catalog"], stack["log"], stack["stream"]
    cold = [7001, 7002]
    evs = synthetic_events(900, 25, cat.raw_ids, seed=1, extra_ids=cold, p_extra=0.02)
    produce(el, st.topic, evs)
    el.produce(st.topic, b"3", b"{not json")
    el.produce(st.topic, b"4", encode(evs[10]))  # same idempotency key again
    el.flush()
    s = stack["settings"].model_copy(update={"compare_frozen": True, "publish_every_events": 400,
                                              "publish_every_s": 1e9, "checkpoint_every_events": 300})
    tr = StreamTrainer(s, st, stack["registry"], stack["index"], event_log=el, init=(stack["model"], cat))
    res = tr.run()
    try:
        stats = res["stats"]
        assert stats["records"] == 902 and stats["dead_letters"] == 2
        assert stats["cold_items"] == 2 and 7001 in tr.catalog and 7002 in tr.catalog
        reasons = sorted(d["reason"] for d in read_dead_letters(el, st.dead_letter_topic))
        assert reasons == ["duplicate", "malformed_json"]

        # prequential: gauges == running figures == recomputation from the per-event score log
        rows = read_score_log(tr.work / SCORE_LOG)
        assert len(rows) == stats["samples"] == res["prequential"]["n"]
        assert len({(r["p"], r["o"]) for r in rows}) == len(rows)
        ks = [10, 20, 100]
        for col, name in (("rank", "online"), ("rank_frozen", "frozen")):
            again = recompute(tr.work / SCORE_LOG, ks, column=col)
            for k in ks:
                assert abs(res["prequential"][name][f"recall@{k}"] - again[f"recall@{k}"]) < 1e-12
                assert abs(res["prequential"][name][f"mrr@{k}"] - again[f"mrr@{k}"]) < 1e-9
                g = REGISTRY.get_sample_value("t2diff_trainer_prequential_recall",
                                              {"k": str(k), "model": name, "scope": "cumulative"})
                assert abs(g - again[f"recall@{k}"]) < 1e-12
        win = recompute(tr.work / SCORE_LOG, [20], window=500)
        assert abs(REGISTRY.get_sample_value("t2diff_trainer_prequential_recall",
                                             {"k": "20", "model": "online", "scope": "window"})
                   - win["recall@20"]) < 1e-12
        # scored before trained: in the first batch the online model is still the start model
        first = [r for r in rows if r["step"] == 0]
        assert first and all(r["rank"] == r["rank_frozen"] for r in first)
        assert any(r["rank"] != r["rank_frozen"] for r in rows if r["step"] > 0)

        # offsets: committed == checkpoint == end of log
        assert tr.consumer.committed() == tr.consumer.end_offsets() == tr.offsets

        # published: registry LATEST == live index version; index vectors == that model's item tower
        reg = ModelRegistry(stack["registry"].root)
        v = reg.latest()
        assert v is not None and v == tr.index.live_version() and res["stats"]["published"] >= 2
        model, extra, meta = reg.load(v)
        assert meta["offsets"] == {str(p): o for p, o in tr.offsets.items()} and meta["max_event_ts_ms"] > 0
        assert 7001 in extra["catalog"]["raw_ids"]
        assert tr.index.count() == len(extra["catalog"]["raw_ids"]) == cat.num_items
        vecs = model.encode_items()[1:].detach()  # (N, D)
        q = torch.randn(3, vecs.shape[1], generator=torch.Generator().manual_seed(0))
        ref = torch.topk(q @ vecs.T, 5, dim=1).indices.numpy()
        raw = np.asarray(extra["catalog"]["raw_ids"])
        got = tr.index.search(q, 5)
        assert [[r for r, _ in row] for row in got] == raw[ref].tolist()
        assert res["publishes"][-1]["fresh_p50_s"] is not None
    finally:
        tr.close()


def test_index_outage_does_not_stop_training(stack, monkeypatch):
    cat, el, st = stack["catalog"], stack["log"], stack["stream"]
    produce(el, st.topic, synthetic_events(700, 20, cat.raw_ids, seed=2))
    s = stack["settings"].model_copy(update={"publish_every_events": 150, "publish_every_s": 1e9,
                                              "poll_max": 100})
    tr = StreamTrainer(s, st, stack["registry"], stack["index"], event_log=el, init=(stack["model"], cat))
    calls = {"n": 0}
    real = tr.index.publish

    def flaky(version, ids, vecs):
        calls["n"] += 1
        if calls["n"] == 1:  # the first: with a slow first index build, a later failure could be the exit publish
            raise ConnectionError("milvus down")
        return real(version, ids, vecs)

    monkeypatch.setattr(tr.index, "publish", flaky)
    try:
        res = tr.run()
        assert res["records"] == 700 and res["publish_failures"] == 1
        assert res["stats"]["samples"] > 600  # kept training through the failed publish
        reg = ModelRegistry(stack["registry"].root)
        live = [p["version"] for p in res["publishes"]]
        assert reg.latest() == live[-1] == tr.index.live_version()
        failed = sorted(set(reg.versions()) - set(live))
        assert failed == [1] and reg.latest() > 1  # a later version went live after the outage
        assert not tr.publisher.last_failed
    finally:
        tr.close()


def test_warm_start_from_offline_checkpoint(stack, tmp_path):
    from t2diff.model import save_checkpoint

    cat, el, st = stack["catalog"], stack["log"], stack["stream"]
    ck = tmp_path / "offline.pt"
    save_checkpoint(ck, stack["model"], catalog=cat.to_dict(), metrics={"test": {"recall@20": 0.1}})
    s = stack["settings"].model_copy(update={"init_checkpoint": str(ck), "publish_index": False,
                                              "publish_on_exit": False})
    tr = StreamTrainer(s, st, stack["registry"], event_log=el)
    try:
        assert tr.catalog.raw_ids.tolist() == cat.raw_ids.tolist()
        for (n, a), b in zip(tr.model.state_dict().items(), stack["model"].state_dict().values()):
            assert torch.equal(a.cpu(), b), n
        assert tr.model.training  # loaded in eval mode by load_checkpoint, switched back for training
    finally:
        tr.close()
    bad = tmp_path / "nocat.pt"
    save_checkpoint(bad, stack["model"])
    import pytest

    with pytest.raises(ValueError, match="catalog"):
        StreamTrainer(s.model_copy(update={"init_checkpoint": str(bad), "work_dir": tmp_path / "w2"}), st,
                      stack["registry"], event_log=el)


def test_a_scoring_step_count_outside_the_model_stops_the_trainer_at_start(stack, tmp_path):
    """eval_num_steps must lie in 1..T: 0 fails validation, T + 1 fails before a record is read (not mid-stream)."""
    import pytest
    from pydantic import ValidationError

    from trainer.online.settings import OnlineTrainerSettings

    with pytest.raises(ValidationError, match="eval_num_steps"):
        OnlineTrainerSettings(eval_num_steps=0)
    T = stack["model"].cfg.diffusion_steps
    s = stack["settings"].model_copy(update={"eval_num_steps": T + 1, "publish_index": False})
    with pytest.raises(ValueError, match=f"eval_num_steps = {T + 1} exceeds the model's diffusion steps T = {T}"):
        StreamTrainer(s, stack["stream"], stack["registry"], event_log=stack["log"],
                      init=(stack["model"], stack["catalog"]))
    tr = StreamTrainer(s.model_copy(update={"eval_num_steps": T, "work_dir": tmp_path / "w2"}), stack["stream"],
                       stack["registry"], event_log=stack["log"], init=(stack["model"], stack["catalog"]))
    try:
        assert tr.ranker.num_steps == T
    finally:
        tr.close()


def test_publisher_remembers_a_failed_last_publish(stack):
    """A failed publish leaves its events trained on but not live: the trainer's exit publishes again."""
    from t2diff.registry import ModelRegistry
    from trainer.online.publish import Publisher

    class Down:
        def publish(self, *a, **k):
            raise ConnectionError("milvus down")

    cat = stack["catalog"]
    pub = Publisher(ModelRegistry(stack["registry"].root), Down(), background=False)
    args = (stack["model"], cat, {}, {}, {0: 1}, np.zeros(3, dtype=np.int64))
    assert pub.submit(*args) and pub.last_failed and pub.failures == 1
    pub.index = None  # the index is back (here: not used)
    assert pub.submit(*args) and not pub.last_failed and len(pub.history) == 1


def test_training_samples_are_each_events_history_before_it(stack):
    """What the trainer trains on, poll by poll, equals a per-event replay of the records it applied: the user's
    last seq_len positives before the event (earlier events of the same poll included), left-padded, kept only with
    >= min_history of them; non-positive events and duplicates never enter a history."""
    cat, el, st = stack["catalog"], stack["log"], stack["stream"]
    evs = synthetic_events(700, 6, cat.raw_ids, seed=3)  # 6 users: each repeats many times within a poll
    for j in range(0, len(evs), 7):
        evs[j] = evs[j].model_copy(update={"event_type": EventType.impression})  # not a positive
    produce(el, st.topic, evs + [evs[11]])  # a duplicate at the end
    s = stack["settings"].model_copy(update={"min_history": 3, "prequential": False, "publish_index": False,
                                              "publish_on_exit": False})
    tr = StreamTrainer(s, st, stack["registry"], event_log=el, init=(stack["model"], cat))
    applied, trained = [], []
    process, train = tr.process, tr.train
    tr.process = lambda recs, decoded=None: (applied.extend(recs), process(recs, decoded))[1]
    tr.train = lambda *a: (trained.append([x.copy() for x in a]), train(*a))[1]
    try:
        tr.run()
    finally:
        tr.close()
    L, seen, hist, want = tr.hist.seq_len, set(), {}, []
    for r in applied:
        ev = decode(r.value)
        if ev.idempotency_key in seen or ev.event_type.value not in s.positive_types:
            seen.add(ev.idempotency_key)
            continue
        seen.add(ev.idempotency_key)
        it, ts = hist.setdefault(ev.user_id, ([], []))
        if len(it) >= 3:
            pad = [0] * (L - len(it))
            want.append((pad + it, pad + ts, cat.index(ev.item_id), ev.ts_ms))
        it.append(cat.index(ev.item_id)), ts.append(ev.ts_ms)
        del it[:-L], ts[:-L]
    got = [np.concatenate(x) for x in zip(*trained)]
    assert len(applied) == len(evs) + 1 and len(want) > 400 and len(got[2]) == len(want)
    assert got[0].tolist() == [w[0] for w in want] and got[1].tolist() == [w[1] for w in want]
    assert got[2].tolist() == [w[2] for w in want] and got[3].tolist() == [w[3] for w in want]
    assert all(tr.hist.window(u) == h for u, h in hist.items())
