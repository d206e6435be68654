"""Request state shared by every pipeline stage, offline and online: one request = one RequestContext.

    hist = History(items, timestamps, purchased, type_codes, num_dataset=...)   # model item indices
    ctx = RequestContext(user_id, user_index, k, hist, allowed, context, request_time)
    cands = stage(ctx, cands)                                                 # the Stage protocol

A stage reads the request (history, hard-constraint mask, context) and the candidates so far, and returns the
new candidates, best first. Stages that can score many requests at once also offer
`batch(ctxs, cands) -> list[Candidates]` with the same results; the offline runner uses it, a served request
calls the stage itself. Retrieval stages leave their query and list in `ctx.retrieved` (the ranker's
retrieval features read them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from genrec.data.sequences import PAD, Vocab


class RequestError(ValueError):
    """Bad request content that validation could not catch (unknown category, ...): becomes a 422."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


@dataclass
class Boost:
    """Add `weight` to the score of items whose catalog `field` equals `value` (item_id works as a field)."""

    field: str
    value: str
    weight: float


@dataclass
class RerankRules:
    exclude_seen: bool = True  # drop every item in the user's history
    exclude_purchased: bool = True  # drop purchased items even when exclude_seen is off
    exclude_out_of_stock: bool = True  # catalog column in_stock == false
    max_per_category: int | None = None  # at most this many items of one category, while other items remain
    boosts: list[Boost] = field(default_factory=list)
    purchase_types: list[str] = field(default_factory=lambda: ["purchase"])  # event types that mean "bought"


# ---------------------------------------------------------------------------------------------------
# request state
# ---------------------------------------------------------------------------------------------------


