"""The demo's in-process arms (t2diff.demo.direct) on a tiny synthetic catalogue: serving's encoder and exact
retriever answer them, and the answers are what the model itself ranks for the history the demo observed."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from serving.world import synthetic_catalog

ARMS = [{"name": "treatment", "source": "t2diff"}, {"name": "frozen", "source": "t2diff_frozen"},
        {"name": "control", "source": "sasrec"}, {"name": "popular", "source": "popularity"}]
DAY = 86_400_000


@pytest.fixture
def world(tmp_path):
    from t2diff.model import ModelConfig, build_model, save_checkpoint
    from t2diff.registry import ModelRegistry

    cat = synthetic_catalog(50, seed=3)
    kw = dict(num_items=cat.num_items, num_tags=cat.num_tags, max_tags=cat.max_tags, seq_len=12)
    torch.manual_seed(0)
    t2 = build_model(ModelConfig(diffusion_steps=4, **kw), torch.as_tensor(cat.tags))
    sas = build_model(ModelConfig(arch="sasrec", **kw), torch.as_tensor(cat.tags))
    ckpt = {"t2diff_frozen": save_checkpoint(tmp_path / "t2diff_warm.pt", t2, catalog=cat.to_dict()),
            "sasrec": save_checkpoint(tmp_path / "sasrec_warm.pt", sas, catalog=cat.to_dict())}
    reg = ModelRegistry(tmp_path / "registry")
    return cat, ckpt, reg, {"t2diff_frozen": t2, "sasrec": sas}


def _client(world, **kw):
    from t2diff.demo.direct import DirectRecall

    cat, ckpt, reg, _ = world
    popular = cat.raw_ids[::-1][:30].tolist()
    return DirectRecall(ARMS, ckpt, reg.root, popular, **kw), popular


def _event(user, item, ts, kind="click"):
    return SimpleNamespace(user_id=user, item_id=item, ts_ms=ts, event_type=SimpleNamespace(value=kind))


def _expected(model, cat, hist, now_ms, k):
    """The model's own ranking: left-padded known items (last seq_len), fixed noise, exact top-k."""
    known = [(cat.index(i), t) for i, t in hist if i in cat][-model.cfg.seq_len:]
    L = model.cfg.seq_len
    h = torch.zeros(1, L, dtype=torch.long)
    ht = torch.zeros(1, L, dtype=torch.long)
    h[0, L - len(known):] = torch.tensor([i for i, _ in known])
    ht[0, L - len(known):] = torch.tensor([t for _, t in known])
    with torch.no_grad():
        u = model.encode_users(h, ht, torch.tensor([now_ms]), generator=torch.Generator().manual_seed(0))
        items = model.encode_items()[1:].float()
        top = torch.topk(u.float() @ items.T, k, dim=1).indices[0]
    return [int(x) for x in cat.raw((top + 1).numpy())]


def test_in_process_arms_answer_with_the_models_ranking(world):
    cat, ckpt, reg, models = world
    client, popular = _client(world)
    assert client.mode == "in_process"
    raw = cat.raw_ids.tolist()
    hist = [(raw[i], DAY + 60_000 * i) for i in range(16)] + [(999_999, DAY + 10**6)]  # one item unknown to the model
    for i, t in hist:
        client.observe(_event(7, i, t))
    client.observe(_event(7, raw[40], DAY + 2 * 10**6, kind="impression"))  # not a positive: not history
    client.observe(_event(7, 999_999, DAY + 10**6, kind="play"))  # a repeat of the last event: kept once
    now = 3 * DAY
    for arm, src in [("frozen", "t2diff_frozen"), ("control", "sasrec")]:
        ans = client.recall(7, 10, arm, now_ms=now)
        assert not ans.fallback and ans.arm == arm
        assert ans.model_version == f"file:{ckpt[src].name}"
        assert ans.items == _expected(models[src], cat, hist, now, 10)
    # no registry version yet: the treatment arm answers from the warm start it would come from
    t = client.recall(7, 10, "treatment", now_ms=now)
    assert t.items == client.recall(7, 10, "frozen", now_ms=now).items and not t.fallback
    # whole catalogue, no exclusion of seen items
    assert len(client.recall(7, cat.num_items + 5, "frozen", now_ms=now).items) == cat.num_items
    p = client.recall(7, 5, "popular", now_ms=now)
    assert p.items == popular[:5] and not p.fallback and p.model_version is None


def test_unknown_users_fall_back_to_popularity(world):
    client, popular = _client(world)
    client.observe(_event(8, 999_999, DAY))  # only an item the model does not know
    for user in (8, 9):
        ans = client.recall(user, 5, "control", now_ms=2 * DAY)
        assert ans.fallback and ans.items == popular[:5]


def test_treatment_follows_the_registry(world):
    cat, ckpt, reg, models = world
    client, _ = _client(world)
    raw = cat.raw_ids.tolist()
    hist = [(raw[i], DAY + 60_000 * i) for i in range(20, 35)]
    for i, t in hist:
        client.observe(_event(5, i, t))
    new = models["t2diff_frozen"]
    with torch.no_grad():
        for prm in new.parameters():
            prm.add_(0.5 * torch.randn(prm.shape, generator=torch.Generator().manual_seed(1)))
    v1 = reg.publish(new, extra={"catalog": cat.to_dict()})
    client._next_poll = 0.0
    ans = client.recall(5, 10, "treatment", now_ms=2 * DAY)
    assert ans.model_version == str(v1) and ans.items == _expected(new, cat, hist, 2 * DAY, 10)
    frozen = client.recall(5, 10, "frozen", now_ms=2 * DAY)
    assert frozen.items != ans.items  # the frozen arm keeps its checkpoint
    with torch.no_grad():
        for prm in new.parameters():
            prm.mul_(-1.0)
    v2 = reg.publish(new, extra={"catalog": cat.to_dict()})
    assert client.recall(5, 10, "treatment", now_ms=2 * DAY).model_version == str(v1)  # polled every 2 s
    client._next_poll = 0.0
    ans2 = client.recall(5, 10, "treatment", now_ms=2 * DAY)
    assert ans2.model_version == str(v2) and ans2.items == _expected(new, cat, hist, 2 * DAY, 10)


def test_observe_frame_builds_the_same_histories(world):
    client, _ = _client(world)
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2, 1], "item_id": [17, 27, 17, 37, 47],
                          "ts_ms": [10, 20, 10, 30, 40], "event_type": ["click", "play", "click", "impression", "like"]})
    client.observe_frame(frame)
    h = client.histories([1, 2])
    assert h[0].items == [17, 27, 47] and h[0].ts_ms == [10, 20, 40] and h[1] is None


def test_popular_items_counts_watches_before_the_cut():
    from t2diff.demo.direct import popular_items

    # item 9 is shown most but never watched; item 4 is watched only after the cut
    log_df = pd.DataFrame({"video_id": [1, 2, 2, 2, 3, 3, 9, 9, 9, 9, 4, 4, 4, 4],
                           "time_ms": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 101, 102, 103],
                           "is_click": [1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1],
                           "long_view": [0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]})
    assert popular_items(log_df, until_ms=50) == [2, 3, 1]
