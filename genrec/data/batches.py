"""Jagged mini-batches cut from a leave-one-out Split, for training and evaluation.

A batch is never padded: items (sum N,), offsets (B + 1,), and per-token targets / timestamps / event types;
with target events (a Split made with target_events) `target_mask` says which positions' next event is a target.
Training batches group users of similar length (within a shuffled pool) so that the padded layout
attention uses inside a batch wastes little.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from genrec.data.sequences import Split


@dataclass
class Batch:
    items: torch.Tensor  # (sum N,) int64 input items
    offsets: torch.Tensor  # (B + 1,) int64
    timestamps: torch.Tensor | None  # (sum N,) int64
    targets: torch.Tensor | None = None  # (sum N,) next item at each position (training)
    users: torch.Tensor | None = None  # (B,) user indices
    events: torch.Tensor | None = None  # (sum N,) event type of each input event (1-based), if the data has them
    target_mask: torch.Tensor | None = None  # (sum N,) bool: the next event is a training target (None: all are)

    @property
    def num_sequences(self) -> int:
        return len(self.offsets) - 1

    def to(self, device: torch.device) -> Batch:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            mv(self.items),
            mv(self.offsets),
            mv(self.timestamps),
            mv(self.targets),
            mv(self.users),
            mv(self.events),
            mv(self.target_mask),
        )


def gather_windows(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the ranges [starts_b, ends_b) and the jagged offsets. (B,), (B,) -> (sum N,), (B+1,)."""
    lengths = ends - starts
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - starts, lengths)
    return idx, offsets


def train_batches(
    split: Split, batch_size: int, max_len: int, seed: int, crop: str = "last", pool: int = 32,
    max_users: int | None = None,
) -> Iterator[Batch]:  # fmt: skip
    """One epoch of next-item training batches, deterministic for (seed).

    Each user contributes its last max_len + 1 training events (crop='random': a random window, so long
    histories are seen in full across epochs): inputs are events [0, n-1), targets events [1, n).
    max_users: the epoch trains a random sample of this many users (another per seed) instead of all.
    """
    rng = np.random.default_rng(seed)
    starts, ends = split.train_offsets[:-1], split.train_offsets[1:]
    users = np.flatnonzero(ends - starts >= 2)
    if split.train_targets is not None:  # users whose training events hold a target after the first one
        has = np.zeros(len(split.train_items) + 1, np.int64)
        np.cumsum(split.train_targets, out=has[1:])
        users = users[has[ends[users]] - has[starts[users] + 1] > 0]
    rng.shuffle(users)
    users = users[:max_users]
    s, e = starts[users], ends[users]
    span = np.minimum(e - s, max_len + 1)
    if crop == "random":
        s = s + (rng.random(len(users)) * (e - s - span + 1)).astype(np.int64)
    else:
        s = e - span
    e = s + span
    # length-bucketing: sort each pool of `pool` batches by length, then shuffle the batch order
    chunks = []
    step = batch_size * pool
    for p in range(0, len(users), step):
        order = p + np.argsort(span[p : p + step], kind="stable")
        chunks += [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for k in rng.permutation(len(chunks)):
        sel = chunks[k]
        idx, offsets = gather_windows(s[sel], e[sel])
        # inputs drop each window's last event, targets drop its first
        seq_off = offsets - np.arange(len(offsets))
        is_last = np.zeros(len(idx), bool)
        is_last[offsets[1:] - 1] = True
        is_first = np.zeros(len(idx), bool)
        is_first[offsets[:-1]] = True
        items = split.train_items[idx]
        ts, ev, tm = split.train_timestamps, split.train_events, split.train_targets
        yield Batch(
            items=torch.from_numpy(items[~is_last]),
            offsets=torch.from_numpy(seq_off),
            timestamps=None if ts is None else torch.from_numpy(ts[idx][~is_last]),
            targets=torch.from_numpy(items[~is_first]),
            users=torch.from_numpy(users[sel]),
            events=None if ev is None else torch.from_numpy(ev[idx][~is_last]),
            target_mask=None if tm is None else torch.from_numpy(tm[idx][~is_first]),
        )


def eval_batches(
    split: Split, which: str, batch_size: int, max_len: int
) -> Iterator[tuple[Batch, torch.Tensor, list[np.ndarray]]]:
    """(batch of input windows, targets (B,), each user's full seen history) for 'valid' or 'test'."""
    users, ends, targets = split.eval_inputs(which)
    data = split.data
    order = np.argsort(np.minimum(ends - data.offsets[users], max_len), kind="stable")  # similar lengths
    for p in range(0, len(users), batch_size):
        sel = order[p : p + batch_size]
        u, e = users[sel], ends[sel]
        s = np.maximum(data.offsets[u], e - max_len)
        idx, offsets = gather_windows(s, e)
        hist_idx, hist_off = gather_windows(data.offsets[u], e)
        seen = np.split(data.items[hist_idx], hist_off[1:-1])
        ts, ev = data.timestamps, data.event_types
        yield (
            Batch(
                items=torch.from_numpy(data.items[idx]),
                offsets=torch.from_numpy(offsets),
                timestamps=None if ts is None else torch.from_numpy(ts[idx]),
                users=torch.from_numpy(u),
                events=None if ev is None else torch.from_numpy(ev[idx]),
            ),
            torch.from_numpy(targets[sel]),
            seen,
        )
