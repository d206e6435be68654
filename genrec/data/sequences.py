"""Per-user chronological sequences held as jagged arrays, id vocabularies, and the leave-one-out split.

A dataset of U users is one flat array of item indices plus offsets, never padded:
    items:   (sum_u N_u,)  int64, item index in 1..num_items (0 is padding, never stored)
    offsets: (U + 1,)      int64, user u owns items[offsets[u]:offsets[u+1]]
Optional per-event arrays (timestamps, event types, values) share the same offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

PAD = 0


@dataclass
class Vocab:
    """Stable raw-id <-> index mapping; index 0 is reserved for padding / unknown."""

    ids: list[str]  # ids[i - 1] is the raw id of index i
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {raw: i + 1 for i, raw in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise ValueError("vocabulary ids must be unique")

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, raw: str) -> int:
        """Index of a raw id, 0 if unknown."""
        return self._index.get(str(raw), PAD)

    def __contains__(self, raw: object) -> bool:
        return str(raw) in self._index

    def raw(self, index: int) -> str:
        return self.ids[index - 1]

    def extend(self, raw_ids: list[str]) -> Vocab:
        """A new vocabulary with unseen ids appended (existing indices never move)."""
        new = [r for r in dict.fromkeys(map(str, raw_ids)) if r not in self._index]
        return Vocab(self.ids + new)


class JaggedUsers:
    """Accessors of a per-user jagged event store with `offsets` (num_users + 1,) and an `item_vocab`."""

    offsets: np.ndarray
    item_vocab: Vocab

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_vocab)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class SequenceData(JaggedUsers):
    """All users' histories, jagged. Index u (0-based) is the user with raw id user_vocab.ids[u]."""

    items: np.ndarray  # (sum N,) int64 in 1..num_items
    offsets: np.ndarray  # (U + 1,) int64
    item_vocab: Vocab
    user_vocab: Vocab
    timestamps: np.ndarray | None = None  # (sum N,) int64 unix seconds
    event_types: np.ndarray | None = None  # (sum N,) int64 index into event_vocab (1-based)
    event_vocab: Vocab | None = None
    name: str = "custom"

    def user_items(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def summary(self) -> dict[str, int | str | bool]:
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": int(len(self.items)),
            "has_timestamps": self.timestamps is not None,
        }


def build_sequences(
    events: pl.DataFrame, name: str = "custom", item_vocab: Vocab | None = None, collapse_repeats: bool = True
) -> SequenceData:
    """Group a validated event log into per-user chronological sequences.

    events: columns user_id, item_id (str), timestamp (int64 seconds, may be all-null for order-only
    data), optional event_type (str). Rows are in file order; the sort by (user, timestamp) is stable,
    so events with equal timestamps keep their file order. Users and items are numbered by first
    appearance in the file, which keeps vocabularies stable for a given file.
    collapse_repeats: consecutive events of one user on the same item (a view -> cart -> purchase funnel)
    become one token with the first event's time and the last event's type; a later return to the item
    (a repeat purchase) stays a new token.
    """
    n = events.height
    if n == 0:
        raise ValueError("event log has no rows")
    user_vocab = Vocab(events["user_id"].unique(maintain_order=True).cast(pl.Utf8).to_list())
    if item_vocab is None:
        item_vocab = Vocab(events["item_id"].unique(maintain_order=True).cast(pl.Utf8).to_list())
    u = events["user_id"].cast(pl.Utf8).replace_strict(user_vocab._index, return_dtype=pl.Int64).to_numpy() - 1
    it = events["item_id"].cast(pl.Utf8).replace_strict(item_vocab._index, default=PAD, return_dtype=pl.Int64)
    has_ts = "timestamp" in events.columns and events["timestamp"].null_count() < n
    ts = events["timestamp"].fill_null(0).cast(pl.Int64).to_numpy() if has_ts else np.zeros(n, np.int64)
    event_vocab = ev = None
    if "event_type" in events.columns:
        event_vocab = Vocab(events["event_type"].unique(maintain_order=True).cast(pl.Utf8).to_list())
        ev = events["event_type"].cast(pl.Utf8).replace_strict(event_vocab._index, return_dtype=pl.Int64).to_numpy()
    # np.lexsort is stable, primary key last: equal (user, timestamp) keep file (row) order.
    order = np.lexsort((np.arange(n), ts, u))
    items, su, ts = it.to_numpy()[order], u[order], ts[order]
    ev = ev[order] if ev is not None else None
    keep = items != PAD  # only items outside an imposed vocabulary are dropped
    items, su, ts = items[keep], su[keep], ts[keep]
    ev = ev[keep] if ev is not None else None
    if collapse_repeats and len(items):
        start = np.ones(len(items), bool)  # first event of each run of equal (user, item)
        start[1:] = (items[1:] != items[:-1]) | (su[1:] != su[:-1])
        if ev is not None:  # the run's token takes the type of the run's last event
            last = np.append(np.flatnonzero(start)[1:] - 1, len(items) - 1)
            ev = ev[last]
        items, su, ts = items[start], su[start], ts[start]
    offsets = np.zeros(len(user_vocab) + 1, np.int64)
    np.cumsum(np.bincount(su, minlength=len(user_vocab)), out=offsets[1:])
    return SequenceData(
        items=items.astype(np.int64),
        offsets=offsets,
        item_vocab=item_vocab,
        user_vocab=user_vocab,
        timestamps=ts if has_ts else None,
        event_types=ev,
        event_vocab=event_vocab,
        name=name,
    )


