"""Sequential baselines with the T2Diff model interface: SASRec (CE loss), GRU4Rec and DiffuRec.

Both embed items with the same modules as T2Diff (t2diff.model.towers: ID embedding + mean tag embedding = edim,
then MLP(2*edim) with ELU + LayerNorm for the candidate side), score by dot product, and train with a full
softmax over all items, so Table 2 compares user towers, not item features or losses. The official repo's
in-house SASRec also used edim 4 with 2 heads of width 2; ``ModelConfig`` sizes everything here too.

Interface (docs/ARCHITECTURE.md): ``forward(batch) -> (loss, metrics)``, ``encode_users(hist, ...)``,
``encode_items(idx=None)``, ``add_items(tags)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2diff.model.config import ModelConfig
from t2diff.model.schedule import NoiseSchedule
from t2diff.model.towers import TwoTowerModule


class _TwoTowerBase(TwoTowerModule):
    """Shared item side (t2diff.model.towers.TwoTowerModule, identical to T2Diff's) + full-softmax CE training."""

    def _canon(self, hist: torch.Tensor) -> torch.Tensor:
        """Last seq_len positions, left-padded with 0: (B, L) -> (B, n)."""
        n = self.cfg.seq_len
        # Range check on host inputs only: on a GPU tensor it would cost a device sync every step.
        if hist.device.type == "cpu" and hist.numel() and (int(hist.min()) < 0 or int(hist.max()) > self.items.num_items):
            raise ValueError(f"item index out of range 0..{self.items.num_items}")
        hist = hist.to(self.device, torch.long)[:, -n:]
        return F.pad(hist, (n - hist.shape[1], 0))

    def _user(self, hist: torch.Tensor) -> torch.Tensor:  # (B, n) -> (B, user_dim)
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor], host_metrics: bool = True) -> tuple[torch.Tensor, dict]:
        e_u = self._user(self._canon(batch["hist"]))  # (B, U)
        target = batch["target"].to(self.device, torch.long)
        logits = e_u @ self.encode_items()[1:].T  # (B, N): padding is never a class (same as T2Diff)
        loss = F.cross_entropy(logits, target - 1)
        v = float(loss.detach()) if host_metrics else loss.detach()  # a host sync unless asked not to
        return loss, {"loss": v, "ce": v}

    def encode_users(self, hist: torch.Tensor, hist_ts: torch.Tensor | None = None, now_ts: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, num_steps: int | None = None) -> torch.Tensor:
        # Time and sampling arguments exist for interface parity with T2Diff; these towers are deterministic.
        return self._user(self._canon(hist))


