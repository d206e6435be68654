"""Action sequences for generative ranking: per-user (item, action, timestamp) tokens plus item attributes.

    items:   (sum N,) int64 item index 1..num_items        offsets: (U + 1,) int64 (jagged, as SequenceData)
    actions: (sum N,) int64 action id 1..num_actions        (0 is reserved: "action unknown", i.e. a candidate)
    timestamps: (sum N,) int64 seconds, or None

Each dataset also says what a ranker predicts: `tasks` (names) and `task_labels`, an (A + 1, T) table giving the
labels of an interacted candidate from its action, and `negative_labels` (T,), the labels of a candidate the
user did not interact with; NaN means "no label" and is masked out of the loss and the metrics.

  synthetic shop  actions view=1 < cart=2 < purchase=3; tasks view / cart / purchase (action >= level).
                  The log has one row per funnel step. We build it with collapse_repeats=False and collapse each
                  run of consecutive events on one item ourselves, keeping the run's first timestamp and its
                  MAXIMUM action: build_sequences(collapse_repeats=True) keeps the LAST event type, which differs
                  when a purchase is followed by an immediate re-visit of the same item (a repeat visit starts
                  with a plain view). The funnel never goes backwards, so max == "how far the user got".
  your own log    any event log with an event_type column (genrec.data.io.ReadOptions reads it): actions are the
                  event types ordered from the most frequent (a view) to the rarest (a purchase), collapsed runs
                  keep their furthest step, and one task per event type: "reached at least this step".
  MovieLens       actions = the rating 1..5; tasks rated (interacted at all) and liked (rating >= 4). A candidate
                  the user never rated has rated = 0 and liked = NaN (unknown: a missing label, masked).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from genrec.data.datasets import data_dir, data_name, find_catalog, load_dataset
from genrec.data.io import ReadOptions, read_catalog, read_events
from genrec.data.sequences import PAD, JaggedUsers, Vocab, build_sequences

NAN = float("nan")


@dataclass
class ActionSequences(JaggedUsers):
    name: str
    items: np.ndarray  # (sum N,) int64 in 1..num_items
    actions: np.ndarray  # (sum N,) int64 in 1..num_actions
    timestamps: np.ndarray | None  # (sum N,) int64 seconds
    offsets: np.ndarray  # (U + 1,) int64
    item_vocab: Vocab
    action_names: list[str]  # action id a has name action_names[a - 1]
    tasks: list[str]
    task_labels: np.ndarray  # (num_actions + 1, T) float32 labels of an interacted candidate; row 0 unused
    negative_labels: np.ndarray  # (T,) float32 labels of a non-interacted candidate (NaN = missing)
    item_attributes: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (num_items + 1,) codes, 0 = none

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    def attribute_sizes(self) -> dict[str, int]:
        """name -> number of codes (max code + 1), the embedding table size."""
        return {k: int(v.max()) + 1 for k, v in self.item_attributes.items()}

    def subset_users(self, users: np.ndarray) -> ActionSequences:
        """The same data restricted to `users` (0-based indices, kept in the given order)."""
        starts, ends = self.offsets[users], self.offsets[users + 1]
        idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)]).astype(np.int64)
        offsets = np.zeros(len(users) + 1, np.int64)
        np.cumsum(ends - starts, out=offsets[1:])
        ts = self.timestamps[idx] if self.timestamps is not None else None
        return replace(self, items=self.items[idx], actions=self.actions[idx], timestamps=ts, offsets=offsets)

    def summary(self) -> dict[str, object]:
        counts = np.bincount(self.actions, minlength=self.num_actions + 1)[1:]
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "tokens": int(len(self.items)),
            "actions": dict(zip(self.action_names, counts.tolist(), strict=True)),
            "tasks": self.tasks,
            "attributes": sorted(self.item_attributes),
        }


def collapse_runs(
    items: np.ndarray, users: np.ndarray, actions: np.ndarray, timestamps: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Merge consecutive events of one user on one item into a token: first timestamp, maximum action.

    All inputs (E,), sorted by (user, time). Returns the kept items, users, actions, timestamps.
    """
    if not len(items):
        return items, users, actions, timestamps
    start = np.ones(len(items), bool)
    start[1:] = (items[1:] != items[:-1]) | (users[1:] != users[:-1])
    run = np.cumsum(start) - 1  # run id of every event
    best = np.zeros(int(run[-1]) + 1, actions.dtype)
    np.maximum.at(best, run, actions)
    return items[start], users[start], best, timestamps[start]


def collapse_history(items: np.ndarray, actions: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, ...]:
    """Consecutive events on one item -> one token (first time, highest action), as in training data."""
    users = np.zeros(len(items), np.int64)
    items, _, actions, times = collapse_runs(items, users, actions, times)
    return items, actions, times


