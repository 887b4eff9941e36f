"""Full-catalogue ranking of new positives for the stream trainer's prequential test (score, then train).

Kept apart from the loop because on CUDA it is its own small engine: the ranks are computed without a host
sync (read back after the next poll, so scoring never stalls training), and with ``fast_scoring`` the user
tower runs as a CUDA graph that is rebuilt only when a parameter is replaced.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from trainer.metrics import ranks_from_scores


def host_tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host tensor for a device copy. On CUDA it is pinned: a non_blocking copy from pageable memory still
    waits for the GPU queue to reach it (the driver stages it), which made host and GPU take turns every step;
    from pinned memory it is a true async DMA (the caching host allocator keeps the buffer until it is done)."""
    t = torch.from_numpy(a)
    return t.pin_memory() if device.type == "cuda" else t


class Ranker:
    """Ranks each sample's target among all items under a given model (the live one or the frozen baseline)."""

    def __init__(self, device: torch.device, seed: int, num_steps: int | None, fast: bool) -> None:
        self.device = device
        self.seed = seed
        self.num_steps = num_steps  # reverse steps of the diffusion user tower (None: the model's own T)
        self.fast = fast
        self._graphs: dict[int, tuple[tuple[int, ...], object]] = {}  # id(model) -> (weights key, GraphedEncoder)

    def rank(self, model: torch.nn.Module, hist: np.ndarray, hts: np.ndarray, target: np.ndarray,
             tts: np.ndarray, step: int = 0, chunk: int = 4096) -> np.ndarray:
        """Full-catalogue rank of each target under ``model``; ``step`` seeds the reverse process's noise."""
        return self.rank_async(model, hist, hts, target, tts, step, chunk)()

    @torch.no_grad()
    def rank_async(self, model: torch.nn.Module, hist: np.ndarray, hts: np.ndarray, target: np.ndarray,
                   tts: np.ndarray, step: int = 0, chunk: int = 4096) -> Callable[[], np.ndarray]:
        """``rank`` without waiting: enqueues the scoring and a copy of the ranks to pinned host memory, and
        returns a callable that waits for that copy only (not for the training steps queued after it)."""
        was = model.training
        model.eval()
        dev = self.device
        e_i = model.encode_items()  # (N+1, D)
        gen = torch.Generator(device=dev).manual_seed(self.seed + step)
        graphed = self._graphed(model, chunk)
        out = []
        for s in range(0, len(target), chunk):
            # host tensors in: the model range-checks them on the host and copies them over (no device sync)
            h, ht = host_tensor(hist[s:s + chunk], dev), host_tensor(hts[s:s + chunk], dev)
            now = host_tensor(tts[s:s + chunk], dev).to(dev, non_blocking=True)
            if graphed is not None:
                e_u = graphed(h, ht, now)  # (B, D); noise from the default CUDA generator
            else:
                e_u = model.encode_users(h, ht, now_ts=now, generator=gen, num_steps=self.num_steps)  # (B, D)
            t = host_tensor(target[s:s + chunk], dev).to(dev, non_blocking=True)
            out.append(ranks_from_scores(e_u @ e_i.T, t))
        model.train(was)
        ranks = torch.cat(out)
        if dev.type != "cuda":
            return ranks.numpy
        host = torch.empty(ranks.shape, dtype=ranks.dtype, pin_memory=True)
        host.copy_(ranks, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return lambda: (done.synchronize(), host.numpy())[1]

    def _graphed(self, model: torch.nn.Module, chunk: int):
        """A CUDA-graphed (and torch.compile'd) encoder for ``model`` on CUDA with ``fast``, else None.

        The graph reads the parameters in place, so optimizer steps are seen without recapture; it is rebuilt
        when a parameter is replaced (cold items grow the embedding table)."""
        if self.device.type != "cuda" or not self.fast or getattr(model, "diffusion", None) is None:
            return None
        from t2diff.model.graphed import GraphedEncoder

        key = tuple(p.data_ptr() for p in model.parameters())
        cached = self._graphs.get(id(model))
        if cached is None or cached[0] != key:
            was = model.training
            enc = GraphedEncoder(model, batch_size=chunk, num_steps=self.num_steps, compile=True)
            model.train(was)
            self._graphs[id(model)] = cached = (key, enc)
        return cached[1]
