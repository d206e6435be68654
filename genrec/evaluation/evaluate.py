"""Full-catalog leave-one-out evaluation: every item is scored, the user's seen items are excluded.

A scorer maps a Batch of input windows to (B, num_items + 1) scores (column 0 = padding, never ranked).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from genrec.data.batches import Batch, eval_batches
from genrec.data.sequences import Split
from genrec.evaluation.metrics import metrics_from_ranks, ranks_from_scores

Scorer = Callable[[Batch], torch.Tensor]


def evaluation_ranks(
    scorer: Scorer, split: Split, which: str, max_len: int, batch_size: int = 256, device: str = "cpu"
) -> np.ndarray:
    """(E,) rank of each evaluated user's target in the full catalog, seen items excluded."""
    ranks = [batch_ranks(scorer, b, t, s, device) for b, t, s in eval_batches(split, which, batch_size, max_len)]
    return np.concatenate(ranks) if ranks else np.zeros(0)


def batch_ranks(scorer: Scorer, batch: Batch, targets: torch.Tensor, seen: list[np.ndarray], device: str) -> np.ndarray:
    """(B,) ranks of one evaluation batch's targets: padding and each user's seen items excluded."""
    scores = scorer(batch.to(torch.device(device))).float().cpu()
    scores[:, 0] = float("-inf")
    rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
    scores[torch.from_numpy(rows), torch.from_numpy(np.concatenate(seen))] = float("-inf")
    return ranks_from_scores(scores, targets).numpy()


def estimate_eval_seconds(
    scorer: Scorer, split: Split, which: str, max_len: int, batch_size: int = 256, device: str = "cpu"
) -> float:
    """Seconds evaluation_ranks will take, from two of its batches timed: the second (short histories; the first
    pays one-off costs) and the last (the longest), their mean times the number of batches. Used to keep a time
    budget's room for a validation not yet run; on the high side where the cost grows with the history."""
    n_batches = -(-len(split.eval_users) // batch_size)
    if n_batches <= 2:
        return 0.0  # a small split: about as long as timing it
    timed = []
    for k, (batch, targets, seen) in enumerate(eval_batches(split, which, batch_size, max_len)):
        if k not in (1, n_batches - 1):
            continue
        t = time.perf_counter()
        batch_ranks(scorer, batch, targets, seen, device)
        timed.append(time.perf_counter() - t)
    return float(np.mean(timed)) * n_batches


def evaluate_scorer(
    scorer: Scorer, split: Split, which: str, max_len: int, batch_size: int = 256, device: str = "cpu"
) -> dict[str, float]:
    return metrics_from_ranks(evaluation_ranks(scorer, split, which, max_len, batch_size, device))


def model_scorer(model: torch.nn.Module, precision: str = "fp32") -> Scorer:
    """Scores the whole catalog with a SequentialModel's state after the last input event.

    precision="bf16" autocasts the encoder (validation during bf16 training); test scoring uses fp32. The scorer
    holds the item table of the weights it first saw: make one per evaluation (evaluate_model does).
    """

    table: list[torch.Tensor] = []  # the item table, built on the first batch: fixed for this scorer's batches

    @torch.no_grad()
    def score(batch: Batch) -> torch.Tensor:
        model.eval()
        device = batch.items.device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            states = model.user_states(batch.items, batch.offsets, batch.timestamps, batch.events)
        if not hasattr(model, "item_table"):
            return model.score_all(states.float())
        if not table:  # per batch it was rebuilt: 0.6 s a batch for 147k items with attributes (measured)
            table.append(model.item_table())
        return states.float() @ table[0].T / model.config.temperature

    return score


def popularity_scores(split: Split) -> torch.Tensor:
    """(num_items + 1,) training-event counts (of target events only, when the split has them); ties broken by
    item index so the order is total."""
    n = split.data.num_items + 1
    items = split.train_items if split.train_targets is None else split.train_items[split.train_targets]
    counts = np.bincount(items, minlength=n).astype(np.float64)
    return torch.from_numpy(counts - np.arange(n) / (2.0 * n))


def popularity_ranks(split: Split, which: str = "test") -> np.ndarray:
    """evaluation_ranks of popularity_scorer without scoring the catalog per user: one order for every user, so
    a target's rank is the number of items at or above it less the user's seen ones among them (O(seen) a user
    instead of O(catalog)). Users in evaluation_ranks' order at max_len 1 (the file order)."""
    pop = popularity_scores(split).numpy()
    pop[0] = -np.inf
    order = np.sort(pop)
    ranks = []
    for _, targets, seen in eval_batches(split, which, 4096, 1):
        tgt = targets.numpy()
        above = len(order) - np.searchsorted(order, pop[tgt], side="left")  # items scoring >= the target
        rows = np.repeat(np.arange(len(seen)), [len(x) for x in seen])
        uniq = np.unique(rows * len(pop) + np.concatenate(seen)) if len(rows) else np.zeros(0, np.int64)
        r, items = uniq // len(pop), uniq % len(pop)  # each user's seen items, once
        hidden = np.bincount(r[pop[items] >= pop[tgt][r]], minlength=len(seen))  # seen ones at or above it
        seen_target = np.bincount(r[items == tgt[r]], minlength=len(seen)) > 0  # excluded: a miss
        ranks.append(np.where(seen_target, np.inf, above - hidden).astype(np.float64))
    return np.concatenate(ranks) if ranks else np.zeros(0)


def evaluate_popularity(split: Split, which: str = "test") -> dict[str, float]:
    """evaluate_scorer(popularity_scorer(split), split, which, ...), from popularity_ranks."""
    return metrics_from_ranks(popularity_ranks(split, which))


def popularity_scorer(split: Split) -> Scorer:
    pop = popularity_scores(split).float()
    return lambda batch: pop.expand(batch.num_sequences, -1).clone()


def evaluate_model(
    model: torch.nn.Module,
    split: Split,
    which: str = "test",
    batch_size: int = 256,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, float]:
    return evaluate_scorer(model_scorer(model, precision), split, which, model.config.max_len, batch_size, device)
