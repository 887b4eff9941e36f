"""Mixed attention user tower (paper §4.3, Eq. 19-22, Fig. 3).

* Session part (Eq. 19): a transformer over the last k items (+ the generated x̂_{n+1} for T2Diff),
  mean-pooled over real tokens -> h_s. Official details kept: no positional embedding, q/k/v without bias,
  the attention diagonal masked (a token does not attend to itself; ``cfg.extra["mask_self"]``), residual +
  LayerNorm, FFN [ffn_dim, edim] with ELU + LayerNorm per layer, residual + LayerNorm.
* History part (Eq. 20-21): target attention of h_s over the older n − k items with activation-unit features
  [x, x − h_s, x·h_s, h_s] (+ a learned embedding of the bucketised log time gap to "now" when
  ``cfg.time_lag``), MLP -> one logit per position, softmax over positions -> h_l = Σ a_j x_j.
* e_u = concat(h_l, h_s) (official) or FFN(concat(h_l, h_s)) (Eq. 22, ``cfg.user_ffn``).

Padding masks (the official code has none): padded positions are never keys, never pooled, never attended;
their probabilities are exactly 0, so whatever sits under the mask cannot change the output.
"""
from __future__ import annotations

import torch
from torch import nn

from t2diff.model.config import ModelConfig
from t2diff.model.norm import LayerNorm

NUM_TIME_BUCKETS = 34  # 0 = unknown / padding; b = 1 + floor(log2(1 + gap_seconds)), capped (2^32 s ≫ any log)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` where ``mask`` is True; masked entries get exactly 0, an all-masked row all 0."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    p = torch.softmax(scores, dim=dim) * mask.to(scores.dtype)
    return p / p.sum(dim, keepdim=True).clamp_min(1e-30)


def time_lag_buckets(hist_ts: torch.Tensor | None, now_ts: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) int64 ms timestamps, (B,) "now" -> (B, L) bucket ids (0 where unknown or padded).

    ``now_ts=None`` falls back to each row's latest event time (serving without a request clock).
    """
    if hist_ts is None:
        return torch.zeros_like(mask, dtype=torch.long)
    hist_ts = hist_ts.to(torch.long)
    if now_ts is None:
        now_ts = hist_ts.masked_fill(~mask, 0).amax(dim=1)
    gap_s = (now_ts.to(torch.long).unsqueeze(1) - hist_ts).clamp_min(0).to(torch.float64) / 1000.0
    b = torch.floor(torch.log2(1.0 + gap_s)).long() + 1
    b = b.clamp(1, NUM_TIME_BUCKETS - 1)
    return b.masked_fill(~mask | (hist_ts <= 0), 0)


class MLP(nn.Module):
    """Official ``simple_dnn``: [Linear (no bias) -> ELU -> LayerNorm] per hidden layer, optional linear head."""

    def __init__(self, din: int, hidden: list[int], out: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(din, h, bias=False), nn.ELU(), LayerNorm(h)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            din = h
        if out is not None:
            layers.append(nn.Linear(din, out, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SessionBlock(nn.Module):
    def __init__(self, d: int, heads: int, ffn_dim: int, dropout: float, mask_self: bool) -> None:
        super().__init__()
        self.heads = heads
        self.hd = max(1, d // heads)
        self.q = nn.Linear(d, heads * self.hd, bias=False)
        self.k = nn.Linear(d, heads * self.hd, bias=False)
        self.v = nn.Linear(d, heads * self.hd, bias=False)
        self.o = nn.Linear(heads * self.hd, d, bias=False)
        self.ln1 = LayerNorm(d)
        self.ffn = MLP(d, [ffn_dim, d], dropout=dropout)
        self.ln2 = LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.mask_self = mask_self

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x (B, S, d), mask (B, S)
        B, S, _ = x.shape
        q, k, v = (f(x).view(B, S, self.heads, self.hd).transpose(1, 2) for f in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) / self.hd ** 0.5  # (B, H, S, S)
        allowed = mask[:, None, None, :].expand(B, 1, S, S)  # keys must be real
        if self.mask_self:
            allowed = allowed & ~torch.eye(S, dtype=torch.bool, device=x.device)
        att = self.drop(masked_softmax(scores, allowed))
        h = (att @ v).transpose(1, 2).reshape(B, S, -1)  # (B, S, H*hd)
        x = self.ln1(x + self.o(h))
        return self.ln2(x + self.ffn(x))


class TargetAttention(nn.Module):
    def __init__(self, d: int, time_lag: bool, dropout: float) -> None:
        super().__init__()
        self.lag = nn.Embedding(NUM_TIME_BUCKETS, d) if time_lag else None
        din = 4 * d + (d if time_lag else 0)
        self.unit = MLP(din, [d], out=1, dropout=dropout)

    def forward(self, hist: torch.Tensor, mask: torch.Tensor, h_s: torch.Tensor,
                lag: torch.Tensor | None) -> torch.Tensor:
        """hist (B, M, d), mask (B, M), h_s (B, d), lag (B, M) long -> h_l (B, d)."""
        q = h_s.unsqueeze(1).expand_as(hist)
        feats = [hist, hist - q, hist * q, q]
        if self.lag is not None:
            feats.append(self.lag(lag if lag is not None else torch.zeros_like(mask, dtype=torch.long)))
        logit = self.unit(torch.cat(feats, dim=-1)).squeeze(-1)  # (B, M)
        a = masked_softmax(logit, mask, dim=1)  # softmax over positions
        return (a.unsqueeze(-1) * hist).sum(1)


class MixedAttention(nn.Module):
    """User tower. forward(x (B, L, d), mask (B, L), x_next (B, d) | None, lag (B, L)) -> e_u (B, user_dim)."""

    def __init__(self, cfg: ModelConfig, use_next: bool) -> None:
        super().__init__()
        d = cfg.edim
        self.k = cfg.session_len
        self.use_next = use_next
        mask_self = bool(cfg.extra.get("mask_self", True))
        self.blocks = nn.ModuleList(SessionBlock(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout, mask_self)
                                    for _ in range(cfg.num_blocks))
        self.target = TargetAttention(d, cfg.time_lag, cfg.dropout)
        if cfg.user_ffn:
            self.ffn: nn.Module = nn.Sequential(MLP(2 * d, [cfg.ffn_dim]), nn.Linear(cfg.ffn_dim, cfg.user_dim))
        elif cfg.user_dim == 2 * d:
            self.ffn = nn.Identity()
        else:
            raise ValueError(f"user_dim={cfg.user_dim} needs user_ffn=True (concat(h_l, h_s) has 2*edim={2 * d})")

    def forward(self, x: torch.Tensor, mask: torch.Tensor, x_next: torch.Tensor | None,
                lag: torch.Tensor | None) -> torch.Tensor:
        sess, smask = x[:, -self.k:], mask[:, -self.k:]  # (B, k, d)
        if self.use_next:
            if x_next is None:
                raise ValueError("this arch needs the generated next item x_next")
            sess = torch.cat([sess, x_next.unsqueeze(1)], dim=1)  # (B, k+1, d)
            smask = torch.cat([smask, torch.ones_like(smask[:, :1])], dim=1)
        for blk in self.blocks:
            sess = blk(sess, smask)
        w = smask.unsqueeze(-1).to(sess.dtype)
        h_s = (sess * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, d) mean over real tokens
        old, omask = x[:, :-self.k], mask[:, :-self.k]  # (B, n-k, d)
        h_l = self.target(old, omask, h_s, None if lag is None else lag[:, :-self.k])
        return self.ffn(torch.cat([h_l, h_s], dim=-1))
