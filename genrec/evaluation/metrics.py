"""Ranking metrics from the 1-based rank of each user's held-out target.

HR@K = 1[rank <= K]; NDCG@K = 1 / log2(rank + 1) if rank <= K else 0; MRR = 1 / rank.
A target that was excluded (already seen) has rank = inf and counts as a miss everywhere.
"""

from __future__ import annotations

import numpy as np
import torch

KS = (10, 50, 200)
METRIC_NAMES = tuple(f"{m}@{k}" for k in KS for m in ("HR", "NDCG")) + ("MRR",)


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores: (B, V) with excluded items at -inf; targets: (B,) column index -> (B,) float ranks from 1.

    Ties with the target count against it (rank = 1 + #items scoring >= target, minus the target), so a
    constant scorer cannot look good.
    """
    t = scores.gather(1, targets[:, None])  # (B, 1)
    rank = (scores >= t).sum(1).to(torch.float64)
    return torch.where(torch.isfinite(t.squeeze(1)), rank, torch.full_like(rank, float("inf")))


def metrics_from_ranks(ranks: np.ndarray | torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    r = torch.as_tensor(ranks, dtype=torch.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = r <= k
        out[f"HR@{k}"] = hit.double().mean().item()
        out[f"NDCG@{k}"] = torch.where(hit, 1.0 / torch.log2(r.clamp(max=1e18) + 1), 0.0).mean().item()
    out["MRR"] = (1.0 / r).mean().item()
    return out
