"""Decoding in worker processes: same answers, same order, and a trainer that uses them trains the same."""
import copy

import torch

from streaming.events import EventError, decode_batch, encode
from trainer.online.decoding import DecodePool, Fields, decode_fields
from trainer.online.loop import SCORE_LOG, StreamTrainer
from trainer.online.prequential import read_score_log
from trainer.online.synthetic import produce, synthetic_events


def test_pool_matches_in_process_decoding_in_order(stack):
    evs = synthetic_events(300, 7, stack["catalog"].raw_ids, seed=2)
    raws = [encode(e) for e in evs]
    raws[5], raws[123], raws[250] = b"{not json", b"null", raws[0]  # bad ones and a duplicate, mid-batch
    pool = DecodePool(2, max_future_ms=300_000, min_chunk=1)  # chunks of 150 -> both workers busy
    try:
        got = pool.submit(raws)()
    finally:
        pool.close()
    want = decode_fields(raws)
    assert len(got) == len(want) == 300
    full = decode_batch(raws)  # the fields are the validated event's
    assert want[0] == Fields(full[0].user_id, full[0].item_id, full[0].event_type.value, full[0].ts_ms,
                             full[0].idempotency_key)
    assert [isinstance(x, EventError) for x in want] == [isinstance(x, EventError) for x in full]
    for g, w in zip(got, want):
        assert type(g) is type(w)
        assert (g.reason, g.detail) == (w.reason, w.detail) if isinstance(w, Exception) else g == w


def _run(stack, tmp, workers):
    s = stack["settings"].model_copy(update={"work_dir": tmp, "decode_workers": workers, "poll_max": 100,
                                              "publish_index": False, "publish_on_exit": False})
    torch.manual_seed(0)  # same dropout / diffusion noise in both runs
    tr = StreamTrainer(s, stack["stream"], stack["registry"], event_log=stack["log"],
                       init=(copy.deepcopy(stack["model"]), copy.deepcopy(stack["catalog"])))
    res = tr.run()
    tr.close()
    return tr, res


def test_trainer_with_decode_workers_trains_exactly_as_without(stack, tmp_path):
    st, el = stack["stream"], stack["log"]
    produce(el, st.topic, synthetic_events(700, 20, stack["catalog"].raw_ids, seed=4))
    el.produce(st.topic, b"1", b"{not json")
    el.flush()
    a, ra = _run(stack, tmp_path / "a", 0)
    stack["settings"] = stack["settings"].model_copy(update={"group": "trainer-b"})  # a fresh consumer group
    b, rb = _run(stack, tmp_path / "b", 2)
    assert ra["stats"] == rb["stats"] and ra["stats"]["records"] == 701 and ra["stats"]["dead_letters"] == 1
    assert ra["prequential"] == rb["prequential"]
    ranks = lambda t: [(r["p"], r["o"], r["rank"]) for r in read_score_log(t.work / SCORE_LOG)]  # noqa: E731
    assert ranks(a) == ranks(b)
    for (k, v), (k2, v2) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
