"""Optimisation helpers shared by the offline harness and the stream trainer."""
from __future__ import annotations

import torch


def clip_per_parameter(model: torch.nn.Module, max_norm: float) -> None:
    """TF ``clip_by_norm`` applied to each variable separately (official NN_adam.py), not a global norm.

    Computed on the device without a host sync (a ``if norm > max`` per parameter would stall the GPU
    queue ~40 times a step, which dominates when many small runs share one GPU)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    # scale_i = min(1, max_norm / (||g_i|| + 1e-6)), four foreach kernels for all parameters together
    scales = torch._foreach_norm(grads)
    torch._foreach_add_(scales, 1e-6)
    torch._foreach_reciprocal_(scales)
    torch._foreach_mul_(scales, max_norm)
    torch._foreach_clamp_max_(scales, 1.0)
    torch._foreach_mul_(grads, scales)


def adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam as the official code; the fused CUDA kernel on GPUs (one launch for every parameter)."""
    return torch.optim.Adam(params, lr=lr, fused=device.type == "cuda" or None)
