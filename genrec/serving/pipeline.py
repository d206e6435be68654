"""The multi-stage recommendation pipeline served by the API, and the model bundle it runs on.

    bundle = ServingModel.load("runs/ml1m-hstu", config)     # model, vocab, catalog, dataset history
    ctx = bundle.context(user_id, k=10, live=store.history(user_id, 1000), filters=..., ...)
    result = bundle.run(ctx)                                  # candidates + per-stage timings

A request flows through `bundle.stages`, a list of callables `stage(ctx, candidates) -> candidates`
built from the config's [[stages]] list (default: retrieval -> popular -> rerank):

    retrieval  the sequence model (HSTU / SASRec) reads the user's history (dataset + live events) and
               scores the whole catalog: exact matmul + top-k over the item table (an ANN index can
               replace it); hard constraints (seen, out of stock, request filters) are masked first.
    popular    backfill / cold start: context-aware popular items when retrieval produced too few.
    rerank     config rules: boosts, per-category cap, re-check of exclusions, truncation to k.

A ranker (DLRM, W&D, an HSTU ranking head) plugs in as one more entry: {name = "ranker",
factory = "package.module:make_stage", ...options} where make_stage(bundle, **options) returns an
object with a `name` and `__call__(ctx, cands) -> cands`; it rescores ctx's candidates and labels them
with its name. Each stage's name keys its latency histogram and the `stage` field of returned items.
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch

from genrec.data.sequences import PAD, SequenceData, Vocab
from genrec.serving.config import RerankRules, ServeConfig
from genrec.serving.recommender import Recommender
from genrec.serving.store import StoredEvent


class RequestError(ValueError):
    """Bad request content that validation could not catch (unknown category, ...): becomes a 422."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


# ---------------------------------------------------------------------------------------------------
# request state
# ---------------------------------------------------------------------------------------------------


