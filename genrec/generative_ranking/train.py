"""Training and prediction for the HSTU ranker, plus the masked multi-task loss every ranker here uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from genrec.generative_ranking.examples import Examples
from genrec.models.hstu_ranker import HSTURanker
from genrec.training.loop import Epoch, LoopConfig, fit


def multitask_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked binary cross-entropy. logits, labels: (R, T); NaN labels are missing and contribute nothing.

    Each task's loss is the mean over its present labels; the result is the mean over tasks that have any,
    so a task with few labels (e.g. 'liked', only on rated items) is not drowned by one with many.
    """
    present = ~torch.isnan(labels)
    target = torch.where(present, labels, torch.zeros_like(labels))
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * present
    count = present.sum(0)
    per_task = bce.sum(0) / count.clamp(min=1)
    has = count > 0
    if not bool(has.any()):
        return logits.sum() * 0.0
    return per_task[has].mean()


@dataclass
class RankTrainConfig:
    epochs: int = 5
    batch_users: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    max_seconds: float | None = None  # time budget: no epoch starts that would end past it


def fit_hstu(model: HSTURanker, train: Examples, cfg: RankTrainConfig, quiet: bool = False) -> list[dict[str, Any]]:
    """Adam over batches of users (all of a user's cuts in one pass). Returns the loop's per-epoch records
    (loss, seconds, elapsed)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels = torch.from_numpy(train.labels)
    # users sorted by length inside shuffled pools: batches of similar length waste little padding
    lengths = np.diff(train.hist_offsets)

    def train_epoch(ep: Epoch) -> dict[str, float]:
        order = rng.permutation(train.num_users)
        pool = cfg.batch_users * 16
        order = np.concatenate([p[np.argsort(lengths[p])] for p in np.array_split(order, max(1, len(order) // pool))])
        batches = [order[i : i + cfg.batch_users] for i in range(0, len(order), cfg.batch_users)]
        rng.shuffle(batches)
        ep.start(total=train.num_users, unit="users")
        total, seen = 0.0, 0
        for rows in batches:
            ex = train.take(rows)
            logits = model(**ex.tensors())
            _, c_idx = _cand_rows(train.cand_offsets, rows)
            loss = multitask_loss(logits, labels[c_idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
            ep.step(len(rows), loss=float(loss.detach()))
        return {"loss": total / max(seen, 1)}

    loop = LoopConfig(cfg.epochs, time_budget_s=cfg.max_seconds)
    history = fit(model, train_epoch, loop, console=Console(quiet=quiet)).history
    model.eval()
    return history


def _cand_rows(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    starts, ends = offsets[rows], offsets[rows + 1]
    idx = (
        np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        if len(rows)
        else np.zeros(0, np.int64)
    )
    return idx, torch.from_numpy(idx.astype(np.int64))


@torch.no_grad()
def predict_hstu(model: HSTURanker, ex: Examples, batch_users: int = 64) -> np.ndarray:
    """(sum M, T) probabilities for every candidate of `ex`, in its order."""
    model.eval()
    out = []
    for s in range(0, ex.num_users, batch_users):
        part = ex.take(np.arange(s, min(s + batch_users, ex.num_users)))
        out.append(torch.sigmoid(model(**part.tensors())).numpy())
    return np.concatenate(out) if out else np.zeros((0, ex.labels.shape[1]), np.float32)
