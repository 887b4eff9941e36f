"""Drift diffusion (paper §4.1-4.2, Alg. 1-2): generate the embedding of the next item before it happens.

* Drift preparation (Eq. 10-11): z0 = X[2:n+1] − X[1:n], the per-position change between consecutive items;
  the last position's drift points at the (training) target.
* Training (Alg. 1): t ~ U[0, T), z_t = q(z_t | z0), the U-Net predicts ẑ0 from concat(z_t, X[1:n]);
  L_KL (Eq. 23) = mean over real positions of ||z0 − ẑ0||_2 (official: the L2 norm, not its square).
* Inference (Alg. 2): T (or ``num_steps``) reverse steps from N(0, I).
* Drift utilisation (Eq. 18): x̂_{n+1} = x_n + ẑ0[-1].

Stop-gradient: both the sequence and the target embeddings enter detached, and x̂_{n+1} leaves detached,
as in the official code, so L_KL trains the U-Net only and never the item embedding table.

Padding: positions whose drift is not defined (a padded item, or a padded successor) are zeroed in z_t at
every step and excluded from L_KL, so what sits under the mask never reaches the U-Net. The U-Net needs a
length divisible by 2^(levels-1): the sequence is left-padded with more zero "padding items" (50 -> 56).

``drift_preparation=False`` is the "w/o DP" ablation: z0 is the shifted sequence X[2:n+1] itself (the item
embeddings are diffused directly) and x̂_{n+1} = ẑ0[-1].

As in the official code, by default (``train_next="target"``) x̂_{n+1} at training time is reconstructed from a
noised copy of the true drift (which includes the target), and the reverse process runs only at inference. For
t small that x̂ is nearly the target, so the tower learns to trust a vector that at inference is a guess from
noise; ``train_next="prior"`` (one U-Net call from pure noise, the first reverse step) and ``"sample"`` (the
reverse process itself) give the tower at training what it gets at inference. L_KL is the same in all three.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2diff.model.config import ModelConfig
from t2diff.model.schedule import NoiseSchedule
from t2diff.model.unet import UNet1D


def prepare_drift(x: torch.Tensor, x_next: torch.Tensor, drift: bool = True) -> torch.Tensor:
    """x (B, L, D) = X[1:n], x_next (B, D) = x_{n+1} -> z0 (B, L, D) (Eq. 10-11; plain shift without DP)."""
    shifted = torch.cat([x[:, 1:], x_next.unsqueeze(1)], dim=1)  # X[2:n+1]
    return shifted - x if drift else shifted


def utilise_drift(x_last: torch.Tensor, z0: torch.Tensor, drift: bool = True) -> torch.Tensor:
    """Eq. 18: x̂_{n+1} = x_n + ẑ0[-1]; x_last (B, D), z0 (B, L, D) -> (B, D)."""
    return x_last + z0[:, -1] if drift else z0[:, -1]


def drift_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) real-item mask -> (B, L) positions whose drift x_{j+1} − x_j is defined (x_{n+1} always is)."""
    nxt = torch.cat([mask[:, 1:], torch.ones_like(mask[:, :1])], dim=1)
    return mask & nxt


