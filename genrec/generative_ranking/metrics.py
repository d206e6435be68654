"""Per-task AUC / logloss over all candidates and NDCG@K over each user's candidate list (NaN labels skipped)."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC with ties counted half (Mann-Whitney); NaN if only one class is present. (R,), (R,)."""
    labels = labels.astype(bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    _, inv, counts = np.unique(scores, return_inverse=True, return_counts=True)
    r = (np.cumsum(counts) - (counts - 1) / 2.0)[inv]  # 1-based ranks, ties get their average rank
    return float((r[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(probs.astype(np.float64), eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def ndcg_at_k(groups: np.ndarray, gains: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over lists (groups: (R,) list id, contiguous) with graded gains (2^g - 1); lists with no
    positive gain are skipped. Ties in score are broken against the item (pessimistic)."""
    out = []
    bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        g, s = gains[a:b], scores[a:b]
        if g.max() <= 0:
            continue
        order = np.lexsort((g, -s))  # by score desc; among ties the lowest gain first (pessimistic)
        dcg = ((2.0 ** g[order][:k] - 1) * disc[: min(k, b - a)]).sum()
        ideal = ((2.0 ** np.sort(g)[::-1][:k] - 1) * disc[: min(k, b - a)]).sum()
        out.append(dcg / ideal)
    return float(np.mean(out)) if out else float("nan")


def ranking_report(
    tasks: list[str], labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, k: int = 10
) -> dict[str, float]:
    """labels, probs: (R, T). Per task: AUC and logloss over present labels. NDCG@k: gain = number of positive
    task labels (e.g. view 1, cart 2, purchase 3), score = expected gain = sum of the task probabilities."""
    out: dict[str, float] = {}
    for t, name in enumerate(tasks):
        ok = ~np.isnan(labels[:, t])
        out[f"{name}/auc"] = auc(labels[ok, t], probs[ok, t])
        out[f"{name}/logloss"] = logloss(labels[ok, t], probs[ok, t])
    gains = np.nansum(labels, 1)
    out[f"ndcg@{k}"] = ndcg_at_k(groups, gains, probs.sum(1), k)
    return out
