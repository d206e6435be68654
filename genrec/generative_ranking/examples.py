"""Ranking examples: per user, a history and candidates appended after a cut point, with multi-task labels.

A user's examples, jagged over users:
    history   items / actions / timestamps (N,)            the user's events, oldest first (at most max_len)
    candidates items (M,), cuts (M,), times (M,), labels (M, T)
A candidate with cut c is "appended after the first c history events": it may look at history[:c] and
itself, never at another candidate nor at history[c:]. Its time is the time the prediction is made for.

train_examples  every history position t >= 1 is a cut: the next `horizon` real events from t are positives
                (labels from their actions) and num_negatives popularity-sampled items share the cut and time
                (labels = negative_labels).
eval_examples   the last `window` events of each evaluated user are held out: history = the events before, one
                cut at its end (all candidates share one prefix: M-FALCON), candidates = the distinct held-out
                items (labels from the highest action on each) + num_negatives popularity-sampled items the
                user never interacted with, all at the request time = the first held-out event's time.
split_train     the training side of that split: each evaluated user's events minus the held-out window.
Training never sees a held-out event; no hyperparameter is tuned on the test lists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from genrec.generative_ranking.data import ActionSequences


@dataclass
class Examples:
    hist_items: np.ndarray  # (sum N,)
    hist_actions: np.ndarray  # (sum N,)
    hist_times: np.ndarray  # (sum N,), zeros when the data has no timestamps
    hist_offsets: np.ndarray  # (B + 1,)
    cand_items: np.ndarray  # (sum M,)
    cand_cuts: np.ndarray  # (sum M,) visible history events, 0..N_b
    cand_times: np.ndarray  # (sum M,)
    cand_offsets: np.ndarray  # (B + 1,)
    labels: np.ndarray  # (sum M, T) float32, NaN = missing
    users: np.ndarray  # (B,) user index in the ActionSequences

    @property
    def num_users(self) -> int:
        return len(self.hist_offsets) - 1

    @property
    def num_candidates(self) -> int:
        return len(self.cand_items)

    def cand_user(self) -> np.ndarray:
        """(sum M,) position in this Examples of the user who owns each candidate (list id for NDCG)."""
        return np.repeat(np.arange(self.num_users), np.diff(self.cand_offsets))

    def take(self, rows: np.ndarray) -> Examples:
        """The examples of users `rows` (positions in this Examples), in that order."""
        h = _gather(self.hist_offsets, rows)
        c = _gather(self.cand_offsets, rows)
        return Examples(
            self.hist_items[h[0]],
            self.hist_actions[h[0]],
            self.hist_times[h[0]],
            h[1],
            self.cand_items[c[0]],
            self.cand_cuts[c[0]],
            self.cand_times[c[0]],
            c[1],
            self.labels[c[0]],
            self.users[rows],
        )

    def tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The model's keyword inputs (see HSTURanker.forward)."""
        t = {
            "hist_items": self.hist_items,
            "hist_actions": self.hist_actions,
            "hist_times": self.hist_times,
            "hist_offsets": self.hist_offsets,
            "cand_items": self.cand_items,
            "cand_cuts": self.cand_cuts,
            "cand_times": self.cand_times,
            "cand_offsets": self.cand_offsets,
        }
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in t.items()}


