"""CTR metrics (AUC, logloss) and per-list ranking metrics over each user's candidate rows."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count one half."""
    labels = np.asarray(labels) > 0.5
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = np.asarray(scores)[order]
    ranks = np.empty(len(s), np.float64)
    # average ranks over runs of equal scores
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def list_metrics(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int = 10) -> dict[str, float]:
    """HR@k / NDCG@k of the (first) positive inside each group's candidate list; ties count against it.

    groups: (R,) list ids with each list's rows contiguous; lists without a positive count as misses."""
    groups, labels, scores = np.asarray(groups), np.asarray(labels) > 0.5, np.asarray(scores, np.float64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], len(groups)]
    hr, ndcg = [], []
    for a, b in zip(starts, ends, strict=True):
        pos = np.flatnonzero(labels[a:b])
        if len(pos) == 0:
            hr.append(0.0), ndcg.append(0.0)
            continue
        t = scores[a + pos[0]]
        rank = int((scores[a:b] >= t).sum())
        hr.append(float(rank <= k))
        ndcg.append(1.0 / np.log2(rank + 1) if rank <= k else 0.0)
    return {f"HR@{k}": float(np.mean(hr)), f"NDCG@{k}": float(np.mean(ndcg))}
