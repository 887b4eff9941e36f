"""T2Diff (WWW 2025, arXiv 2502.20687): diffusion-based cross-interaction two-tower model.

Archs served by this one module (ablations are flags of the same network):
* ``t2diff``          drift diffusion generates x̂_{n+1}, which joins the session transformer;
* ``t2diff_no_dp``    same, without drift preparation (diffuses the item embeddings directly);
* ``mixed_attention`` no diffusion; the session transformer sees only the last k items.

Interface (docs/ARCHITECTURE.md): ``forward(batch) -> (loss, metrics)`` with loss = full-softmax CE over
the whole catalogue (Eq. 24) + λ·L_KL (Eq. 25); ``encode_users`` (reverse process, eval);
``encode_items``; ``add_items``. Histories are canonicalised to the last ``cfg.seq_len`` positions
(left-padded with 0 when shorter), so callers may pass any length.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from t2diff.model.attention import MixedAttention, time_lag_buckets
from t2diff.model.config import ModelConfig
from t2diff.model.diffusion import DriftDiffusion
from t2diff.model.towers import TwoTowerModule, item_vectors

log = logging.getLogger(__name__)

DIFFUSION_ARCHS = ("t2diff", "t2diff_no_dp")


def user_head(user_tower: MixedAttention, cfg: ModelConfig, x: torch.Tensor, mask: torch.Tensor,
              x_next: torch.Tensor | None, hist_ts: torch.Tensor | None, now_ts: torch.Tensor | None) -> torch.Tensor:
    """Mixed attention with the time-lag feature: x (B, n, D), mask (B, n), x̂_{n+1} (B, D) -> e_u (B, U)."""
    lag = time_lag_buckets(hist_ts, None if now_ts is None else now_ts.to(x.device, non_blocking=True), mask) \
        if cfg.time_lag else None
    return user_tower(x, mask, x_next, lag)


def encode_from_noise(diffusion: DriftDiffusion, user_tower: MixedAttention, cfg: ModelConfig, hist: torch.Tensor,
                      hist_ts: torch.Tensor, now_ts: torch.Tensor, noise: torch.Tensor, num_steps: int,
                      id_weight: torch.Tensor, tag_weight: torch.Tensor, item_tags: torch.Tensor) -> torch.Tensor:
    """The whole user tower as one function of tensors: canonical (B, n) histories, their times, "now" (B,), the
    reverse process's noise (num_steps + 1, B, L', D) and the item tables -> e_u (B, U). What t2diff/model/aot.py
    exports and compiles; for the same noise it equals ``encode_users``."""
    mask = hist > 0
    x = item_vectors(hist, id_weight, tag_weight, item_tags, cfg.emb_max_norm)  # (B, n, D)
    x_next = diffusion.sample_from_noise(x, mask, noise, num_steps)
    return user_head(user_tower, cfg, x, mask, x_next, hist_ts, now_ts)


def _field(batch: Any, key: str, default: Any = None) -> Any:
    if isinstance(batch, Mapping):
        return batch.get(key, default)
    return getattr(batch, key, default)


class T2Diff(TwoTowerModule):
    def __init__(self, cfg: ModelConfig, item_tags: torch.Tensor) -> None:
        if cfg.arch not in DIFFUSION_ARCHS + ("mixed_attention",):
            raise ValueError(f"T2Diff does not implement arch {cfg.arch!r}")
        super().__init__(cfg, item_tags)
        # cfg.tied_input (an offline experiment, not the paper's design): the history enters as the candidate-side
        # vectors (TwoTowerModule.input_vectors, user_dim wide), so diffusion and mixed attention are user_dim
        # wide, and Eq. 22's FFN maps concat(h_l, h_s) (2*user_dim) back to user_dim. The compiled serving paths
        # read raw vectors.
        inner = dataclasses.replace(cfg, id_dim=cfg.user_dim - cfg.tag_dim, user_ffn=True) if cfg.tied_input else cfg
        self.diffusion = DriftDiffusion(inner) if cfg.arch in DIFFUSION_ARCHS else None
        # cfg.extra["next_token"] (mixed_attention only, offline ablations; ModelConfig checks the value): the session
        # gets an extra token in place of T2Diff's x̂_{n+1} = x_n + ẑ0[-1] (Eq. 18), without the diffusion, to tell
        # apart what that token is worth from what its generated drift is worth. "last": x_n (Eq. 18 with zero
        # drift). "noise": x_n + N(0, I), at training and inference: what an untrained official U-Net gives (its
        # last LayerNorm makes ẑ0 unit-scale whatever the input; ModelConfig.unet_zero_out). "learned": one learned
        # vector, the same for every user (a constant "sink" token; started unit-scale like that ẑ0).
        self.next_token = cfg.extra.get("next_token", "none")
        self.token_vector = nn.Parameter(torch.randn(inner.edim)) if self.next_token == "learned" else None  # (D,)
        self.user_tower = MixedAttention(inner, use_next=self.diffusion is not None or self.next_token != "none")
        # Optional compiled whole user tower (t2diff/model/aot.py): (hist, hist_ts, now_ts, noise, id_weight, tag_weight,
        # item_tags) -> e_u, with its ``num_steps``. Outside the module registry, like the denoiser.
        object.__setattr__(self, "_compiled_tower", None)

    def set_compiled_tower(self, fn: Any) -> None:
        """Run ``encode_users`` on the host through ``fn`` (an :func:`encode_from_noise` compiled for
        ``fn.num_steps`` reverse steps) when the step count matches; None restores the eager path."""
        if fn is not None and self.cfg.tied_input:
            raise ValueError("the compiled user tower reads raw item vectors; tied_input models run eager")
        object.__setattr__(self, "_compiled_tower", fn)

    # ---- inputs ----------------------------------------------------------------------------------
    def _canon(self, hist: torch.Tensor, hist_ts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Last seq_len positions, left-padded with 0: (B, L) -> (B, n)."""
        n = self.cfg.seq_len
        # Range check where the input lives: on a host tensor it is free; on a device tensor it costs one sync
        # (the stream trainer passes host tensors so its steps never wait on the GPU).
        if hist.numel() and bool(((hist < 0) | (hist > self.items.num_items)).any()):
            raise ValueError(f"item index out of range 0..{self.items.num_items}")
        hist = hist.to(self.device, torch.long, non_blocking=True)  # truly async from pinned host memory
        if hist_ts is not None:
            hist_ts = hist_ts.to(self.device, torch.long, non_blocking=True)
        L = hist.shape[1]
        if L > n:
            hist = hist[:, -n:]
            hist_ts = hist_ts[:, -n:] if hist_ts is not None else None
        elif L < n:
            hist = F.pad(hist, (n - L, 0))
            hist_ts = F.pad(hist_ts, (n - L, 0)) if hist_ts is not None else None
        return hist, hist_ts

    def _user(self, x: torch.Tensor, mask: torch.Tensor, x_next: torch.Tensor | None,
              hist_ts: torch.Tensor | None, now_ts: torch.Tensor | None) -> torch.Tensor:
        return user_head(self.user_tower, self.cfg, x, mask, x_next, hist_ts, now_ts)

    # ---- training --------------------------------------------------------------------------------
    def forward(self, batch: Any, host_metrics: bool = True, loss_fn: Any = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """(loss, metrics). ``host_metrics=False`` leaves the metrics as detached 0-dim device tensors, so the
        step needs no host sync (the stream trainer reads them only when it logs). ``loss_fn``: a compiled
        ``self._loss`` (``torch.compile(model._loss)``; the stream trainer uses one on CUDA, where the eager
        step is ~1,000 small kernel launches and bound by the host)."""
        hist, hist_ts = self._canon(_field(batch, "hist"), _field(batch, "hist_ts"))
        target = _field(batch, "target").to(self.device, torch.long, non_blocking=True)
        target_ts = _field(batch, "target_ts")
        if target_ts is not None:
            target_ts = target_ts.to(self.device, non_blocking=True)
        loss, m = (loss_fn or self._loss)(hist, hist_ts, target, target_ts)
        return loss, ({k: float(v) for k, v in m.items()} if host_metrics else m)

    def _loss(self, hist: torch.Tensor, hist_ts: torch.Tensor | None, target: torch.Tensor,
              target_ts: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 25 on canonical device inputs: hist (B, n), target (B,) -> (loss, detached metric tensors)."""
        mask = hist > 0  # (B, n)
        x = self.input_vectors(hist)  # (B, n, D)
        x_tgt = self.input_vectors(target)  # (B, D)
        kl = x.new_zeros(())
        x_next = None
        if self.diffusion is not None:
            kl, x_next = self.diffusion.training_loss(x, x_tgt, mask)
        else:  # x_n-based tokens are detached like T2Diff's x̂_{n+1} (the token alone differs between the two);
            x_next = self._token(x.detach(), None)  # the learned one trains through the tower loss
        e_u = self._user(x, mask, x_next, hist_ts, target_ts)  # (B, U)
        e_i = self.encode_items()  # (N+1, U)
        logits = e_u @ e_i[1:].T  # (B, N): full softmax over the real catalogue (Eq. 24), no padding class
        ce = F.cross_entropy(logits, target - 1)
        loss = ce + self.cfg.lambda_kl * kl
        with torch.no_grad():
            hit1 = (logits.argmax(1) == target - 1).float().mean()
        return loss, {"loss": loss.detach(), "ce": ce.detach(), "kl": kl.detach(), "hit@1": hit1}

    # ---- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_users(self, hist: torch.Tensor, hist_ts: torch.Tensor | None = None, now_ts: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, num_steps: int | None = None) -> torch.Tensor:
        """(B, L) left-padded histories -> (B, user_dim). Runs the reverse process (Alg. 2) for diffusion archs.

        ``num_steps``: reverse steps (strided); default cfg.infer_steps or T. ``generator`` must live on
        the model's device.
        """
        hist, hist_ts = self._canon(hist, hist_ts)
        tower = self._compiled_tower
        if tower is not None and self.diffusion is not None and hist.device.type == "cpu" \
                and (num_steps or self.diffusion.schedule.num_inference_steps) == tower.num_steps:
            if hist_ts is None:
                hist_ts = torch.zeros_like(hist)
            if now_ts is None:  # what time_lag_buckets does without a clock: each row's latest event
                now_ts = hist_ts.masked_fill(hist == 0, 0).amax(dim=1)
            B, n = hist.shape
            noise = torch.randn(self.diffusion.noise_shape(B, n, self.cfg.edim, tower.num_steps), generator=generator)
            it = self.items
            return tower(hist, hist_ts, now_ts.to(torch.long), noise, it.id_weight.detach(), it.tag_weight.detach(),
                         it.item_tags)
        return self._encode(hist, hist_ts, now_ts, generator, num_steps)

    def _encode(self, hist: torch.Tensor, hist_ts: torch.Tensor | None, now_ts: torch.Tensor | None,
                generator: torch.Generator | None, num_steps: int | None) -> torch.Tensor:
        """Graph-capturable core of encode_users (no host syncs): canonical (B, n) inputs on the device."""
        mask = hist > 0
        x = self.input_vectors(hist, table=True)  # (B, n, D)
        if self.diffusion is not None:
            x_next = self.diffusion.sample(x, mask, num_steps, generator)
        else:
            x_next = self._token(x, generator)
        return self._user(x, mask, x_next, hist_ts, now_ts)

    def _token(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor | None:
        """mixed_attention's extra session token (cfg.extra["next_token"]): x (B, n, D) -> (B, D), or None."""
        if self.next_token == "none":
            return None
        if self.next_token == "learned":
            return self.token_vector.expand(x.shape[0], -1)
        x_n = x[:, -1]  # (B, D): left padding puts x_n last
        if self.next_token == "noise":  # generator only when given (torch.compile, as DriftDiffusion)
            return x_n + torch.randn(x_n.shape, device=x.device, dtype=x.dtype,
                                     **({} if generator is None else {"generator": generator}))
        return x_n
