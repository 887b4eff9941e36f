"""1-D convolutional U-Net approximator (paper Eq. 15): predicts the clean drift z0 from concat(z_t, X[1:n]).

Official structure (model/T2diff_*.py): 4 levels with 4/8/16/32 filters, kernel 3, swish then LayerNorm after
every conv, max-pool by 2 on the way down, nearest upsampling + 1x1 conv + skip concat on the way up, the
timestep embedding sin(t/2^f) (f = 0..2·edim−1) times ``step_weight`` added to the input, output = x0.

Deviation, on purpose: the official net uses 'valid' convs on a sequence reflect-padded from 50 to 94 and
crops the skips; its size arithmetic only works for n = 50. We use 'same' convs with reflect padding and pad
the sequence on the left (the old, least relevant end) up to a multiple of 2^(levels−1), so any seq_len works.
Channels scale with edim: level i gets unet_channels[i]·edim/4 (the official config has edim = 4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scaled_channels(channels: tuple[int, ...], edim: int) -> tuple[int, ...]:
    return tuple(max(1, round(c * edim / 4)) for c in channels)


def step_embedding_table(num_steps: int, dim: int) -> torch.Tensor:
    """(T, dim) table, row t = sin((t+1) / 2^f) for f = 0..dim-1 (official: steps 1..T)."""
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)[:, None]
    f = torch.arange(dim, dtype=torch.float64)[None, :]
    return torch.sin(t / 2.0 ** f).float()


class ChannelNorm(nn.Module):
    """LayerNorm over channels of a (B, C, L) tensor (TF LayerNorm over the last axis of (B, L, C))."""

    def __init__(self, c: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c, 1))
        self.bias = nn.Parameter(torch.zeros(c, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, L)
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class ConvBlock(nn.Module):
    """conv(k) -> swish -> LayerNorm, 'same' length."""

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, padding=k // 2, padding_mode="reflect" if k > 1 else "zeros")
        self.norm = ChannelNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.silu(self.conv(x)))


class UNet1D(nn.Module):
    """x0-predictor over the sequence axis. forward(z_t (B, L, D), x (B, L, D), t (B,) long) -> (B, L, D)."""

    def __init__(self, edim: int, channels: tuple[int, ...] = (4, 8, 16, 32), num_steps: int = 50,
                 step_weight: float = 1e-2) -> None:
        super().__init__()
        ch = scaled_channels(channels, edim)
        self.levels = len(ch)
        self.edim = edim
        self.step_weight = step_weight
        self.register_buffer("step_emb", step_embedding_table(num_steps, 2 * edim), persistent=False)  # (T, 2D)
        self.down = nn.ModuleList()
        cin = 2 * edim
        for c in ch:
            self.down.append(ConvBlock(cin, c))
            cin = c
        self.up_proj = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in range(self.levels - 2, -1, -1):
            self.up_proj.append(nn.Conv1d(ch[i + 1], ch[i], 1))
            self.up.append(ConvBlock(2 * ch[i], ch[i]))
        self.out = nn.Identity() if ch[0] == edim else nn.Conv1d(ch[0], edim, 1)

    def forward(self, z_t: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, L, D = z_t.shape
        h = torch.cat([z_t, x], dim=-1)  # (B, L, 2D)
        temb = self.step_emb[t]  # (B, 2D) or (2D,) for a scalar t shared by the batch
        h = h + self.step_weight * (temb.unsqueeze(-2) if temb.dim() == 2 else temb)
        h = h.transpose(1, 2)  # (B, 2D, L)
        mult = 2 ** (self.levels - 1)
        pad = max(-(-L // mult) * mult, 2 * mult) - L  # bottom level keeps >= 2 positions for reflect pads
        if pad:  # mirror the oldest positions onto the left; cropped off again below
            h = torch.cat([h[..., 1:pad + 1].flip(-1), h], dim=-1) if pad < L else F.pad(h, (pad, 0), mode="replicate")
        skips = []
        for i, blk in enumerate(self.down):
            h = blk(h)
            if i < self.levels - 1:
                skips.append(h)
                h = F.max_pool1d(h, 2)
        for proj, blk in zip(self.up_proj, self.up):
            h = F.silu(proj(h.repeat_interleave(2, dim=-1)))
            h = blk(torch.cat([h, skips.pop()], dim=1))
        h = self.out(h)[..., pad:]  # (B, D, L)
        return h.transpose(1, 2)