def _from_events(
    events: pl.DataFrame, name: str, levels: dict[str, int], item_vocab: Vocab | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Vocab]:
    """Event log with an event_type column -> collapsed items, actions, timestamps, offsets, item vocab."""
    unknown = set(events["event_type"].unique().to_list()) - set(levels)
    if unknown:
        raise ValueError(f"{name}: unknown event types {sorted(map(str, unknown))}; known: {sorted(levels)}")
    seq = build_sequences(events, name=name, item_vocab=item_vocab, collapse_repeats=False)
    level = np.array([0] + [levels[t] for t in seq.event_vocab.ids], np.int64)
    users = np.repeat(np.arange(seq.num_users), seq.lengths)
    ts = seq.timestamps if seq.timestamps is not None else np.zeros(len(seq.items), np.int64)
    items, users, actions, ts = collapse_runs(seq.items, users, level[seq.event_types], ts)
    offsets = np.zeros(seq.num_users + 1, np.int64)
    np.cumsum(np.bincount(users, minlength=seq.num_users), out=offsets[1:])
    return items, actions, ts, offsets, seq.item_vocab


def _codes(values: list[str | None], vocab: Vocab, ids: list[str]) -> np.ndarray:
    """Catalog column (aligned to `ids`) -> (num_items + 1,) int64 codes 1..K by first appearance, 0 = missing."""
    out = np.zeros(len(vocab) + 1, np.int64)
    names: dict[str, int] = {}
    for raw, v in zip(ids, values, strict=True):
        i = vocab.index(raw)
        if i != PAD and v not in (None, "", "unknown"):
            out[i] = names.setdefault(str(v), len(names) + 1)
    return out


def price_buckets(price: np.ndarray, num_buckets: int = 10) -> np.ndarray:
    """Prices -> quantile bucket codes 1..num_buckets (0 where the price is missing)."""
    ok = np.isfinite(price)
    out = np.zeros(len(price), np.int64)
    if ok.any():
        edges = np.quantile(price[ok], np.linspace(0, 1, num_buckets + 1)[1:-1])
        out[ok] = np.searchsorted(edges, price[ok], side="right") + 1
    return out


def catalog_attributes(catalog: pl.DataFrame | None, vocab: Vocab) -> dict[str, np.ndarray]:
    """category, brand and price bucket (those the catalog has) as code arrays aligned to item indices."""
    if catalog is None:
        return {}
    ids = catalog["item_id"].cast(pl.Utf8).to_list()
    out = {}
    for col in ("category", "brand"):
        if col in catalog.columns:
            out[col] = _codes(catalog[col].cast(pl.Utf8).to_list(), vocab, ids)
    if "price" in catalog.columns:
        price = np.full(len(vocab) + 1, np.nan)
        idx = np.array([vocab.index(r) for r in ids], np.int64)
        price[idx[idx != PAD]] = catalog["price"].cast(pl.Float64).to_numpy()[idx != PAD]
        out["price"] = price_buckets(price)
    return out


SHOP_ACTIONS = {"view": 1, "cart": 2, "purchase": 3}


def load_shop(size: str = "small", seed: int = 0, **overrides: object) -> ActionSequences:
    """genrec's synthetic shop (view/cart/purchase), see genrec.data.synthetic; overrides go to shop_config."""
    from genrec.data.synthetic import generate_shop, shop_config

    shop = generate_shop(shop_config(size, seed=seed, **overrides))
    items, actions, ts, offsets, vocab = _from_events(shop.events, f"synthetic-{size}", SHOP_ACTIONS)
    labels = np.zeros((4, 3), np.float32)
    for a in (1, 2, 3):
        labels[a, :a] = 1.0  # view >= 1, cart >= 2, purchase >= 3
    return ActionSequences(
        name=f"synthetic-{size}",
        items=items,
        actions=actions,
        timestamps=ts,
        offsets=offsets,
        item_vocab=vocab,
        action_names=list(SHOP_ACTIONS),
        tasks=["view", "cart", "purchase"],
        task_labels=labels,
        negative_labels=np.zeros(3, np.float32),
        item_attributes=catalog_attributes(shop.catalog, vocab),
    )


def _movielens(
    name: str, items: np.ndarray, actions: np.ndarray, ts: np.ndarray, offsets: np.ndarray, vocab: Vocab, attrs: dict
) -> ActionSequences:
    labels = np.zeros((6, 2), np.float32)
    labels[1:, 0] = 1.0  # rated
    labels[4:, 1] = 1.0  # liked: rating >= 4
    return ActionSequences(
        name=name,
        items=items,
        actions=actions,
        timestamps=ts,
        offsets=offsets,
        item_vocab=vocab,
        action_names=[f"rating{r}" for r in range(1, 6)],
        tasks=["rated", "liked"],
        task_labels=labels,
        negative_labels=np.array([0.0, NAN], np.float32),  # unrated: not rated, liking unknown
        item_attributes=attrs,
    )


_RATINGS = {str(r): r for r in range(1, 6)}


def load_ml100k() -> ActionSequences:
    """MovieLens-100K: ratings as actions, with timestamps; category = the movie's first genre."""
    ds = load_dataset("ml-100k")
    seq = ds.sequences
    level = np.array([0] + [_RATINGS[t] for t in seq.event_vocab.ids], np.int64)
    attrs = catalog_attributes(ds.catalog, seq.item_vocab)
    return _movielens("ml-100k", seq.items, level[seq.event_types], seq.timestamps, seq.offsets, seq.item_vocab, attrs)


