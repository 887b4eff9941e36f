import pytest
import torch


def test_clip_is_per_parameter_not_global():
    from trainer.optim import clip_per_parameter

    m = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False))
    m[0].weight.grad = torch.tensor([[220.0]])
    m[1].weight.grad = torch.tensor([[50.0]])
    clip_per_parameter(m, 110.0)
    assert m[0].weight.grad.item() == pytest.approx(110.0, rel=1e-5)  # clipped to the norm
    assert m[1].weight.grad.item() == pytest.approx(50.0)  # untouched (a global clip would shrink it)
