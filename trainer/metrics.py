"""Full-ranking metrics, computed the official T2Diff way (``util/AccCalculater.py``).

Every item of the catalogue is scored (no negative sampling). The rank of the target is
``#items scored strictly higher than the target + 1``: ties are resolved in the target's favour, exactly as
the official code does, so a model that scores everything equal gets rank 1 for every sample. We keep that
rule so our numbers are comparable with the paper's Table 2; tests pin it down with a hand-worked example.
Index 0 is the padding item and is never a candidate.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

# Cut-offs used by the paper (Table 2): ML-1M {2, 20}, KuaiRand {10, 100}.
DEFAULT_KS = {"ml-1m": (2, 20), "kuairand": (10, 100)}


def cutoffs_for(dataset: str) -> tuple[int, ...]:
    return DEFAULT_KS["kuairand"] if dataset.startswith("kuairand") else DEFAULT_KS["ml-1m"]


def ranks_from_scores(
    scores: torch.Tensor,
    target: torch.Tensor,
    exclude_rows: torch.Tensor | None = None,
    exclude_cols: torch.Tensor | None = None,
) -> torch.Tensor:
    """1-based rank of each target among all real items.

    scores: (B, N+1) with column 0 the padding item; target: (B,) model indices 1..N.
    exclude_rows/cols: optional (E,) pairs of (row, item) to drop from the ranking (seen-item filtering for the
    RecBole-style protocol). The target itself is never excluded, even when the user saw it before.
    Returns (B,) int64 ranks.
    """
    s = scores.float().clone()  # (B, N+1)
    tgt = s.gather(1, target.view(-1, 1))  # (B, 1): taken before masking so a repeated target keeps its score
    s[:, 0] = -math.inf
    if exclude_rows is not None and exclude_rows.numel():
        s[exclude_rows, exclude_cols] = -math.inf
    higher = (s > tgt).sum(dim=1)  # (B,) strictly higher only: ties count in the target's favour
    return higher.to(torch.int64) + 1


def batch_metric_sums(ranks: torch.Tensor, ks: Iterable[int], ndcg: bool = False) -> dict[str, float]:
    """Sums (not means) of Recall@K, MRR@K and optionally NDCG@K over a batch, so callers can accumulate."""
    r = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = r <= k
        out[f"recall@{k}"] = float(hit.sum())
        out[f"mrr@{k}"] = float(torch.where(hit, 1.0 / r, torch.zeros_like(r)).sum())
        if ndcg:
            # One relevant item per sample: DCG = 1/log2(rank+1), ideal DCG = 1.
            out[f"ndcg@{k}"] = float(torch.where(hit, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r)).sum())
    return out


class RankingAccumulator:
    """Accumulates ranks over batches and reports means (one target per sample, so Recall@K = hit rate)."""

    def __init__(self, ks: Sequence[int], ndcg: bool = False) -> None:
        self.ks = tuple(ks)
        self.ndcg = ndcg
        self.n = 0
        self.sums: dict[str, float] = {}

    def add(self, ranks: torch.Tensor) -> None:
        for key, v in batch_metric_sums(ranks, self.ks, self.ndcg).items():
            self.sums[key] = self.sums.get(key, 0.0) + v
        self.n += int(ranks.numel())

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no samples were evaluated")
        out = {k: v / self.n for k, v in self.sums.items()}
        out["n"] = float(self.n)
        return out


def metrics_from_ranks(ranks: Sequence[int] | torch.Tensor, ks: Sequence[int], ndcg: bool = False) -> dict[str, float]:
    acc = RankingAccumulator(ks, ndcg)
    acc.add(torch.as_tensor(ranks, dtype=torch.int64))
    return acc.result()