def load_ml1m_ratings(max_users: int | None = None, root: Path | None = None) -> ActionSequences:
    """ML-1M users 1-2999 with ratings and timestamps (ml-1m/original/ratings.dat.rows_1-487650.gz).

    Only those users' ratings exist with timestamps (see the data README). max_users keeps users 1..max_users.
    """
    root = root or data_dir()
    path = root / "ml-1m/original/ratings.dat.rows_1-487650.gz"
    if not path.exists():
        raise FileNotFoundError(f"ml-1m ratings need {path}; set GENREC_DATA_DIR to the folder that holds ml-1m/")
    with gzip.open(path, "rt", encoding="latin-1") as f:
        text = f.read().replace("::", "\t")
    df = pl.read_csv(
        text.encode(), separator="\t", has_header=False, new_columns=["user", "movie", "rating", "timestamp"]
    )
    bad = df.filter(pl.any_horizontal(pl.all().is_null()) | ~pl.col("rating").is_between(1, 5))
    if bad.height:
        row = df.with_row_index().filter(pl.any_horizontal(pl.all().is_null()) | ~pl.col("rating").is_between(1, 5))
        raise ValueError(f"{path.name}, line {int(row['index'][0]) + 1}: missing field or rating outside 1..5")
    if max_users is not None:
        df = df.filter(pl.col("user") <= max_users)
    events = df.select(
        pl.col("user").cast(pl.Utf8).alias("user_id"),
        pl.col("movie").cast(pl.Utf8).alias("item_id"),
        pl.col("timestamp").cast(pl.Int64),
        pl.col("rating").cast(pl.Utf8).alias("event_type"),
    )
    items, actions, ts, offsets, vocab = _from_events(events, "ml-1m-ratings", _RATINGS)
    attrs = {}
    movies = root / "ml-1m/original/movies.dat"
    if movies.exists():
        parts = [ln.split("::") for ln in movies.read_bytes().decode("latin-1").splitlines() if ln]
        attrs["category"] = _codes([p[2].split("|")[0] for p in parts], vocab, [p[0] for p in parts])
    return _movielens("ml-1m-ratings", items, actions, ts, offsets, vocab, attrs)


def action_levels(event_types: pl.Series) -> dict[str, int]:
    """Event type -> action level 1..A, the most frequent type first (ties by name): in a shop's funnel views
    outnumber carts, which outnumber purchases, so a level says how far the user got."""
    counts = event_types.value_counts()
    order = sorted(
        zip(counts[event_types.name].to_list(), counts["count"].to_list(), strict=True), key=lambda x: (-x[1], x[0])
    )
    return {name: level for level, (name, _) in enumerate(order, start=1)}


def load_log(path: str | Path, read: ReadOptions | None = None) -> ActionSequences:
    """A user's event log with an event_type column as action sequences (tasks: one per event type)."""
    read = read or ReadOptions()
    path = Path(path)
    stats: dict = {}
    catalog = find_catalog(path, read)
    events = read_events(path, read, stats=stats, item_columns=catalog is None)
    if "event_type" not in events.columns:
        raise ValueError(
            f"{path.name}: generative ranking needs an event_type column (name yours with --columns event_type=NAME)"
        )
    levels = action_levels(events["event_type"])
    name = read.name or data_name(path)
    items, actions, ts, offsets, vocab = _from_events(events, name, levels)
    labels = np.zeros((len(levels) + 1, len(levels)), np.float32)
    for a in range(1, len(levels) + 1):
        labels[a, :a] = 1.0  # an action reaches its own level and every lower one
    cat = read_catalog(catalog, read) if catalog else stats.get("item_columns")  # the log's item columns
    return ActionSequences(
        name=name,
        items=items,
        actions=actions,
        timestamps=ts,
        offsets=offsets,
        item_vocab=vocab,
        action_names=list(levels),
        tasks=list(levels),
        task_labels=labels,
        negative_labels=np.zeros(len(levels), np.float32),
        item_attributes=catalog_attributes(cat, vocab) if cat is not None else {},
    )


def load_action_dataset(
    name: str, seed: int = 0, max_users: int | None = None, read: ReadOptions | None = None
) -> ActionSequences:
    """synthetic[:SIZE] | ml-100k | ml-1m (ratings of users 1-2999) | PATH (a log with event types, read with
    `read`); max_users keeps a random user subset."""
    if name == "synthetic" or name.startswith("synthetic:"):
        data = load_shop(name.partition(":")[2] or "small", seed)
    elif name == "ml-100k":
        data = load_ml100k()
    elif name == "ml-1m":
        data = load_ml1m_ratings()
    elif Path(name).is_file() or "/" in name or "." in Path(name).name:
        data = load_log(name, read)  # a missing file: DataError "file not found: PATH"
    else:
        raise ValueError(
            f"unknown action dataset {name!r}: use synthetic[:SIZE], ml-100k, ml-1m or a path to an event log"
        )
    if max_users is not None and max_users < data.num_users:
        users = np.sort(np.random.default_rng(seed).choice(data.num_users, max_users, replace=False))
        data = data.subset_users(users)
    return data