def from_item_lists(lists: list[list[int]], name: str, user_ids: list[str] | None = None) -> SequenceData:
    """Sequences given directly as already-ordered integer item ids per user (SASRec-style files).

    Raw item ids keep their numbers: index i <-> raw id str(i) when the ids are 1..max, so published
    splits line up with our indices.
    """
    lengths = np.array([len(x) for x in lists], np.int64)
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((i for seq in lists for i in seq), np.int64, count=int(offsets[-1]))
    max_id = int(flat.max())
    if flat.min() >= 1 and len(np.unique(flat)) == max_id:
        item_vocab = Vocab([str(i) for i in range(1, max_id + 1)])
        items = flat
    else:
        item_vocab = Vocab([str(i) for i in dict.fromkeys(flat.tolist())])
        items = np.array([item_vocab.index(str(i)) for i in flat], np.int64)
    users = user_ids or [str(i + 1) for i in range(len(lists))]
    return SequenceData(items=items, offsets=offsets, item_vocab=item_vocab, user_vocab=Vocab(users), name=name)


@dataclass
class Split:
    """Leave-one-out split, jagged. For each evaluated user u:
    train:  events [start_u, end_u - 2)               (next-item targets inside it)
    valid:  input  [start_u, end_u - 2), target at end_u - 2
    test:   input  [start_u, end_u - 1), target at end_u - 1
    Users with fewer than 3 events are only trained on, never evaluated.
    valid_in_train (a final refit, after validation chose the settings): train = [start_u, end_u - 1), so the
    validation target is a training event and 'valid' cannot be scored; test is unchanged.
    With target events (leave_one_out(target_events=...), e.g. purchases): the test target is the user's last
    target-type event t_u and the validation target the one before, v_u; train = [start_u, v_u) and only
    target-type events are training targets (the others are context). Events after t_u are never used.
    """

    data: SequenceData
    train_offsets: np.ndarray  # (U + 1,) offsets into a compacted train array
    train_items: np.ndarray
    train_timestamps: np.ndarray | None
    eval_users: np.ndarray  # (E,) user indices with >= 3 events
    valid_in_train: bool = False
    train_events: np.ndarray | None = None  # (sum train,) event type of each training event (1-based)
    train_targets: np.ndarray | None = None  # (sum train,) bool: may this event be a training target (None: all)
    ends: dict[str, np.ndarray] | None = None  # "valid" / "test" -> (E,) target positions into data.items

    def sample_users(self, n: int, seed: int = 0) -> Split:
        """The same split evaluated on n of its users (a fixed random sample; all of them if n >= E)."""
        if n >= len(self.eval_users):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.eval_users), n, replace=False))
        ends = {k: v[keep] for k, v in self.ends.items()} if self.ends is not None else None
        return replace(self, eval_users=self.eval_users[keep], ends=ends)

    def eval_inputs(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, input end positions (exclusive, into data.items), target items) for a split."""
        if split not in ("valid", "test"):
            raise ValueError(f"unknown split {split!r}: use 'valid' or 'test'")
        if split == "valid" and self.valid_in_train:
            raise ValueError("this split trains on the validation events (a refit); it has no validation split")
        u = self.eval_users
        if self.ends is not None:
            end = self.ends[split]
        else:
            end = self.data.offsets[u + 1] - (2 if split == "valid" else 1)
        return u, end, self.data.items[end]


def leave_one_out(
    data: SequenceData, valid_in_train: bool = False, target_events: list[str] | tuple[str, ...] | None = None
) -> Split:
    if target_events is not None:
        return _leave_last_targets_out(data, valid_in_train, target_events)
    lengths = data.lengths
    eval_users = np.flatnonzero(lengths >= 3)
    held_out = (1,) if valid_in_train else (1, 2)
    train_len = np.where(lengths >= 3, lengths - len(held_out), lengths)
    keep = np.ones(len(data.items), bool)
    ends = data.offsets[1:]
    for drop in held_out:
        idx = ends[lengths >= 3] - drop
        keep[idx] = False
    train_offsets = np.zeros_like(data.offsets)
    np.cumsum(train_len, out=train_offsets[1:])
    return Split(
        data=data,
        train_offsets=train_offsets,
        train_items=data.items[keep],
        train_timestamps=data.timestamps[keep] if data.timestamps is not None else None,
        eval_users=eval_users,
        valid_in_train=valid_in_train,
        train_events=data.event_types[keep] if data.event_types is not None else None,
    )


def target_mask(data: SequenceData, target_events: list[str] | tuple[str, ...]) -> np.ndarray:
    """(sum N,) bool: is the event's type one of `target_events`. Unknown names are an error listing the types."""
    if data.event_types is None or data.event_vocab is None:
        raise ValueError("--target-events needs an event_type column in the data")
    unknown = [t for t in target_events if t not in data.event_vocab]
    if unknown or not target_events:
        raise ValueError(
            f"--target-events: unknown event type {unknown[0] if unknown else ''!r} "
            f"(the data's event types: {', '.join(data.event_vocab.ids)})"
        )
    codes = np.zeros(len(data.event_vocab) + 1, bool)
    codes[[data.event_vocab.index(t) for t in target_events]] = True
    return codes[data.event_types]


