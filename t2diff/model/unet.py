"""1-D convolutional U-Net approximator (paper Eq. 15): predicts the clean drift z0 from concat(z_t, X[1:n]).

Official structure (model/T2diff_*.py): 4 levels with 4/8/16/32 filters, kernel 3, swish then LayerNorm after
every conv, max-pool by 2 on the way down, nearest upsampling + 1x1 conv + swish + skip concat on the way
up, the timestep embedding sin(t/2^f) (f = 0..2·edim−1) times ``step_weight`` added to the input, output x0.

Deviations, on purpose:
* The official net uses 'valid' convs on a sequence mirror-padded from 50 to 94 and crops the skips; its size
  arithmetic only works for n = 50. Here convs are 'same' with reflect padding at both edges, and the caller
  (``DriftDiffusion``) left-pads the sequence with zeros to a multiple of 2^(levels−1) -- i.e. a longer run
  of padding, which the padding mask already treats as "no item" -- so any seq_len works.
* The 1x1 projection + swish of the up path runs before the nearest upsampling (they commute exactly).
* Layout is (B, L, C) throughout and a k=3 conv is one gather of the three shifted rows + one GEMM, so
  LayerNorm is the native kernel and no transposes are needed: the reverse loop calls this T times per
  request, and fewer, larger kernels are what makes it fast (see ``t2diff bench encode``).
Channels scale with edim: level i gets unet_channels[i]·edim/4 (the official config has edim = 4).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2diff.model.norm import LayerNorm


def scaled_channels(channels: tuple[int, ...], edim: int) -> tuple[int, ...]:
    return tuple(max(1, round(c * edim / 4)) for c in channels)


def step_embedding_table(num_steps: int, dim: int) -> torch.Tensor:
    """(T, dim) table, row t = sin((t+1) / 2^f) for f = 0..dim-1 (official: steps 1..T)."""
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)[:, None]
    f = torch.arange(dim, dtype=torch.float64)[None, :]
    return torch.sin(t / 2.0 ** f).float()


def _reflect_taps(L: int) -> torch.Tensor:
    """(L, 3) source rows of a k=3 'same' conv with reflect padding: [j-1, j, j+1] mirrored at the edges."""
    j = torch.arange(L)
    left = torch.where(j == 0, torch.ones_like(j) if L > 1 else j, j - 1)
    right = torch.where(j == L - 1, (j - 1).clamp_min(0), j + 1)
    return torch.stack([left, j, right], 1)


class Conv3Block(nn.Module):
    """k=3 conv (reflect, 'same') -> swish -> LayerNorm on (B, L, C)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * cin, cout)  # weight laid out [tap, cin]
        bound = 1 / math.sqrt(3 * cin)  # same init scale as nn.Conv1d(cin, cout, 3)
        nn.init.uniform_(self.proj.weight, -bound, bound)
        nn.init.uniform_(self.proj.bias, -bound, bound)
        self.norm = LayerNorm(cout)
        self._taps: dict[tuple[int, torch.device], torch.Tensor] = {}

    def taps(self, L: int, device: torch.device) -> torch.Tensor:
        key = (L, device)
        if key not in self._taps:
            self._taps[key] = _reflect_taps(L).to(device)
        return self._taps[key]

    def unfold(self, x: torch.Tensor, gather: bool | None = None) -> torch.Tensor:
        """(B, L, C) -> (B, L, 3C) rows [x_{j-1}, x_j, x_{j+1}] with reflect padding.

        Two equal implementations: one gather kernel (CUDA inference, where it was measured) or a 1-row reflect
        pad + overlapping unfold view (CPU, where aten::index is ~18x slower than the pad; and CUDA training,
        where the gather's backward -- a sorted index_put with accumulation -- took 27 % of a train step's GPU
        time on the H100, against a plain slice-and-add for the pad's).
        """
        B, L, C = x.shape
        if gather if gather is not None else (x.is_cuda and not (torch.is_grad_enabled() and x.requires_grad)):
            return x[:, self.taps(L, x.device)].reshape(B, L, 3 * C)
        xp = torch.cat([x[:, 1:2], x, x[:, -2:-1]], dim=1)  # (B, L+2, C) reflect
        return xp.unfold(1, 3, 1).transpose(-1, -2).reshape(B, L, 3 * C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, C)
        return self.norm(F.silu(self.proj(self.unfold(x))))


class UNet1D(nn.Module):
    """x0-predictor over the sequence axis. forward(z_t (B, L, D), x (B, L, D), t) -> (B, L, D).

    ``t`` is (B,) long (training: one step per row) or a 0-dim long tensor (inference: shared step).
    L must be a multiple of ``self.multiple`` (see ``padded_length``).
    """

    def __init__(self, edim: int, channels: tuple[int, ...] = (4, 8, 16, 32), num_steps: int = 50,
                 step_weight: float = 1e-2, zero_out: bool = False) -> None:
        super().__init__()
        ch = scaled_channels(channels, edim)
        self.levels = len(ch)
        self.multiple = 2 ** (self.levels - 1)
        self.edim = edim
        self.step_weight = step_weight
        self.register_buffer("step_emb", step_embedding_table(num_steps, 2 * edim), persistent=False)  # (T, 2D)
        self.down = nn.ModuleList()
        cin = 2 * edim
        for c in ch:
            self.down.append(Conv3Block(cin, c))
            cin = c
        self.up_proj = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in range(self.levels - 2, -1, -1):
            self.up_proj.append(nn.Linear(ch[i + 1], ch[i]))  # the official 1x1 conv
            self.up.append(Conv3Block(2 * ch[i], ch[i]))
        self.out = nn.Identity() if ch[0] == edim else nn.Linear(ch[0], edim)
        if zero_out:  # ModelConfig.unet_zero_out: the last layer starts at 0, so ẑ0 = 0 until it learns
            if isinstance(self.out, nn.Linear):
                nn.init.zeros_(self.out.weight)
                nn.init.zeros_(self.out.bias)
            else:  # the output is the last block's LayerNorm: gain 0 (its bias is 0 already)
                nn.init.zeros_((self.up[-1] if len(self.up) else self.down[-1]).norm.weight)

    def padded_length(self, L: int) -> int:
        """Smallest length >= L that pools evenly and keeps >= 2 positions at the bottom level."""
        return max(-(-L // self.multiple) * self.multiple, 2 * self.multiple)

    def forward(self, z_t: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, L, D = z_t.shape
        if L % self.multiple:
            raise ValueError(f"sequence length {L} is not a multiple of {self.multiple}; pad with padded_length()")
        # index_select, not step_emb[t]: indexing with a 0-dim tensor calls .item() (a host sync that also
        # breaks CUDA graph capture)
        temb = self.step_emb.index_select(0, t.reshape(-1)).unsqueeze(1)  # (B or 1, 1, 2D)
        h = torch.cat([z_t, x], dim=-1) + self.step_weight * temb
        skips = []
        for i, blk in enumerate(self.down):
            h = blk(h)  # (B, L_i, C_i)
            if i < self.levels - 1:
                skips.append(h)
                Bh, Lh, Ch = h.shape
                h = h.view(Bh, Lh // 2, 2, Ch).amax(2)  # max-pool 2
        for proj, blk in zip(self.up_proj, self.up):
            h = F.silu(proj(h)).repeat_interleave(2, dim=1)  # 1x1 conv + swish, then nearest upsample x2
            h = blk(torch.cat([h, skips.pop()], dim=-1))
        return self.out(h)  # (B, L, D)