def _gather(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the jagged rows `rows` and their new offsets."""
    return _ranges(offsets[rows], offsets[rows + 1])


def _ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the ranges [starts_b, ends_b) and the jagged offsets. (B,), (B,) -> (sum N,), (B+1,)."""
    lengths = ends - starts
    out = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    idx = np.arange(out[-1], dtype=np.int64) - np.repeat(out[:-1] - starts, lengths)
    return idx, out


def popularity(data: ActionSequences) -> np.ndarray:
    """(num_items + 1,) token counts per item (the negative-sampling distribution); row 0 = 0."""
    return np.bincount(data.items, minlength=data.num_items + 1).astype(np.float64)


def item_statistics(train: ActionSequences) -> np.ndarray:
    """(num_items + 1, T) float32: log(1 + how often each item earned each task's label in `train`),
    standardised per column; the per-item counters a feature ranker gets, as dense item attributes."""
    counts = np.zeros((train.num_items + 1, len(train.tasks)))
    np.add.at(counts, train.items, np.nan_to_num(train.task_labels[train.actions]))
    x = np.log1p(counts)
    return ((x - x.mean(0)) / (x.std(0) + 1e-6)).astype(np.float32)


def _sample(pop: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    cdf = np.cumsum(pop / pop.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(pop) - 1)


def split_train(data: ActionSequences, window: int, min_history: int = 2) -> tuple[ActionSequences, np.ndarray]:
    """Training data (each evaluated user's last `window` events removed) and the evaluated users.

    Users with at least min_history + window events are evaluated; the others are trained on in full.
    """
    lengths = data.lengths
    evaluated = np.flatnonzero(lengths >= min_history + window)
    keep = np.ones(len(data.items), bool)
    ends = data.offsets[1:][evaluated]
    for d in range(1, window + 1):
        keep[ends - d] = False
    new_len = lengths.copy()
    new_len[evaluated] -= window
    offsets = np.zeros_like(data.offsets)
    np.cumsum(new_len, out=offsets[1:])
    ts = data.timestamps[keep] if data.timestamps is not None else None
    train = replace(data, items=data.items[keep], actions=data.actions[keep], timestamps=ts, offsets=offsets)
    return train, evaluated


def train_examples(
    data: ActionSequences,
    max_len: int,
    num_negatives: int,
    pop: np.ndarray,
    seed: int,
    horizon: int = 1,
    cut_every: int = 1,
) -> Examples:
    """Every position t >= 1 of each user's last max_len events is a cut with positives and negatives.

    Positives: the distinct items of events t .. t + horizon - 1 (labels from the highest action on each), so
    training matches test lists, whose positives are the next `window` events (horizon = window); negatives:
    num_negatives items drawn from `pop` (training popularity) among items the user has no training event on.
    All of a cut's candidates get the time of event t. cut_every > 1 keeps every cut_every-th cut (random phase
    per user): about horizon / cut_every positives per event, so a longer horizon need not cost more rows.
    """
    rng = np.random.default_rng(seed)
    lengths = np.minimum(data.lengths, max_len)
    users = np.flatnonzero(lengths >= 2)
    starts, ends = data.offsets[1:][users] - lengths[users], data.offsets[1:][users]
    hist_idx, hist_off = _ranges(starts, ends)
    times = data.timestamps if data.timestamps is not None else np.zeros(len(data.items), np.int64)
    n = lengths[users]
    # cut t in 1..n-1 per user
    user_of = np.repeat(np.arange(len(users)), n - 1)
    cut = np.arange(int((n - 1).sum())) - np.repeat(np.cumsum(n - 1) - (n - 1), n - 1) + 1
    if cut_every > 1:
        phase = rng.integers(0, cut_every, len(users))
        keep = (cut + phase[user_of]) % cut_every == 0
        user_of, cut = user_of[keep], cut[keep]
    C, h, k = len(cut), horizon, num_negatives
    ahead = cut[:, None] + np.arange(h)  # (C, h) event positions t .. t+h-1 inside the user's window
    in_seq = ahead < n[user_of][:, None]
    flat = hist_idx[hist_off[user_of][:, None] + np.where(in_seq, ahead, 0)]
    p_items = np.where(in_seq, data.items[flat], 0)
    p_act = np.where(in_seq, data.actions[flat], 0)
    same = (p_items[:, :, None] == p_items[:, None, :]) & in_seq[:, None, :]  # (C, h, h)
    first = ~(same & (np.arange(h)[None, :] < np.arange(h)[:, None])[None]).any(2)  # no earlier copy in the row
    best_act = np.where(same, p_act[:, None, :], 0).max(2)  # highest action over the copies
    # negatives: items this user never interacted with in the training data (as at test time); re-drawn a
    # few times, a rare leftover collision stays (label noise) to keep this vectorised
    own = np.unique(
        np.repeat(users, data.lengths[users]) * (data.num_items + 1)
        + data.items[_ranges(data.offsets[users], data.offsets[users + 1])[0]]
    )
    neg_user = np.repeat(users[user_of], k)
    neg = _sample(pop, len(neg_user), rng)
    for _ in range(5):
        bad = np.flatnonzero(np.isin(neg_user * (data.num_items + 1) + neg, own))
        if not len(bad):
            break
        neg[bad] = _sample(pop, len(bad), rng)
    T = len(data.tasks)
    items = np.concatenate([p_items, neg.reshape(C, k)], 1)  # (C, h + k)
    valid = np.concatenate([in_seq & first, np.ones((C, k), bool)], 1)
    labels = np.concatenate(
        [data.task_labels[best_act], np.broadcast_to(data.negative_labels, (C, k, T))], 1
    )  # (C, h + k, T)
    per_user = np.bincount(np.repeat(user_of, valid.sum(1)), minlength=len(users))
    cand_off = np.zeros(len(users) + 1, np.int64)
    np.cumsum(per_user, out=cand_off[1:])
    t_cut = times[hist_idx[hist_off[user_of] + cut]]
    return Examples(
        hist_items=data.items[hist_idx],
        hist_actions=data.actions[hist_idx],
        hist_times=times[hist_idx],
        hist_offsets=hist_off,
        cand_items=items[valid],
        cand_cuts=np.broadcast_to(cut[:, None], valid.shape)[valid],
        cand_times=np.broadcast_to(t_cut[:, None], valid.shape)[valid],
        cand_offsets=cand_off,
        labels=labels[valid].astype(np.float32),
        users=users,
    )


def eval_examples(
    data: ActionSequences,
    evaluated: np.ndarray,
    window: int,
    max_len: int,
    num_negatives: int,
    pop: np.ndarray,
    seed: int,
) -> Examples:
    """One candidate list per evaluated user (see the module doc): held-out items + sampled unseen items."""
    rng = np.random.default_rng(seed)
    times = data.timestamps if data.timestamps is not None else np.zeros(len(data.items), np.int64)
    h_items, h_actions, h_times, h_len = [], [], [], []
    c_items, c_times, c_labels, c_len = [], [], [], []
    T = len(data.tasks)
    for u in evaluated.tolist():
        s, e = int(data.offsets[u]), int(data.offsets[u + 1])
        cut = e - window
        hs = max(s, cut - max_len)
        h_items.append(data.items[hs:cut])
        h_actions.append(data.actions[hs:cut])
        h_times.append(times[hs:cut])
        h_len.append(cut - hs)
        fut_items, fut_actions = data.items[cut:e], data.actions[cut:e]
        best: dict[int, int] = {}
        for it, a in zip(fut_items.tolist(), fut_actions.tolist(), strict=True):
            best[it] = max(best.get(it, 0), a)
        pos = np.array(list(best), np.int64)
        seen = set(data.items[s:e].tolist())
        negs: list[int] = []
        while len(negs) < num_negatives:  # rejection: unseen items only, no duplicates
            for it in _sample(pop, 2 * num_negatives, rng).tolist():
                if it not in seen and it != 0:
                    seen.add(it)
                    negs.append(it)
                    if len(negs) == num_negatives:
                        break
        lab = np.concatenate(
            [
                data.task_labels[np.array(list(best.values()), np.int64)],
                np.repeat(data.negative_labels[None], len(negs), 0),
            ]
        )
        c_items.append(np.concatenate([pos, np.array(negs, np.int64)]))
        c_times.append(np.full(len(pos) + len(negs), times[cut]))
        c_labels.append(lab.reshape(-1, T))
        c_len.append(len(pos) + len(negs))
    hist_off = np.concatenate([[0], np.cumsum(h_len)]).astype(np.int64)
    cand_off = np.concatenate([[0], np.cumsum(c_len)]).astype(np.int64)
    cand_items = np.concatenate(c_items)
    return Examples(
        hist_items=np.concatenate(h_items),
        hist_actions=np.concatenate(h_actions),
        hist_times=np.concatenate(h_times),
        hist_offsets=hist_off,
        cand_items=cand_items,
        cand_cuts=np.repeat(np.array(h_len, np.int64), c_len),
        cand_times=np.concatenate(c_times),
        cand_offsets=cand_off,
        labels=np.concatenate(c_labels).astype(np.float32),
        users=evaluated.copy(),
    )
