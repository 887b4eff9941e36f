"""Noise schedule for T2Diff's drift diffusion (paper §4.1, Eq. 1-6 and 14-17), diffusers-style.

The schedule owns the β table and the closed-form coefficients; the denoiser (the U-Net in ``unet.py``)
is passed in by the caller, never owned here. All coefficients live in buffers, so ``.to(device)`` moves
them with the model and the reverse loop never touches the host.

Timesteps are 0-indexed: index ``t`` in ``0..T-1`` is the paper's step ``s = t + 1`` (the official code
does the same: it samples ``t ~ U[0, T)`` and gathers ``alpha_hats[t]``).

Schedules (Table 3 ablation), all sharing the endpoints of the paper's exponential one so only the shape
changes (the paper gives no formula for linear/log; these are our choice):

* ``exp``:    β_s = a·exp(b·s/T)                       (a=1e-2, b=4.5, T=50: 0.0109 .. 0.9)
* ``linear``: β_s = β_1 + (β_T − β_1)·(s−1)/(T−1)
* ``log``:    β_s = β_1 + (β_T − β_1)·ln(1 + (e−1)·(s−1)/(T−1))   (concave: grows fast, then flattens)
* ``trunc_lin``: DiffuRec's schedule (its baseline, ``diffurec.py``; ignores a and b): with c = 1000/T,
  linear from c·1e-4 + 0.01 to c·0.02 + 0.01 (c·1e-3 + 0.01 where that passes 1); T = 32: 0.0131 .. 0.635

Reverse step (``posterior``):

* ``"official"`` (DEFAULT): the update of the official TF code,
  x_{t-1} = sqrt(ᾱ_{t-1})·β_t/(1−ᾱ_t)·x̂0 + sqrt(ᾱ_t)·(1−ᾱ_{t-1})/(1−ᾱ_t)·x_t + β̃_t·ε.
  It differs from DDPM in the x_t weight (sqrt(ᾱ_t) instead of sqrt(α_t)) and the noise scale (β̃_t, not
  sqrt(β̃_t)), i.e. it shrinks x_t harder and injects less noise. We keep it as the default because the
  paper's numbers (Table 2-4) were produced with it and reproducing them is the first goal; the model is
  trained on x0-prediction, so either sampler is valid at inference and ``"ddpm"`` is one flag away.
* ``"ddpm"``: the textbook posterior q(x_{t-1} | x_t, x̂0) with mean
  sqrt(ᾱ_{t-1})·β_t/(1−ᾱ_t)·x̂0 + sqrt(α_t)·(1−ᾱ_{t-1})/(1−ᾱ_t)·x_t and std sqrt(β̃_t).

With fewer inference steps (``set_timesteps(n)``) the strided sequence t_0 > t_1 > ... > 0 uses the
respaced β'_t = 1 − ᾱ_t/ᾱ_prev (DDPM respacing), which equals β_t when no step is skipped. The last step
(t = 0, ᾱ_prev = 1) returns x̂0 exactly in both variants.
"""
from __future__ import annotations

import math

import torch
from torch import nn

SCHEDULES = ("exp", "linear", "log", "trunc_lin")
POSTERIORS = ("official", "ddpm")


