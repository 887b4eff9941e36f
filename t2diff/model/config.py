"""Model configuration, saved inside every checkpoint so serving rebuilds the model from the file alone."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ARCHS = ("t2diff", "t2diff_no_dp", "mixed_attention", "sasrec", "gru4rec", "diffurec")
# extra keys that said ``tied_input`` before it was a field, and the archs that read them; folded into the field
# so old checkpoints and recorded run specs keep their meaning
_LEGACY_TIED = {"sasrec_tied": ("sasrec",), "t2diff_tied": ("t2diff", "t2diff_no_dp", "mixed_attention")}
# mixed_attention's extra["next_token"], the session's extra token in place of T2Diff's x̂_{n+1} (t2diff/model/t2diff.py)
NEXT_TOKENS = ("none", "last", "noise", "learned")


@dataclass
class ModelConfig:
    arch: str = "t2diff"  # one of ARCHS; the ablations are flags of the same network
    num_items: int = 0  # N; item indices are 1..N, 0 is padding
    num_tags: int = 0  # tag / genre vocabulary (ids 1..num_tags, 0 = none)
    max_tags: int = 1  # tags per item (padded)
    # Official code: ID emb 2 + mean tag emb 2 = edim 4; user / item vectors 2*edim = 8.
    id_dim: int = 2
    tag_dim: int = 2
    user_dim: int = 8
    seq_len: int = 50  # history window n
    session_len: int = 10  # k, the last session for the transformer (Eq. 19)
    num_heads: int = 2
    num_blocks: int = 1
    ffn_dim: int = 64
    dropout: float = 0.0
    emb_max_norm: float | None = 1.5  # official lookup max_norm
    emb_init_std: float = 0.002
    user_ffn: bool = False  # Eq. 22's FFN over concat(h_l, h_s); the official code uses the plain concat
    time_lag: bool = True  # time-lag feature in target attention (Eq. 20-21, Fig. 3)
    # Diffusion (Sec. 4.1); official a=1e-2, b=4.5, T=50
    diffusion_steps: int = 50  # T
    schedule: str = "exp"  # exp | linear | log (Table 3)
    beta_a: float = 1e-2
    beta_b: float = 4.5
    posterior: str = "official"  # official (code's variant) | ddpm (textbook posterior)
    infer_steps: int | None = None  # fewer reverse steps at inference (set_timesteps)
    lambda_kl: float = 0.1  # λ in Eq. 25 (official: 0.1 ML-1M, 10 KuaiRand)
    unet_channels: tuple[int, ...] = (4, 8, 16, 32)
    step_weight: float = 1e-2  # official scale of the timestep embedding
    # The official U-Net ends in a LayerNorm (gain 1), so at initialisation ẑ0 has unit scale per position (norm
    # ~2 at edim 4) against drifts of ~0.05: until Adam shrinks that gain (~1/lr steps) x̂_{n+1} is x_n plus a
    # large, input-independent offset. True: start the last gain (or output projection) at 0, so ẑ0 starts at 0
    # (x̂ = x_n) and the U-Net learns drifts from the first step (the "zero module" of diffusion U-Nets).
    unet_zero_out: bool = False
    drift_preparation: bool = True  # False = "T2Diff w/o DP" ablation
    # Where the tower's x̂_{n+1} comes from at training time. "target" (official code): reconstructed from the
    # noised true drift at the sampled t, so for small t it is nearly the target itself, while at inference
    # it comes from pure noise (a train/serve mismatch). "prior": one U-Net call from pure noise at t = T-1
    # (the first reverse step; no target information). "sample": the reverse process as at inference, with
    # ``train_next_steps`` strided steps (no gradient either way: x̂ leaves detached).
    train_next: str = "target"
    train_next_steps: int = 10
    # The history enters the user tower as the candidate-side vectors (the item tower's output, user_dim wide),
    # one item representation for input and output as SASRec and DiffuRec design it, instead of the raw edim
    # vectors the official T2Diff code feeds its tower. An offline experiment (the compiled serving tower reads
    # raw vectors). None = the arch's own design: False, except DiffuRec, whose process lives where candidates
    # are scored (True; False is refused).
    tied_input: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # arch-specific knobs

    @property
    def edim(self) -> int:
        return self.id_dim + self.tag_dim

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unet_channels"] = list(self.unet_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        if "unet_channels" in d:
            d["unet_channels"] = tuple(d["unet_channels"])
        return cls(**d)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.train_next not in ("target", "prior", "sample"):
            raise ValueError(f"train_next must be target | prior | sample, got {self.train_next!r}")
        for key, archs in _LEGACY_TIED.items():
            if key in self.extra and self.arch in archs:
                extra = dict(self.extra)
                legacy = bool(extra.pop(key))
                if self.tied_input is not None and self.tied_input != legacy:
                    raise ValueError(f"extra.{key}={legacy} contradicts tied_input={self.tied_input}")
                self.tied_input, self.extra = legacy, extra
        if self.tied_input is None:
            self.tied_input = self.arch == "diffurec"
        elif self.arch == "diffurec" and not self.tied_input:
            raise ValueError("diffurec diffuses the candidate-side vectors; tied_input=False is not a DiffuRec")
        token = self.extra.get("next_token", "none")
        if token not in NEXT_TOKENS:
            raise ValueError(f"extra.next_token must be one of {NEXT_TOKENS}, got {token!r}")
        if token != "none" and self.arch != "mixed_attention":
            raise ValueError(f"extra.next_token is a mixed_attention ablation; {self.arch} generates its own token")
        if self.session_len >= self.seq_len:
            raise ValueError("session_len must be shorter than seq_len (older history feeds target attention)")