class DriftDiffusion(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.drift = cfg.drift_preparation and cfg.arch != "t2diff_no_dp"
        self.train_next = cfg.train_next
        self.train_next_steps = cfg.train_next_steps
        self.schedule = NoiseSchedule(cfg.diffusion_steps, cfg.schedule, cfg.beta_a, cfg.beta_b, cfg.posterior)
        if cfg.infer_steps:
            self.schedule.set_timesteps(cfg.infer_steps)
        self.unet = UNet1D(cfg.edim, tuple(cfg.unet_channels), cfg.diffusion_steps, cfg.step_weight, cfg.unet_zero_out)
        # Denoiser used by the reverse loop: the U-Net itself, or a torch.compile'd wrapper of it. Kept out of
        # the module registry (object.__setattr__) so state_dict keys never change with compilation.
        object.__setattr__(self, "_denoiser", None)
        # Optional whole-loop replacement (t2diff/model/triton_reverse.py): (x, m, noise, ts, c0, ct, sg) -> ẑ0.
        object.__setattr__(self, "_reverse", None)

    @property
    def denoiser(self):
        return self._denoiser if self._denoiser is not None else self.unet

    def set_denoiser(self, fn) -> None:
        object.__setattr__(self, "_denoiser", fn)

    def set_reverse(self, fn) -> None:
        """Run the reverse loop with ``fn`` (e.g. ``TritonReverse(self.unet)``) instead of T denoiser calls;
        it gets the same noise draw, so it is a drop-in for the same generator. None restores the loop."""
        object.__setattr__(self, "_reverse", fn)

    def compile_denoiser(self, **kwargs) -> None:
        """Opt-in torch.compile of the U-Net call (eager by default)."""
        self.set_denoiser(torch.compile(self.unet, **kwargs))

    def _pad(self, *ts: torch.Tensor) -> list[torch.Tensor]:
        """Left zero-pad (B, L, ...) tensors along dim 1 to the U-Net's length."""
        L = ts[0].shape[1]
        P = self.unet.padded_length(L) - L
        if not P:
            return list(ts)
        return [F.pad(t, (0, 0) * (t.dim() - 2) + (P, 0)) for t in ts]

    def training_loss(self, x: torch.Tensor, x_next: torch.Tensor, mask: torch.Tensor,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Alg. 1. x (B, L, D), x_next (B, D), mask (B, L) bool -> (L_KL scalar, x̂_{n+1} (B, D) detached)."""
        x, x_next = x.detach(), x_next.detach()  # stop-gradient into the embeddings
        x_in, mask_in = x, mask  # unpadded, for the "sample" path
        B = x.shape[0]
        m = drift_mask(mask).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        z0 = prepare_drift(x, x_next, self.drift) * m
        x, m, z0 = self._pad(x, m, z0)  # (B, L', ...)
        # generator only when given: an explicit generator=None breaks torch.compile with a symbolic batch size
        gen = {} if generator is None else {"generator": generator}
        t = torch.randint(0, self.schedule.num_train_timesteps, (B,), device=x.device, **gen)
        noise = torch.randn(z0.shape, device=x.device, dtype=x.dtype, **gen)
        z_t = self.schedule.add_noise(z0, noise, t) * m
        z0_hat = self.unet(z_t, x, t)  # (B, L, D)
        # sqrt(sum sq + eps): the L2 norm with a finite gradient at 0
        err = ((z0 - z0_hat).pow(2).sum(-1) + 1e-12).sqrt()  # (B, L)
        m2 = m.squeeze(-1)
        kl = (err * m2).sum() / m2.sum().clamp_min(1.0)
        if self.train_next == "target":
            x_hat = utilise_drift(x[:, -1], z0_hat, self.drift)
        elif self.train_next == "prior":  # first reverse step: ẑ0 from z_T = masked N(0, I), no target in it
            with torch.no_grad():
                t_last = torch.full_like(t, self.schedule.num_train_timesteps - 1)
                x_hat = utilise_drift(x[:, -1], self.unet(noise * m, x, t_last), self.drift)
        else:  # "sample": what inference does, with fewer strided steps
            x_hat = self.sample(x_in, mask_in, self.train_next_steps, generator)
        return kl, x_hat.detach()

    def noise_shape(self, batch: int, seq_len: int, edim: int, num_steps: int | None = None) -> tuple[int, ...]:
        """Shape of one reverse process's noise, z_T and every step's ε: (n + 1, B, L', D)."""
        n = num_steps or self.schedule.num_inference_steps
        return (n + 1, batch, self.unet.padded_length(seq_len), edim)

    @torch.no_grad()
    def sample(self, x: torch.Tensor, mask: torch.Tensor, num_steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Alg. 2: reverse process from N(0, I). x (B, L, D), mask (B, L) -> x̂_{n+1} (B, D).

        All noise is drawn up front (one kernel), then :meth:`sample_from_noise` runs the steps.
        """
        n = num_steps or self.schedule.num_inference_steps
        noise = torch.randn(self.noise_shape(x.shape[0], x.shape[1], x.shape[2], n), device=x.device, dtype=x.dtype,
                            generator=generator)
        return self.sample_from_noise(x, mask, noise, n)

    def sample_from_noise(self, x: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor,
                          num_steps: int | None = None) -> torch.Tensor:
        """The reverse process with its noise given: x (B, L, D), mask (B, L), noise (n + 1, B, L', D) ->
        x̂_{n+1} (B, D). Deterministic, so an exported copy (t2diff/model/aot.py) matches it draw for draw.

        Loop body: one U-Net call + fused-able arithmetic; the step tables are device tensors indexed by
        Python ints, so there is no host sync or per-step allocation of tables (activations still come from
        the caching allocator).
        """
        n = num_steps or self.schedule.num_inference_steps
        tab = self.schedule.step_coefficients(n)
        m = drift_mask(mask).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        x_last = x[:, -1]
        x, m = self._pad(x, m)  # (B, L', ...)
        ts, c0, ct, sg = tab["timesteps"], tab["coef_x0"], tab["coef_xt"], tab["sigma"]
        if self._reverse is not None:
            return utilise_drift(x_last, self._reverse(x, m.squeeze(-1), noise, ts, c0, ct, sg), self.drift)
        # Masked, pre-scaled step noise and x0 weights for all steps at once (two batched kernels), so each
        # step is the U-Net plus two fused multiply-adds: z <- c0·m·ẑ0 + ct·z + σ·m·ε (z stays 0 under the mask).
        noise = noise * m
        z = noise[0]
        noise_s = noise[1:] * sg.view(-1, 1, 1, 1)  # (n, B, L', D)
        c0m = c0.view(-1, 1, 1, 1) * m  # (n, B, L', 1)
        for i in range(n):
            z0_hat = self.denoiser(z, x, ts[i])
            if i == n - 1:
                z = z0_hat  # t = 0: the posterior collapses to x̂0 (coef_x0 = 1, coef_xt = sigma = 0)
            else:
                z = torch.addcmul(torch.addcmul(noise_s[i], c0m[i], z0_hat), ct[i], z)
        return utilise_drift(x_last, z, self.drift)