def _leave_last_targets_out(
    data: SequenceData, valid_in_train: bool, target_events: list[str] | tuple[str, ...]
) -> Split:
    is_target = target_mask(data, target_events)
    users = np.repeat(np.arange(data.num_users), data.lengths)
    pos = np.flatnonzero(is_target)  # target events, grouped by user in order
    count = np.bincount(users[pos], minlength=data.num_users)
    last = np.zeros(data.num_users, np.int64)  # index into pos of each user's last target (if any)
    last[count > 0] = np.cumsum(count)[count > 0] - 1
    starts = data.offsets[:-1]
    test_end = np.where(count >= 1, pos[np.minimum(last, len(pos) - 1)] if len(pos) else 0, -1)
    valid_end = np.where(count >= 2, pos[np.maximum(last - 1, 0)] if len(pos) else 0, -1)
    if valid_in_train:  # the test target needs something before it
        evaluated = (count >= 1) & (test_end > starts)
        train_end = np.where(evaluated, test_end, data.offsets[1:])
    else:  # the validation target needs something before it
        evaluated = (count >= 2) & (valid_end > starts)
        train_end = np.where(evaluated, valid_end, data.offsets[1:])
    eval_users = np.flatnonzero(evaluated)
    keep = np.zeros(len(data.items), bool)
    idx = np.arange(len(data.items))
    keep[idx < train_end[users]] = True
    train_offsets = np.zeros_like(data.offsets)
    np.cumsum(np.bincount(users[keep], minlength=data.num_users), out=train_offsets[1:])
    ends = {"test": test_end[eval_users]}
    if not valid_in_train:
        ends["valid"] = valid_end[eval_users]
    return Split(
        data=data,
        train_offsets=train_offsets,
        train_items=data.items[keep],
        train_timestamps=data.timestamps[keep] if data.timestamps is not None else None,
        eval_users=eval_users,
        valid_in_train=valid_in_train,
        train_events=data.event_types[keep],
        train_targets=is_target[keep],
        ends=ends,
    )
