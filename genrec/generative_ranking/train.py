"""Training and prediction for the HSTU ranker, plus the masked multi-task loss every ranker here uses."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from genrec.generative_ranking.examples import Examples
from genrec.models.hstu_ranker import HSTURanker


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
    max_seconds: float | None = None  # stop after the epoch that crosses this budget


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        disable=disable,
    )


def fit_hstu(model: HSTURanker, train: Examples, cfg: RankTrainConfig, quiet: bool = False) -> list[dict[str, float]]:
    """Adam over batches of users (all of a user's cuts in one pass). Returns per-epoch loss and seconds."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels = torch.from_numpy(train.labels)
    history, start = [], time.perf_counter()
    # users sorted by length inside shuffled pools: batches of similar length waste little padding
    lengths = np.diff(train.hist_offsets)
    with _progress(quiet) as bar:
        task = bar.add_task("hstu ranker", total=cfg.epochs * -(-train.num_users // cfg.batch_users))
        for epoch in range(cfg.epochs):
            model.train()
            order = rng.permutation(train.num_users)
            pool = cfg.batch_users * 16
            order = np.concatenate(
                [p[np.argsort(lengths[p])] for p in np.array_split(order, max(1, len(order) // pool))]
            )
            batches = [order[i : i + cfg.batch_users] for i in range(0, len(order), cfg.batch_users)]
            rng.shuffle(batches)
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
                bar.advance(task)
            history.append({"epoch": epoch + 1, "loss": total / max(seen, 1), "seconds": time.perf_counter() - start})
            if cfg.max_seconds is not None and time.perf_counter() - start > cfg.max_seconds:
                break
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