@dataclass
class History:
    """One user's history in model indices: dataset part (oldest) then live store events.

    items: (N,) int64 model indices, PAD for items the model does not know (kept for display only)
    timestamps: (N,) int64 unix seconds, made non-decreasing (live clocks may disagree with the dataset)
    purchased: (N,) bool
    """

    items: np.ndarray
    timestamps: np.ndarray
    purchased: np.ndarray
    num_dataset: int  # the first num_dataset entries come from the run's dataset
    raw_items: list[str]  # the three display lists are filled only by history(..., details=True)
    event_types: list[str]
    event_ids: list[str | None]

    def model_tokens(self, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Known items with consecutive repeats collapsed (as in training): (n,), (n,) with n <= max_len."""
        known = self.items != PAD
        items, ts = self.items[known], self.timestamps[known]
        if len(items):
            start = np.ones(len(items), bool)
            start[1:] = items[1:] != items[:-1]
            items, ts = items[start], ts[start]
        return items[-max_len:], ts[-max_len:]


@dataclass
class Candidates:
    """Candidate items of one request: model indices, scores, and the stage that produced each."""

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

    def select(self, order: list[int] | torch.Tensor) -> Candidates:
        idx = torch.as_tensor(order, dtype=torch.long)
        return Candidates(
            self.items[idx],
            self.scores[idx],
            [self.stages[i] for i in idx.tolist()],
            [self.tiers[i] for i in idx.tolist()],
        )


@dataclass
class Filters:
    categories: list[str] | None = None
    price_min: float | None = None
    price_max: float | None = None


@dataclass
class RequestContext:
    user_id: str
    k: int
    history: History
    allowed: torch.Tensor  # (num_items + 1,) bool: items any stage may return
    context: dict[str, Any]
    tokens: np.ndarray  # (n,) model input items
    token_times: np.ndarray | None  # (n,) or None when the model was trained without timestamps
    known_user: bool  # in the run's dataset
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    context_used: list[str] = field(default_factory=list)

    @property
    def cold_start(self) -> bool:
        return len(self.tokens) == 0


class Stage(Protocol):
    name: str

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates: ...


StageFactory = Callable[..., Stage]  # factory(bundle, **options) -> Stage


# ---------------------------------------------------------------------------------------------------
# catalog and dataset side data
# ---------------------------------------------------------------------------------------------------


class Catalog:
    """Catalog columns aligned to model item indices (row 0 = padding), plus raw rows for /v1/items."""

    def __init__(self, df: pl.DataFrame | None, vocab: Vocab) -> None:
        n = len(vocab) + 1
        self.df = df
        self.row_of: dict[str, int] = {}
        self.category_names: list[str] = []
        self.category = np.full(n, -1, np.int64)  # code into category_names, -1 = none
        self.price = np.full(n, np.nan)
        self.in_stock = np.ones(n, bool)
        self.has_price = df is not None and "price" in df.columns
        self._columns: dict[str, np.ndarray] = {}
        if df is None:
            return
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
            self.price[idx[known]] = df["price"].cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()[known]
        if "in_stock" in df.columns:
            self.in_stock[idx[known]] = df["in_stock"].cast(pl.Boolean, strict=False).fill_null(True).to_numpy()[known]
        self._idx, self._known = idx, known

    def column(self, name: str, vocab: Vocab) -> np.ndarray:
        """A catalog column as strings aligned to model indices ("" where missing); item_id works too."""
        if name not in self._columns:
            out = np.full(len(vocab) + 1, "", dtype=object)
            if name == "item_id":
                out[1:] = vocab.ids
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


_DATASETS: dict[tuple[str, int, str], Any] = {}  # (name, seed, reading options) -> Dataset: reloads are fast


def _load_dataset(name: str, seed: int, read: dict | None = None) -> Any:
    from genrec.data.datasets import load_dataset
    from genrec.data.io import ReadOptions

    key = (name, seed, json.dumps(read or {}, sort_keys=True))
    if key not in _DATASETS:
        _DATASETS.clear()  # keep one dataset in memory
        _DATASETS[key] = load_dataset(name, seed=seed, read=ReadOptions.from_dict(read))
    return _DATASETS[key]


def _remap(seq: SequenceData, vocab: Vocab) -> np.ndarray:
    """Dataset item indices -> the run's item indices (identical unless the data changed since training)."""
    if seq.item_vocab.ids == vocab.ids:
        return seq.items
    table = np.array([PAD] + [vocab.index(r) for r in seq.item_vocab.ids], np.int64)
    return table[seq.items]


# ---------------------------------------------------------------------------------------------------
# the model bundle
# ---------------------------------------------------------------------------------------------------


class ServingModel:
    """Everything one run serves with; immutable once built, so a reload swaps one reference."""

    def __init__(
        self,
        run_dir: Path,
        recommender: Recommender,
        meta: dict[str, Any],
        config: ServeConfig,
        dataset: Any | None,
    ) -> None:
        self.run_dir = run_dir
        self.rec = recommender
        self.meta = meta
        self.config = config
        self.rules: RerankRules = config.rules
        self.vocab = recommender.item_vocab
        self.num_items = len(self.vocab)
        self.max_len = recommender.model.config.max_len
        self.uses_timestamps = bool(meta.get("dataset", {}).get("has_timestamps"))
        self.loaded_at = time.time()
        seq: SequenceData | None = dataset.sequences if dataset is not None else None
        self.catalog = Catalog(dataset.catalog if dataset is not None else None, self.vocab)
        self.purchase_types = set(self.rules.purchase_types)

        # dataset history of known users, jagged, in model indices
        n = self.num_items + 1
        if seq is not None:
            self.users: Vocab = seq.user_vocab
            self.hist_items = _remap(seq, self.vocab)
            self.hist_offsets = seq.offsets
            self.hist_times = seq.timestamps if seq.timestamps is not None else np.zeros(len(seq.items), np.int64)
            if seq.event_types is not None and seq.event_vocab is not None:
                bought = np.array([False] + [t in self.purchase_types for t in seq.event_vocab.ids])
                self.hist_purchased = bought[seq.event_types]
                self.hist_types: list[str] | None = seq.event_vocab.ids
                self.hist_type_codes = seq.event_types
            else:
                self.hist_purchased = np.zeros(len(seq.items), bool)
                self.hist_types = None
            self.popularity = np.bincount(self.hist_items, minlength=n).astype(np.float64)
        else:
            self.users = Vocab([])
            self.hist_items = np.zeros(0, np.int64)
            self.hist_offsets = np.zeros(1, np.int64)
            self.hist_times = np.zeros(0, np.int64)
            self.hist_purchased = np.zeros(0, bool)
            self.hist_types = None
            self.popularity = np.zeros(n)
        self.popularity[PAD] = 0
        self.group_popularity = self._group_popularity(dataset)
        self.base_mask = torch.ones(n, dtype=torch.bool)
        self.base_mask[PAD] = False
        if self.rules.exclude_out_of_stock:
            self.base_mask &= torch.from_numpy(self.catalog.in_stock)
        self._category = torch.from_numpy(self.catalog.category)
        self._price = torch.from_numpy(self.catalog.price)
        self.stages = build_stages(self, config.stages)

    def _group_popularity(self, dataset: Any | None) -> dict[tuple[str, str], np.ndarray]:
        """(user attribute, value) -> item counts among users with that value: context-aware cold start."""
        out: dict[tuple[str, str], np.ndarray] = {}
        users = getattr(dataset, "users", None)
        if users is None or "user_id" not in users.columns or not len(self.hist_items):
            return out
        n = self.num_items + 1
        row = {u: i for i, u in enumerate(users["user_id"].cast(pl.Utf8).to_list())}
        user_row = np.array([row.get(u, -1) for u in self.users.ids], np.int64)
        event_row = np.repeat(user_row, np.diff(self.hist_offsets))
        for col in users.columns:
            if col == "user_id":
                continue
            values = users[col].cast(pl.Utf8, strict=False).fill_null("").to_list()
            names = sorted(set(values) - {""})
            if not 1 < len(names) <= 64:  # ids or constants are no context
                continue
            code = np.array([names.index(v) if v else -1 for v in values] + [-1], np.int64)  # [-1]: no row
            ev_code = code[event_row]
            ok = ev_code >= 0
            counts = np.bincount(ev_code[ok] * n + self.hist_items[ok], minlength=len(names) * n).reshape(-1, n)
            for j, name in enumerate(names):
                out[(col, name)] = counts[j].astype(np.float64)
        return out

    @classmethod
    def load(cls, run_dir: str | Path, config: ServeConfig) -> ServingModel:
        from genrec.data.sequences import load_vocabs
        from genrec.training.trainer import load_run

        run_dir = Path(run_dir)
        model, meta = load_run(run_dir)
        items, users, _ = load_vocabs(run_dir)
        dataset = None
        if config.dataset_history:
            train = meta.get("train", {})
            try:
                dataset = _load_dataset(train.get("dataset", ""), int(train.get("seed", 0)), train.get("read"))
            except (FileNotFoundError, ValueError) as e:
                raise FileNotFoundError(
                    f"{e} (the run's dataset seeds known users' history; or set dataset_history = false)"
                ) from None
        bundle = cls(run_dir, Recommender(model, items, users), meta, config, dataset)
        bundle.warmup()
        return bundle

    def warmup(self) -> None:
        """One forward pass so the first request does not pay for lazy initialisation."""
        items = torch.tensor([1] * min(4, self.max_len), dtype=torch.long)
        self.rec.scores(items, torch.zeros(len(items), dtype=torch.long) if self.uses_timestamps else None)

    # ---- per request ----
    def user_index(self, user_id: str) -> int:
        """0-based dataset user index, -1 if the dataset does not know the user."""
        return self.users.index(user_id) - 1

    def history(self, user_id: str, live: list[StoredEvent], details: bool = False) -> History:
        """Dataset + live history. details=False skips the per-event raw ids and types (display only), which
        cost a Python loop over a long dataset history on every recommendation."""
        u = self.user_index(user_id)
        raw: list[str] = []
        types: list[str] = []
        if u >= 0:
            a, b = int(self.hist_offsets[u]), int(self.hist_offsets[u + 1])
            items, times, bought = self.hist_items[a:b], self.hist_times[a:b], self.hist_purchased[a:b]
            if details:
                raw = [self.vocab.raw(int(i)) if i != PAD else "" for i in items]
                types = (
                    [self.hist_types[int(c) - 1] for c in self.hist_type_codes[a:b]]
                    if self.hist_types is not None
                    else ["interaction"] * (b - a)
                )
        else:
            items, times, bought = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
            raw, types = [], []
        live = sorted(live, key=lambda e: (e.timestamp, e.seq))
        l_items = np.array([self.vocab.index(e.item_id) for e in live], np.int64)
        l_times = np.array([e.timestamp for e in live], np.int64)
        l_bought = np.array([e.event_type in self.purchase_types for e in live], bool)
        all_times = np.concatenate([times, l_times])
        if len(all_times):
            all_times = np.maximum.accumulate(all_times)
        return History(
            items=np.concatenate([items, l_items]),
            timestamps=all_times,
            purchased=np.concatenate([bought, l_bought]),
            num_dataset=len(items),
            raw_items=raw + [e.item_id for e in live] if details else [],
            event_types=types + [e.event_type for e in live] if details else [],
            event_ids=[None] * len(items) + [e.event_id for e in live] if details else [],
        )

    def context(
        self,
        user_id: str,
        k: int,
        live: list[StoredEvent],
        context: dict[str, Any] | None = None,
        exclude: list[str] | None = None,
        filters: Filters | None = None,
    ) -> RequestContext:
        hist = self.history(user_id, live)
        allowed = self.allowed_mask(hist, exclude or [], filters or Filters())
        tokens, times = hist.model_tokens(self.max_len)
        return RequestContext(
            user_id=user_id,
            k=k,
            history=hist,
            allowed=allowed,
            context=dict(context or {}),
            tokens=tokens,
            token_times=times if self.uses_timestamps else None,
            known_user=self.user_index(user_id) >= 0,
        )

    def allowed_mask(self, hist: History, exclude: list[str], f: Filters) -> torch.Tensor:
        """(num_items + 1,) bool: the hard constraints every stage respects."""
        mask = self.base_mask.clone()
        banned = hist.items[hist.purchased] if self.rules.exclude_purchased else np.zeros(0, np.int64)
        if self.rules.exclude_seen:
            banned = hist.items
        ex = [self.vocab.index(x) for x in exclude]
        banned = np.concatenate([banned, np.array(ex, np.int64)])
        if len(banned):
            mask[torch.from_numpy(banned)] = False
        if f.categories is not None:
            names = self.catalog.category_names
            unknown = [c for c in f.categories if c not in names]
            if not names:
                raise RequestError("filters.category", "the catalog of this run has no categories")
            if unknown:
                raise RequestError("filters.category", f"unknown category {unknown[0]!r}")
            codes = torch.tensor([names.index(c) for c in f.categories])
            mask &= torch.isin(self._category, codes)
        if f.price_min is not None or f.price_max is not None:
            if not self.catalog.has_price:
                raise RequestError("filters.price_min" if f.price_min is not None else "filters.price_max", "the catalog of this run has no price column")  # fmt: skip
            if f.price_min is not None:
                mask &= self._price >= f.price_min  # NaN prices compare False: unknown price is filtered out
            if f.price_max is not None:
                mask &= self._price <= f.price_max
        mask[PAD] = False
        return mask

    def run(self, ctx: RequestContext) -> Candidates:
        """All stages in order; per-stage seconds land in ctx.timings."""
        cands = Candidates()
        for stage in self.stages:
            t0 = time.perf_counter()
            cands = stage(ctx, cands)
            ctx.timings[stage.name] = ctx.timings.get(stage.name, 0.0) + time.perf_counter() - t0
        return cands

    def describe(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model": self.meta.get("train", {}).get("model"),
            "dataset": self.meta.get("train", {}).get("dataset"),
            "num_items": self.num_items,
            "num_users": len(self.users),
            "max_len": self.max_len,
            "stages": [s.name for s in self.stages],
            "loaded_at": self.loaded_at,
        }


# ---------------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------------


class Retrieval:
    """Sequence-model candidates: exact scores over the whole item table, hard constraints masked, top-N."""

    name = "retrieval"

    def __init__(self, bundle: ServingModel, num_candidates: int = 300, tier: int = 0) -> None:
        self.bundle, self.num_candidates, self.tier = bundle, int(num_candidates), tier

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        if ctx.cold_start:
            return cands
        items = torch.from_numpy(ctx.tokens)
        ts = torch.from_numpy(ctx.token_times) if ctx.token_times is not None else None
        scores = self.bundle.rec.scores(items, ts)
        scores = scores.masked_fill(~ctx.allowed, float("-inf"))
        n = min(max(self.num_candidates, ctx.k), int(ctx.allowed.sum()))
        if n == 0:
            return cands
        top = torch.topk(scores, n)
        return cands.extend(top.indices, top.values, self.name, self.tier)


class Popular:
    """Cold start and backfill: popular items, from the users who share the request's context when known.

    context keys that match a user attribute of the dataset (e.g. region, age_group) switch to that group's
    popularity; `category` puts that category's items first. Fills up to fill_factor * k candidates.
    """

    name = "popular"

    def __init__(self, bundle: ServingModel, fill_factor: int = 3, tier: int = 1) -> None:
        self.bundle, self.fill_factor, self.tier = bundle, int(fill_factor), tier
        self.log_pop = torch.from_numpy(np.log1p(bundle.popularity)).float()

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        want = ctx.k * self.fill_factor - len(cands)
        if want <= 0:
            return cands
        b = self.bundle
        score = self.log_pop.clone()
        groups = []
        for key, value in ctx.context.items():
            counts = b.group_popularity.get((str(key), str(value)))
            if counts is not None:
                groups.append(torch.from_numpy(np.log1p(counts)).float())
                ctx.context_used.append(str(key))
        if groups:
            score = torch.stack(groups).mean(0) + 1e-3 * score  # group popularity, global breaks ties
        cat = ctx.context.get("category")
        if isinstance(cat, str) and cat in b.catalog.category_names:
            score = score + 1e3 * (b._category == b.catalog.category_names.index(cat)).float()
            ctx.context_used.append("category")
        allowed = ctx.allowed.clone()
        if len(cands):
            allowed[cands.items] = False
        n = min(want, int(allowed.sum()))
        if n == 0:
            return cands
        top = torch.topk(score.masked_fill(~allowed, float("-inf")), n)
        return cands.extend(top.indices, top.values, self.name, self.tier)


class Rerank:
    """Config rules: re-check hard constraints, add boosts, order by (tier, score), cap per category, cut to k."""

    name = "rerank"

    def __init__(self, bundle: ServingModel) -> None:
        self.bundle = bundle
        rules = bundle.rules
        self.boost = torch.zeros(bundle.num_items + 1)
        for b in rules.boosts:
            col = bundle.catalog.column(b.field, bundle.vocab)
            self.boost[torch.from_numpy(col == str(b.value))] += float(b.weight)
        self.cap = rules.max_per_category

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        if not len(cands):
            return cands
        keep = ctx.allowed[cands.items].numpy()
        scores = cands.scores + self.boost[cands.items]
        s, tiers = scores.numpy(), np.asarray(cands.tiers)
        idx = np.flatnonzero(keep)
        order = idx[np.lexsort((-s[idx], tiers[idx]))]  # primary key last: tier, then score descending
        if self.cap is None:
            order = order[: ctx.k]
        else:
            cats = self.bundle.catalog.category[cands.items.numpy()[order]]
            used: dict[int, int] = {}
            picked = []
            for i, c in zip(order.tolist(), cats.tolist(), strict=True):
                if c >= 0:  # items without a category are never capped
                    if used.get(c, 0) >= self.cap:
                        continue
                    used[c] = used.get(c, 0) + 1
                picked.append(i)
                if len(picked) == ctx.k:
                    break
            order = np.array(picked, np.int64)
        out = cands.select(torch.from_numpy(order))
        out.scores = scores[torch.from_numpy(order)]
        return out


STAGES: dict[str, StageFactory] = {"retrieval": Retrieval, "popular": Popular, "rerank": Rerank}


def register_stage(name: str, factory: StageFactory) -> None:
    """Make `name` usable in the config's [[stages]] list (e.g. a DLRM ranker from another package)."""
    STAGES[name] = factory


def build_stages(bundle: ServingModel, specs: list[dict[str, Any]]) -> list[Stage]:
    stages: list[Stage] = []
    for i, spec in enumerate(specs):
        opts = dict(spec)
        name = opts.pop("name")
        target = opts.pop("factory", None)
        if target is not None:
            module, _, attr = str(target).partition(":")
            try:
                factory = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ValueError(f"stages[{i}] ({name}): cannot import factory {target!r}: {e}") from None
        elif name in STAGES:
            factory = STAGES[name]
        else:
            raise ValueError(f"stages[{i}]: unknown stage {name!r}; known: {', '.join(STAGES)} (or give a factory)")
        try:
            stage = factory(bundle, **opts)
        except TypeError as e:
            raise ValueError(f"stages[{i}] ({name}): {e}") from None
        if getattr(stage, "name", None) != name:
            stage.name = name  # the config's name labels metrics and items
        stages.append(stage)
    return stages