def make_betas(num_steps: int, kind: str = "exp", a: float = 1e-2, b: float = 4.5) -> torch.Tensor:
    """β_1..β_T as a float64 tensor (T,) (float64 so the cumulative product is accurate)."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {SCHEDULES}")
    if num_steps < 1:
        raise ValueError("num_steps must be >= 1")
    s = torch.arange(1, num_steps + 1, dtype=torch.float64)
    exp = a * torch.exp(b * s / num_steps)
    if kind == "trunc_lin":
        c = 1000.0 / num_steps
        hi = c * 0.02 + 0.01 if c * 0.02 + 0.01 <= 1 else c * 1e-3 + 0.01
        betas = torch.linspace(c * 1e-4 + 0.01, hi, num_steps, dtype=torch.float64)
    elif kind == "exp" or num_steps == 1:
        betas = exp
    else:
        lo, hi = float(exp[0]), float(exp[-1])
        frac = (s - 1) / (num_steps - 1)  # 0 .. 1
        if kind == "linear":
            betas = lo + (hi - lo) * frac
        else:
            betas = lo + (hi - lo) * torch.log1p((math.e - 1) * frac)
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(f"schedule {kind} with a={a}, b={b}, T={num_steps} leaves (0, 1): {betas.tolist()}")
    return betas


class NoiseSchedule(nn.Module):
    """β schedule + forward noising + one reverse step. Buffers are float32 on the model's device."""

    def __init__(self, num_train_timesteps: int = 50, kind: str = "exp", a: float = 1e-2, b: float = 4.5,
                 posterior: str = "official") -> None:
        super().__init__()
        if posterior not in POSTERIORS:
            raise ValueError(f"unknown posterior {posterior!r}; expected one of {POSTERIORS}")
        self.num_train_timesteps = num_train_timesteps
        self.kind = kind
        self.posterior = posterior
        betas = make_betas(num_train_timesteps, kind, a, b)  # (T,) float64
        abar = torch.cumprod(1 - betas, 0)
        # Not persistent: rebuilt from the config, so checkpoints do not depend on them.
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", abar.float(), persistent=False)
        self.register_buffer("sqrt_abar", abar.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_one_minus_abar", (1 - abar).sqrt().float(), persistent=False)
        self._abar64 = abar  # host copy for building step tables in float64
        self._tables: dict[int, dict[str, torch.Tensor]] = {}
        self.num_inference_steps = num_train_timesteps
        self.set_timesteps(None)

    # ---- forward process -------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Closed form q(x_t | x_0) (Eq. 3/14): sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε. t: (B,) long, x0: (B, ...)."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return self.sqrt_abar[t].view(shape) * x0 + self.sqrt_one_minus_abar[t].view(shape) * noise

    # ---- reverse process -------------------------------------------------------------------------
    def step_coefficients(self, num_steps: int | None = None) -> dict[str, torch.Tensor]:
        """Per-step tables for the strided reverse sequence, built once per step count (float64 -> float32).

        Returns ``timesteps`` (n,) long (descending, ends at 0), ``coef_x0``, ``coef_xt``, ``sigma`` (n,) and
        ``variance`` (n,) (β̃, the posterior variance, for tests), all on the schedule's device.
        """
        n = self.num_train_timesteps if num_steps is None else int(num_steps)
        if not 1 <= n <= self.num_train_timesteps:
            raise ValueError(f"num_steps must be in 1..{self.num_train_timesteps}, got {n}")
        dev = self.betas.device
        tab = self._tables.get(n)
        if tab is not None and tab["timesteps"].device == dev:
            return tab
        T = self.num_train_timesteps
        ts = torch.linspace(T - 1, 0, n, dtype=torch.float64).round().long() if n > 1 else torch.zeros(1, dtype=torch.long)
        if n > 1:
            ts[0] = T - 1
        abar = self._abar64
        ab_t = abar[ts]
        ab_prev = torch.cat([abar[ts[1:]], torch.ones(1, dtype=torch.float64)])  # ᾱ_{-1} = 1
        beta_eff = 1 - ab_t / ab_prev  # respaced β; = β_t with all steps
        alpha_eff = 1 - beta_eff
        var = (1 - ab_prev) / (1 - ab_t) * beta_eff  # β̃_t
        coef_x0 = ab_prev.sqrt() * beta_eff / (1 - ab_t)
        if self.posterior == "official":
            coef_xt = ab_t.sqrt() * (1 - ab_prev) / (1 - ab_t)
            sigma = var
        else:
            coef_xt = alpha_eff.sqrt() * (1 - ab_prev) / (1 - ab_t)
            sigma = var.sqrt()
        tab = {"timesteps": ts.to(dev), "coef_x0": coef_x0.float().to(dev), "coef_xt": coef_xt.float().to(dev),
               "sigma": sigma.float().to(dev), "variance": var.float().to(dev)}
        self._tables[n] = tab
        return tab

    def set_timesteps(self, num_inference_steps: int | None = None) -> torch.Tensor:
        """Choose the default number of reverse steps (strided, diffusers-style); returns the timesteps."""
        self.num_inference_steps = num_inference_steps or self.num_train_timesteps
        self.timesteps = self.step_coefficients(self.num_inference_steps)["timesteps"]
        return self.timesteps

    def step(self, x0_pred: torch.Tensor, i: int, sample: torch.Tensor, noise: torch.Tensor | None = None,
             num_steps: int | None = None) -> torch.Tensor:
        """One reverse step (Eq. 4-6/17) at position ``i`` of the strided sequence: x_t -> x_{t-1}.

        ``i`` is a Python int so indexing the on-device tables is a view, not a host sync.
        """
        tab = self.step_coefficients(num_steps or self.num_inference_steps)
        out = tab["coef_x0"][i] * x0_pred + tab["coef_xt"][i] * sample
        if noise is not None:
            out = out + tab["sigma"][i] * noise
        return out

    def _apply(self, fn, recurse=True):  # device moves invalidate the cached step tables
        self._tables = {}
        out = super()._apply(fn, recurse)
        self.set_timesteps(self.num_inference_steps)
        return out