@dataclass
class History:
    """One user's history in model indices: dataset part (oldest) then live store events.

    items: (N,) int64 model indices, PAD for items the model does not know (kept for display only)
    timestamps: (N,) int64 unix seconds, made non-decreasing (live clocks may disagree with the dataset)
    purchased: (N,) bool
    type_codes: (N,) int64 event type, 1-based into the pipeline's event vocabulary; 0 = none, or a type the
        vocabulary lacks (a live event's new type): the model's reserved "action unknown" input
    """

    items: np.ndarray
    timestamps: np.ndarray
    purchased: np.ndarray
    type_codes: np.ndarray
    num_dataset: int  # the first num_dataset entries come from the pipeline's dataset
    raw_items: list[str] = field(default_factory=list)  # the three display lists: history(..., details=True)
    event_types: list[str] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)

    def model_tokens(self, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Known items with consecutive repeats collapsed as in training (a run of one item becomes one token
        with the run's first time and its last event type): items, timestamps, type codes, each (n,), n <= max_len."""
        known = self.items != PAD
        items, ts, codes = self.items[known], self.timestamps[known], self.type_codes[known]
        if len(items):
            start = np.ones(len(items), bool)
            start[1:] = items[1:] != items[:-1]
            last = np.append(np.flatnonzero(start)[1:] - 1, len(items) - 1)
            items, ts, codes = items[start], ts[start], codes[last]
        return items[-max_len:], ts[-max_len:], codes[-max_len:]

    @property
    def known(self) -> np.ndarray:
        """(n,) the items the model knows, oldest first (what the ranking features read)."""
        return self.items[self.items != PAD]


@dataclass
class Candidates:
    """Candidate items of one request, best first: model indices, scores, and the stage that produced each."""

    items: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (C,)
    scores: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (C,)
    stages: list[str] = field(default_factory=list)  # (C,) stage names
    tiers: list[int] = field(default_factory=list)  # (C,) earlier generator stage ranks first

    def __len__(self) -> int:
        return len(self.stages)

    def extend(self, items: torch.Tensor, scores: torch.Tensor, stage: str, tier: int) -> Candidates:
        return Candidates(
            torch.cat([self.items, items]),
            torch.cat([self.scores, scores.float()]),
            self.stages + [stage] * len(items),
            self.tiers + [tier] * len(items),
        )

    def select(self, order: list[int] | np.ndarray | torch.Tensor) -> Candidates:
        idx = torch.as_tensor(np.asarray(order, np.int64) if not isinstance(order, torch.Tensor) else order)
        pos = idx.tolist()
        return Candidates(
            self.items[idx], self.scores[idx], [self.stages[i] for i in pos], [self.tiers[i] for i in pos]
        )


@dataclass
class Filters:
    categories: list[str] | None = None
    price_min: float | None = None
    price_max: float | None = None


@dataclass
class Retrieved:
    """What one retrieval stage found for a request: the ranker reads its scores and ranks as features."""

    query: torch.Tensor  # (d,) the request's query vector
    table: torch.Tensor  # (num_items + 1, d) the retriever's item table: score(i) = query @ table[i]
    items: np.ndarray  # (<= k,) its own list, best first
    k: int
    scores: torch.Tensor | None = None  # (num_items + 1,) query @ table.T when exact search made it (a gather
    # of it is cheaper than the ranker's per-candidate dot products)


@dataclass
class RequestContext:
    user_id: str
    user_index: int  # 0-based index into the pipeline's dataset users, -1 for a user it does not know
    k: int
    history: History
    allowed: torch.Tensor  # (num_items + 1,) bool: items any stage may return
    context: dict[str, Any] = field(default_factory=dict)
    request_time: int = 0  # unix seconds: the hour / weekday features of a ranker
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    context_used: list[str] = field(default_factory=list)
    retrieved: dict[str, Retrieved] = field(default_factory=dict)  # retrieval stage name -> its output

    @property
    def known_user(self) -> bool:
        return self.user_index >= 0

    @property
    def cold_start(self) -> bool:
        return not bool((self.history.items != PAD).any())


class Stage(Protocol):
    name: str

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates: ...


def run_batch(stage: Stage, ctxs: list[RequestContext], cands: list[Candidates]) -> list[Candidates]:
    """A stage over many requests: its batch() when it has one, else one call per request."""
    batch = getattr(stage, "batch", None)
    if batch is not None:
        return batch(ctxs, cands)
    return [stage(c, x) for c, x in zip(ctxs, cands, strict=True)]


# ---------------------------------------------------------------------------------------------------
# catalog
# ---------------------------------------------------------------------------------------------------


class Catalog:
    """Catalog columns aligned to model item indices (row 0 = padding), plus raw rows for /v1/items.

    category: (num_items + 1,) code into category_names, -1 = none (never capped). `category` may be given
    instead of read from the catalog (e.g. the feature tables' first genre of ML-1M): then the names are
    the codes as text.
    """

    def __init__(self, df: pl.DataFrame | None, vocab: Vocab, category: np.ndarray | None = None) -> None:
        n = len(vocab) + 1
        self.df = df
        self.row_of: dict[str, int] = {}
        self.category_names: list[str] = []
        self.category = np.full(n, -1, np.int64)
        self.price = np.full(n, np.nan)
        self.in_stock = np.ones(n, bool)
        self.has_price = df is not None and "price" in df.columns
        self._columns: dict[str, np.ndarray] = {}
        self._idx, self._known = np.zeros(0, np.int64), np.zeros(0, bool)
        if df is not None:
            ids = df["item_id"].cast(pl.Utf8).to_list()
            self.row_of = {r: i for i, r in enumerate(ids)}
            idx = np.array([vocab.index(r) for r in ids], np.int64)
            known = idx != PAD
            if "category" in df.columns:
                cats = df["category"].cast(pl.Utf8).fill_null("").to_list()
                self.category_names = sorted({c for c in cats if c})
                code = {c: i for i, c in enumerate(self.category_names)}
                self.category[idx[known]] = np.array([code.get(c, -1) for c in cats], np.int64)[known]
            if self.has_price:
                price = df["price"].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
                self.price[idx[known]] = price[known]
            if "in_stock" in df.columns:
                stock = df["in_stock"].cast(pl.Boolean, strict=False).fill_null(True).to_numpy()
                self.in_stock[idx[known]] = stock[known]
            self._idx, self._known = idx, known
        if category is not None:
            if len(category) != n:
                raise ValueError(f"category: {len(category)} values for {n} item rows")
            self.category = np.asarray(category, np.int64)
            self.category_names = [str(c) for c in range(int(self.category.max(initial=-1)) + 1)]

    def column(self, name: str, vocab: Vocab) -> np.ndarray:
        """A catalog column as strings aligned to model indices ("" where missing); item_id works too."""
        if name not in self._columns:
            out = np.full(len(vocab) + 1, "", dtype=object)
            if name == "item_id":
                out[1:] = vocab.ids
            elif name == "category" and (self.df is None or "category" not in self.df.columns):
                out[:] = [self.category_names[c] if c >= 0 else "" for c in self.category]
            elif self.df is not None and name in self.df.columns:
                vals = np.array(self.df[name].cast(pl.Utf8, strict=False).fill_null("").to_list(), dtype=object)
                out[self._idx[self._known]] = vals[self._known]
            self._columns[name] = out
        return self._columns[name]

    def row(self, item_id: str) -> dict[str, Any] | None:
        if self.df is None or item_id not in self.row_of:
            return None
        row = self.df.row(self.row_of[item_id], named=True)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
