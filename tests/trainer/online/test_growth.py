"""Cold items: rows added without retraining, a vector from side features, optimizer state carried over."""
import numpy as np
import pytest
import torch

from t2diff.model import build_model
from trainer.online.growth import add_cold_items
from trainer.online.synthetic import synthetic_catalog, tiny_config


def _trained(cat):
    torch.manual_seed(0)
    model = build_model(tiny_config(cat), torch.from_numpy(cat.tags))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    hist = torch.randint(1, cat.num_items + 1, (16, 10))
    for _ in range(3):  # a few steps so the tag table and Adam moments are non-trivial
        loss, _ = model({"hist": hist, "target": torch.randint(1, cat.num_items + 1, (16,))})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


def test_cold_item_gets_a_vector_from_side_features():
    cat = synthetic_catalog(30, num_tags=6)
    model, opt = _trained(cat)
    old_vecs = model.encode_items().detach().clone()  # (N+1, D)
    tags = {5000: [1, 2], 5001: [1, 2], 5002: [5, 6], 5003: []}
    new, opt = add_cold_items(model, cat, opt, [5000, 5001, 5002, 5003, 5000], tags)
    assert new.tolist() == [31, 32, 33, 34] and cat.index(5002) == 33 and cat.num_items == 34
    assert cat.tags[31].tolist() == [1, 2]
    vecs = model.encode_items().detach()  # (N+5, D)
    assert torch.equal(vecs[:31], old_vecs)  # existing items untouched
    v = vecs[31:]
    assert torch.isfinite(v).all() and (v.norm(dim=1) > 0.1).all()
    same = (v[0] - v[1]).norm()
    diff = (v[0] - v[2]).norm()
    assert same < 0.1 * diff  # same tags -> nearly the same vector; ID rows start near zero
    # the grown model trains with the rebuilt optimizer, and the old Adam moments were kept
    st = next(s for p, s in opt.state.items() if p.shape[0] == 35)
    assert torch.count_nonzero(st["exp_avg_sq"][:31]) > 0 and torch.count_nonzero(st["exp_avg_sq"][31:]) == 0
    loss, _ = model({"hist": torch.tensor([[0] * 9 + [33]]), "target": torch.tensor([34])})
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(model.encode_items()).all()


def test_unknown_tags_are_dropped_not_fatal():
    cat = synthetic_catalog(10, num_tags=6)
    model, opt = _trained(cat)
    new, _ = add_cold_items(model, cat, opt, [9000], {9000: [99, 3, 0, 4]})
    assert cat.tags[new[0]].tolist() == [3, 4]
    with pytest.raises(KeyError):
        cat.index(9001)
    assert np.array_equal(add_cold_items(model, cat, opt, [9000], {})[0], np.zeros(0))
