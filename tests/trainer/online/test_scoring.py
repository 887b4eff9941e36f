"""The prequential ranker: each target's rank among every real item, from the model's own user and item vectors."""
import numpy as np
import pytest
import torch

from t2diff.model import build_model
from trainer.online.scoring import Ranker
from trainer.online.synthetic import synthetic_catalog, tiny_config


def _samples(n_items: int, B: int = 7, L: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    hist = rng.integers(1, n_items + 1, size=(B, L))
    hist[0, :5] = 0  # a left-padded history
    hts = np.tile(np.arange(L, dtype=np.int64), (B, 1)) * 1000
    return hist, hts, rng.integers(1, n_items + 1, size=B), np.full(B, L * 1000, dtype=np.int64)


@pytest.mark.parametrize("num_steps", [None, 3])
def test_ranks_count_the_items_scored_above_the_target_and_leave_the_mode_alone(num_steps):
    cat = synthetic_catalog(30, num_tags=5)
    torch.manual_seed(0)
    model = build_model(tiny_config(cat, seq_len=12), torch.from_numpy(cat.tags)).train()
    with torch.no_grad():  # as if trained: a fresh U-Net's last layer is zero, which would make the noise moot
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    hist, hts, target, tts = _samples(cat.num_items)
    ranks = Ranker(torch.device("cpu"), seed=3, num_steps=num_steps, fast=False).rank(model, hist, hts, target, tts,
                                                                                      step=4)

    assert model.training  # scored in eval mode, handed back in train mode
    model.eval()

    def expected(n: int | None) -> list[int]:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(3 + 4)  # the ranker seeds the reverse process with seed + step
            e_u = model.encode_users(torch.from_numpy(hist), torch.from_numpy(hts), now_ts=torch.from_numpy(tts),
                                     generator=gen, num_steps=n)  # (B, D)
            scores = (e_u @ model.encode_items().T).numpy()  # (B, N+1), column 0 = padding
        return [1 + int((row[1:] > row[t]).sum()) for row, t in zip(scores, target)]

    assert ranks.tolist() == expected(num_steps) and ranks.dtype == np.int64
    # the step count changes the ranks here, so a ranker that ignored it would fail one of the two cases
    assert expected(None) != expected(3)


def test_chunks_give_the_same_ranks_for_a_deterministic_tower():
    cat = synthetic_catalog(30, num_tags=5)
    torch.manual_seed(1)
    model = build_model(tiny_config(cat, arch="sasrec", seq_len=12), torch.from_numpy(cat.tags))
    hist, hts, target, tts = _samples(cat.num_items, B=9, seed=1)
    r = Ranker(torch.device("cpu"), seed=0, num_steps=None, fast=False)
    whole = r.rank(model, hist, hts, target, tts)
    assert r.rank(model, hist, hts, target, tts, chunk=4).tolist() == whole.tolist()
    assert whole.min() >= 1 and whole.max() <= cat.num_items


def test_the_cuda_graph_is_kept_across_steps_and_rebuilt_when_a_parameter_is_replaced(monkeypatch):
    """The graph reads parameters in place, so optimizer steps need no recapture; a grown embedding table is a new
    parameter, so it must be captured again. Checked without a GPU: the graph class is replaced by a recorder."""
    import t2diff.model.graphed as graphed

    built = []
    monkeypatch.setattr(graphed, "GraphedEncoder", lambda model, **kw: built.append((model, kw)) or len(built))
    cat = synthetic_catalog(30, num_tags=5)
    model = build_model(tiny_config(cat, seq_len=12), torch.from_numpy(cat.tags))
    r = Ranker(torch.device("cuda"), seed=0, num_steps=10, fast=True)  # a device object only: nothing runs on it
    assert r._graphed(model, 64) == 1 and r._graphed(model, 64) == 1
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # an optimizer step: same storage
    assert r._graphed(model, 64) == 1
    model.items.id_weight = torch.nn.Parameter(model.items.id_weight.detach().clone())  # replaced, as a grown one is
    assert r._graphed(model, 64) == 2
    assert built[-1][1] == {"batch_size": 64, "num_steps": 10, "compile": True}
    assert Ranker(torch.device("cuda"), 0, 10, fast=False)._graphed(model, 64) is None  # fast scoring off
    assert Ranker(torch.device("cpu"), 0, 10, fast=True)._graphed(model, 64) is None
    sasrec = build_model(tiny_config(cat, arch="sasrec", seq_len=12), torch.from_numpy(cat.tags))
    assert r._graphed(sasrec, 64) is None and len(built) == 2  # no reverse process to graph