class _Block(nn.Module):
    """Pre-LN causal self-attention block (SASRec) with a padding-aware mask."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"edim {d} is not divisible by num_heads {heads}")
        self.h, self.dk = heads, d // heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape  # allowed: (B, 1, L, L) bool
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, dk)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.dk)  # (B, h, L, L)
        att = att.masked_fill(~allowed, -math.inf).softmax(-1)
        y = (self.drop(att) @ v).transpose(1, 2).reshape(B, L, D)
        x = x + self.drop(self.out(y))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(_TwoTowerBase):
    """Causal self-attention over the item sequence; the last position's state -> user vector.

    ``cfg.extra["sasrec_order"] = False`` builds the design of the official repo's in-house SASRec baseline
    (``model/ml_1m/SASREC_ml_1m.py`` in goodstudy255/STAND-code's history, the paper's Table 2 row): no position
    embedding, no causal mask (a position attends to every other item but not to itself) and the mean over the
    items as the user vector, so the history is a bag whose order cannot matter. Its reversed padding mask and
    missing item tower are not reproduced: this isolates what order is worth.

    ``cfg.tied_input = True`` feeds the history as the candidate-side vectors (the item tower's output,
    ``user_dim`` wide), as SASRec's own design does with one item table for input and output; the default feeds
    the raw ``edim`` vectors the T2Diff tower reads (the official code's split).
    """

    def __init__(self, cfg: ModelConfig, item_tags: torch.Tensor) -> None:
        super().__init__(cfg, item_tags)
        d = self.input_dim  # user_dim when cfg.tied_input, else edim
        self.pos = nn.Embedding(cfg.seq_len, d)
        nn.init.normal_(self.pos.weight, std=cfg.emb_init_std)
        self.blocks = nn.ModuleList(_Block(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout) for _ in range(cfg.num_blocks))
        self.ln = nn.LayerNorm(d)
        self.proj = nn.Linear(d, cfg.user_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.order = bool(cfg.extra.get("sasrec_order", True))

    def _user(self, hist: torch.Tensor) -> torch.Tensor:
        B, L = hist.shape
        valid = hist > 0  # (B, L)
        x = self.input_vectors(hist)  # (B, L, d)
        if self.order:
            x = x + self.pos.weight[-L:]  # positions aligned to the most recent item
        x = self.drop(x) * valid.unsqueeze(-1)
        eye = torch.eye(L, dtype=torch.bool, device=hist.device)
        if self.order:
            causal = torch.ones(L, L, dtype=torch.bool, device=hist.device).tril()
            # Keys must be real items; the diagonal is always allowed so padded query rows never softmax over nothing.
            allowed = (causal & valid.unsqueeze(1)) | eye
        else:  # every other real item; the diagonal only where a row would otherwise have no key
            allowed = valid.unsqueeze(1) & ~eye  # (B, L, L)
            allowed = allowed | (eye & ~allowed.any(-1, keepdim=True))
        allowed = allowed.unsqueeze(1)  # (B, 1, L, L)
        for blk in self.blocks:
            x = blk(x, allowed) * valid.unsqueeze(-1)
        if not self.order:  # mean over the real items: order-free
            return self.proj(self.ln(x.sum(1) / valid.sum(1, keepdim=True).clamp_min(1)))
        return self.proj(self.ln(x[:, -1]))  # (B, user_dim): left padding puts the newest item last


class GRU4Rec(_TwoTowerBase):
    """GRU over the item sequence (padding removed by packing); the final hidden state -> user vector. Reads the
    raw edim vectors, or the candidate-side ones with ``cfg.tied_input``."""

    def __init__(self, cfg: ModelConfig, item_tags: torch.Tensor) -> None:
        super().__init__(cfg, item_tags)
        hidden = int(cfg.extra.get("gru_hidden", cfg.user_dim))
        self.gru = nn.GRU(self.input_dim, hidden, num_layers=cfg.num_blocks, batch_first=True,
                          dropout=cfg.dropout if cfg.num_blocks > 1 else 0.0)
        self.proj = nn.Linear(hidden, cfg.user_dim)
        self.drop = nn.Dropout(cfg.dropout)

    def _user(self, hist: torch.Tensor) -> torch.Tensor:
        B, L = hist.shape
        lengths = (hist > 0).sum(1).clamp_min(1)  # (B,)
        # Left-padded -> left-aligned: row b reads positions L-len_b .. L-1 first.
        ar = torch.arange(L, device=hist.device)
        src = (ar.unsqueeze(0) + (L - lengths).unsqueeze(1)).clamp(max=L - 1)  # (B, L)
        aligned = hist.gather(1, src)
        x = self.drop(self.input_vectors(aligned))  # (B, L, input_dim)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # h: (layers, B, hidden), in the original batch order
        return self.proj(self.drop(h[-1]))


class PaperSASRec(_TwoTowerBase):
    """The official repo's in-house SASRec *as written* (``extra["sasrec_design"] = "paper"``), to reproduce the
    baseline row of the paper's Table 2, defects included; not a model to serve. From ``SASREC_ml_1m.py``
    (goodstudy255/STAND-code 2305d31): no position embedding; self-attention without a causal mask and with the
    diagonal masked; the key mask ``tf.sequence_mask(len)`` marks the *first* ``len`` positions real while the
    data is left-padded (for a history shorter than the window it attends to padding and hides the newest items);
    the mean over all positions, padding included, through ``tanh(W x)`` (edim x edim, no bias) is the user
    vector; items are scored by their raw ID + tag vectors (its item MLP is commented out), so both sides are
    ``edim`` wide. Its output-table offset (``embe_dict[2:]``) is not reproduced."""

    def __init__(self, cfg: ModelConfig, item_tags: torch.Tensor) -> None:
        if cfg.tied_input:
            raise ValueError("the paper's SASRec scores raw vectors on both sides; tied_input does not apply")
        super().__init__(cfg, item_tags)
        d = cfg.edim
        self.blocks = nn.ModuleList(_Block(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout) for _ in range(cfg.num_blocks))
        self.w = nn.Parameter(torch.randn(d, d) * cfg.emb_init_std)

    def _user(self, hist: torch.Tensor) -> torch.Tensor:
        B, L = hist.shape
        n = (hist > 0).sum(1, keepdim=True)  # (B, 1)
        first_n = torch.arange(L, device=hist.device).unsqueeze(0) < n  # (B, L): the official (reversed) mask
        eye = torch.eye(L, dtype=torch.bool, device=hist.device)
        allowed = first_n.unsqueeze(1) & ~eye  # (B, L, L)
        allowed = allowed | ~allowed.any(-1, keepdim=True)  # no key left: uniform, as -2^32 everywhere gives
        x = self.items(hist)
        for blk in self.blocks:
            x = blk(x, allowed.unsqueeze(1))
        return torch.tanh(x.mean(1) @ self.w)  # (B, edim)

    def encode_items(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        if idx is None:
            idx = torch.arange(self.items.num_items + 1, device=self.device)
        return self.items(idx.to(self.device, torch.long))  # (N+1, edim), raw vectors, padding row zero


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly rescaled) timesteps: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().unsqueeze(1) * freqs  # (B, half)
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class DiffuRec(_TwoTowerBase):
    """DiffuRec-style baseline (Li et al., TOIS 2023; WHUIR/DiffuRec): diffusion over the *target item's* vector.

    The other published diffusion recommender, and the one the paper's online A/B (Table 5) compares T2Diff with.
    Where T2Diff diffuses the drift between adjacent behaviours (Eq. 10-18) and feeds x̂_{n+1} to a separate tower,
    DiffuRec makes the user vector *be* the reverse process's x̂0, a guess at the next item's vector:

    * train: x0 = e(target) (the candidate-side item vector); t ~ U[0, T); x_t = q(x_t | x0) (Eq. 3);
      x̂0 = f(history, x_t, t) with f = a transformer over LN(e(history) + λ_u·(x_t + emb(t))) read at the newest
      position, λ_u ~ N(λ, λ) element-wise (DiffuRec's "uncertainty" weight, λ = 0.001); loss = full-softmax CE of
      x̂0 against every item (DiffuRec's ``loss_diffu_ce``), so there is no separate reconstruction term;
    * serve: x_T ~ N(0, I), T reverse steps of the textbook posterior (``NoiseSchedule(posterior="ddpm")``), each
      calling f; the last x̂0 is the user vector.

    DiffuRec's settings kept (``cfg.extra`` overrides): T = 32 (``diffurec_steps``), the truncated linear β schedule
    (``diffurec_schedule``; ``schedule.make_betas("trunc_lin")``), λ = 0.001 (``diffurec_lambda``), no position
    embedding and no causal mask (the newest position attends to the whole window), x0-prediction.
    Changed to compare user towers only, as for SASRec / GRU4Rec above: items come from the shared item
    side (history *and* candidates are the item tower's vectors, as DiffuRec uses one table for both), sizes and
    dropout from ``ModelConfig``; padding is masked as keys (DiffuRec's mask covers query rows only, so its padded
    histories attend to padding); t is sampled uniformly (DiffuRec: a loss-aware sampler); the reverse noise has the
    posterior std sqrt(β̃_t) (DiffuRec: sqrt(β_t)).
    """

    def __init__(self, cfg: ModelConfig, item_tags: torch.Tensor) -> None:
        super().__init__(cfg, item_tags)
        d = cfg.user_dim  # the process lives where candidates are scored
        self.steps = int(cfg.extra.get("diffurec_steps", 32))
        self.lam = float(cfg.extra.get("diffurec_lambda", 1e-3))
        self.schedule = NoiseSchedule(self.steps, kind=str(cfg.extra.get("diffurec_schedule", "trunc_lin")),
                                      posterior="ddpm")
        self.time_embed = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.ln_in, self.ln_out = nn.LayerNorm(d), nn.LayerNorm(d)
        self.blocks = nn.ModuleList(_Block(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout) for _ in range(cfg.num_blocks))
        self.drop = nn.Dropout(cfg.dropout)

    def _denoise(self, rep: torch.Tensor, allowed: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
        """f(history, x_t, t) -> x̂0: rep (B, n, d) normalised history, allowed (B, 1, n, n), x_t (B, d), t (B,)."""
        x_t = x_t + self.time_embed(timestep_embedding(t * (1000.0 / self.steps), x_t.shape[-1]))  # (B, d)
        # λ_u ~ N(λ, λ) per element, drawn for the canonical window so left padding never shifts the draws
        lam = self.lam + self.lam * torch.randn(rep.shape, generator=generator, device=rep.device, dtype=rep.dtype)
        h = rep + lam * x_t.unsqueeze(1)  # (B, n, d)
        for blk in self.blocks:
            h = blk(h, allowed)
        return self.ln_out(self.drop(h[:, -1]))  # (B, d): left padding puts the newest item last

    def _history(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = hist > 0  # (B, n)
        rep = self.ln_in(self.drop(self.input_vectors(hist))) * valid.unsqueeze(-1)  # (B, n, d), tied_input always
        eye = torch.eye(hist.shape[1], dtype=torch.bool, device=hist.device)
        allowed = (valid.unsqueeze(1) | eye).unsqueeze(1)  # (B, 1, n, n): real keys, no causal mask
        return rep, allowed

    def forward(self, batch: dict[str, torch.Tensor], host_metrics: bool = True) -> tuple[torch.Tensor, dict]:
        hist = self._canon(batch["hist"])
        target = batch["target"].to(self.device, torch.long)
        items = self.encode_items()  # (N+1, d)
        rep, allowed = self._history(hist)
        t = torch.randint(0, self.steps, (hist.shape[0],), device=self.device)
        x0 = items[target]  # (B, d)
        x_t = self.schedule.add_noise(x0, torch.randn_like(x0), t)  # Eq. 3
        x0_hat = self._denoise(rep, allowed, x_t, t, None)
        loss = nn.functional.cross_entropy(x0_hat @ items[1:].T, target - 1)
        v = float(loss.detach()) if host_metrics else loss.detach()
        return loss, {"loss": v, "ce": v}

    @torch.no_grad()  # T reverse passes: no autograd graph kept
    def encode_users(self, hist: torch.Tensor, hist_ts: torch.Tensor | None = None, now_ts: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, num_steps: int | None = None) -> torch.Tensor:
        """Reverse process from x_T ~ N(0, I) (``num_steps`` strided steps, default cfg.infer_steps or T); the last
        x̂0 is the user vector (B, d). Time arguments exist for interface parity. ``generator`` must live on the
        model's device; with it the output is reproducible."""
        hist = self._canon(hist)
        n_steps = num_steps or self.cfg.infer_steps or self.steps
        tab = self.schedule.step_coefficients(n_steps)  # raises for n_steps > T, as T2Diff's schedule does
        rep, allowed = self._history(hist)
        B, d = hist.shape[0], rep.shape[-1]
        x = torch.randn(B, d, generator=generator, device=self.device, dtype=rep.dtype)
        ts = tab["timesteps"].tolist()
        for i, t in enumerate(ts):
            x0_hat = self._denoise(rep, allowed, x, torch.full((B,), t, device=self.device), generator)
            noise = torch.randn(B, d, generator=generator, device=self.device, dtype=rep.dtype) if t > 0 else None
            x = self.schedule.step(x0_hat, i, x, noise, num_steps=len(ts))
        return x


BASELINES = {"sasrec": SASRec, "gru4rec": GRU4Rec, "diffurec": DiffuRec}


def build_baseline(cfg: ModelConfig, item_tags: torch.Tensor) -> nn.Module:
    if cfg.arch not in BASELINES:
        raise ValueError(f"{cfg.arch!r} is not a baseline; expected one of {sorted(BASELINES)}")
    if cfg.num_items + 1 != item_tags.shape[0]:
        raise ValueError(f"cfg.num_items={cfg.num_items} but item_tags has {item_tags.shape[0]} rows (N+1 expected)")
    if cfg.arch == "sasrec" and cfg.extra.get("sasrec_design") == "paper":
        return PaperSASRec(cfg, item_tags)
    return BASELINES[cfg.arch](cfg, item_tags)
