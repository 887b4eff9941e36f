"""Optional fast path for ``encode_users`` on CUDA: one CUDA graph per (batch size, step count).

The reverse process is T small U-Net calls (dozens of tiny kernels each); at batch 4096 the GPU finishes a
kernel faster than Python can launch the next one, so launch overhead dominates. Capturing the whole
encode (item lookups, T reverse steps, mixed attention) into a CUDA graph replays it with one launch.
Noise is drawn from the default CUDA generator, which PyTorch advances per replay (fresh noise each call).

Optionally the U-Net is torch.compile'd first (fuses swish/LayerNorm/step arithmetic), or the whole reverse
loop runs as one Triton kernel (``reverse="triton"``, t2diff/model/triton_reverse.py) and the mixed-attention
user tower is torch.compile'd (``compile_user``), or everything around that kernel is (``compile_encode``); all are
opt-in, eager ``model.encode_users`` stays the default.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


class GraphedEncoder:
    """encoder = GraphedEncoder(model, batch_size=4096, num_steps=50); e_u = encoder(hist, hist_ts, now_ts).

    Inputs with fewer rows than ``batch_size`` are zero-padded (empty histories) and sliced off again.
    The returned tensor is a fresh copy (the static output buffer is reused by the next replay).
    """

    def __init__(self, model: nn.Module, batch_size: int, num_steps: int | None = None, compile: bool = False,
                 warmup: int = 2, autocast_dtype: torch.dtype | None = None, reverse: str | None = None,
                 compile_user: bool = False, compile_encode: bool = False) -> None:
        dev = model.device
        if dev.type != "cuda":
            raise ValueError("GraphedEncoder needs the model on a CUDA device")
        self.model, self.B, self.num_steps = model.eval(), batch_size, num_steps
        if compile and getattr(model, "diffusion", None) is not None:
            model.diffusion.compile_denoiser(dynamic=False)
        if reverse == "triton" and getattr(model, "diffusion", None) is not None:
            from t2diff.model.triton_reverse import TritonReverse

            model.diffusion.set_reverse(TritonReverse(model.diffusion.unet))  # autotuned in the warm-up below
        elif reverse is not None:
            raise ValueError(f"unknown reverse {reverse!r}; expected None or 'triton'")
        if compile_user:  # an instance attribute shadows the method: state_dict keys stay as they are
            model._user = torch.compile(model._user, dynamic=False)
        # compile_encode: item lookups, masks, padding, the noise draw and the user tower in one torch.compile,
        # so ~40 small kernels (a few µs each even inside a CUDA graph: ~0.4 ms of a 4 ms encode at batch 4096
        # on an H100 beside the 3.6 ms Triton reverse kernel) become a few fused ones. The Triton launch is a
        # graph break (TritonReverse.__call__ is compiler-disabled). fallback_random: the noise is aten's randn,
        # the same draw as eager encode_users makes for the same seed (Inductor's own RNG would differ).
        self._encode = (torch.compile(model._encode, dynamic=False, options={"fallback_random": True})
                        if compile_encode else model._encode)
        n = model.cfg.seq_len
        self.hist = torch.zeros(batch_size, n, dtype=torch.long, device=dev)
        self.ts = torch.zeros(batch_size, n, dtype=torch.long, device=dev)
        self.now = torch.zeros(batch_size, dtype=torch.long, device=dev)
        ac = (lambda: torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None))
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(s), ac():
            for _ in range(warmup):  # compile / cuBLAS warm-up outside the capture
                self._encode(self.hist, self.ts, self.now, None, num_steps)
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph), ac():
            self.out = self._encode(self.hist, self.ts, self.now, None, num_steps).float()
        log.info("captured encode_users graph: batch %d, steps %s, compile %s", batch_size, num_steps, compile)

    @torch.no_grad()
    def __call__(self, hist: torch.Tensor, hist_ts: torch.Tensor | None = None,
                 now_ts: torch.Tensor | None = None) -> torch.Tensor:
        hist, hist_ts = self.model._canon(hist, hist_ts)
        b = hist.shape[0]
        if b > self.B:
            raise ValueError(f"batch {b} > captured batch size {self.B}")
        if hist_ts is None:
            hist_ts = torch.zeros_like(hist)  # -> time-lag bucket "unknown", as in eager mode
        if now_ts is None:  # same fallback as eager: latest event per row
            now_ts = hist_ts.masked_fill(hist == 0, 0).amax(1)
        self.hist.zero_(), self.ts.zero_(), self.now.zero_()
        self.hist[:b].copy_(hist)
        self.ts[:b].copy_(hist_ts)
        self.now[:b].copy_(now_ts.to(self.now.device, torch.long, non_blocking=True))
        self.graph.replay()
        return self.out[:b].clone()
