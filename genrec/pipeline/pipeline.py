"""The Pipeline (shared resources + the stage list) and the offline runner that evaluates it.

    pipe = Pipeline.from_parts(sequences, components={"hstu": model, "two-tower": parts, "wide-deep": ranker},
                               specs=[{"stage": "retrieve", "component": "hstu", "k": 200}, ...])
    ctx = pipe.context(user_id, k=10, live=store_events)          # online: dataset history + live events
    cands = pipe.run(ctx)                                          # per-stage seconds in ctx.timings
    records = evaluate(pipe, "test", max_users=1000)               # offline: the SAME stage objects

Stage specs (a bundle's manifest["pipeline"], in order; "stage" picks the class, "component" a loaded part):
    {"stage": "retrieve", "component": "hstu", "k": 200, "index": "exact" | "faiss" | "auto"}
    {"stage": "retrieve", "component": "two-tower", "k": 200, "index": "auto"}  # auto: exact up to 65,536
                                                                    # items, else its faiss index
    {"stage": "popular", "fill_factor": 3}
    {"stage": "rank", "component": "wide-deep"}                      # dlrm | wide-deep | lr | hstu-ranker
    {"stage": "rerank", "exclude_seen": true, "exclude_out_of_stock": true, "max_per_category": 3,
     "boosts": [{"field": "category", "value": "c3", "weight": 0.5}]}
Optional "name" labels a stage's latency metric and its items' `stage` field (default: the component's name,
or popular / rerank). The rerank spec's rule keys are the pipeline's hard constraints, which every stage
respects (ctx.allowed). The serving config's older form {"name": "retrieval" | "popular" | "rerank" |
..., "factory": "pkg.module:make_stage"} is accepted too (a factory is called as factory(pipeline, **options)).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
import polars as pl
import torch

from genrec.data.sequences import PAD, SequenceData, Split, Vocab, leave_one_out
from genrec.evaluation.metrics import metrics_from_ranks
from genrec.pipeline.core import (
    Boost,
    Candidates,
    Catalog,
    Filters,
    History,
    RequestContext,
    RequestError,
    RerankRules,
    Stage,
    run_batch,
)
from genrec.pipeline.stages import (
    CTRRank,
    HSTURank,
    Popular,
    Ranker,
    Rerank,
    SequenceRetrieve,
    TwoTowerParts,
    TwoTowerRetrieve,
    dataset_contexts,
)

STAGE_KIND = {"retrieve": "retrieval", "popular": "retrieval", "rank": "ranking", "rerank": "rerank"}
RULE_KEYS = {f.name for f in fields(RerankRules)}


class Pipeline:
    """Everything a request needs besides itself: vocabularies, catalog, dataset histories, popularity, the
    hard-constraint rules and the stage objects. Immutable once built, so a reload swaps one reference."""

    def __init__(
        self,
        vocab: Vocab,
        sequences: SequenceData | None,
        components: dict[str, Any],
        specs: list[dict[str, Any]],
        catalog: pl.DataFrame | None = None,
        users: pl.DataFrame | None = None,
        rules: RerankRules | None = None,
        category: np.ndarray | None = None,
        uses_timestamps: bool | None = None,
        name: str = "pipeline",
    ) -> None:
        self.name = name
        self.vocab = vocab
        self.num_items = len(vocab)
        self.sequences = sequences
        self.components = components
        self.specs = [dict(s) for s in specs]
        self.rules = rules if rules is not None else rules_from_specs(self.specs)
        self.purchase_types = set(self.rules.purchase_types)
        self.catalog = Catalog(catalog, vocab, category)
        self.uses_timestamps = (sequences is not None and sequences.timestamps is not None) if uses_timestamps is None else uses_timestamps  # fmt: skip
        self.loaded_at = time.time()
        n = self.num_items + 1
        seq = sequences
        self.event_vocab: Vocab | None = seq.event_vocab if seq is not None else None
        if seq is not None:
            self.users: Vocab = seq.user_vocab
            self.hist_items = _remap(seq, vocab)
            self.hist_offsets = seq.offsets
            self.hist_times = seq.timestamps if seq.timestamps is not None else np.zeros(len(seq.items), np.int64)
            self.hist_codes = seq.event_types if seq.event_types is not None else np.zeros(len(seq.items), np.int64)
            self.hist_types: list[str] | None = seq.event_vocab.ids if seq.event_vocab is not None else None
            bought = np.array([False] + [t in self.purchase_types for t in (self.hist_types or [])])
            self.hist_purchased = bought[self.hist_codes]
            self.popularity = np.bincount(self.hist_items, minlength=n).astype(np.float64)
        else:
            self.users = Vocab([])
            self.hist_items = np.zeros(0, np.int64)
            self.hist_offsets = np.zeros(1, np.int64)
            self.hist_times = np.zeros(0, np.int64)
            self.hist_codes = np.zeros(0, np.int64)
            self.hist_types = None
            self.hist_purchased = np.zeros(0, bool)
            self.popularity = np.zeros(n)
        self.popularity[PAD] = 0
        self.group_popularity = self._group_popularity(users)
        self.base_mask = torch.ones(n, dtype=torch.bool)
        self.base_mask[PAD] = False
        if self.rules.exclude_out_of_stock:
            self.base_mask &= torch.from_numpy(self.catalog.in_stock)
        self._category = torch.from_numpy(self.catalog.category)
        self._price = torch.from_numpy(self.catalog.price)
        self.stages: list[Stage] = build_stages(self, self.specs)
        self.stage_specs = list(self.specs)

    @classmethod
    def from_parts(cls, sequences: SequenceData, components: dict[str, Any], specs: list[dict[str, Any]],
                   **kw: Any) -> Pipeline:  # fmt: skip
        """A pipeline on `sequences`' vocabularies and histories with already loaded components."""
        return cls(sequences.item_vocab, sequences, components, specs, **kw)

    @classmethod
    def from_bundle(cls, bundle: Any, specs: list[dict[str, Any]] | None = None) -> Pipeline:
        """The pipeline a genrec bundle declares (manifest["pipeline"], or `specs`), components loaded from it."""
        from genrec.pipeline.runs import bundle_pipeline

        return bundle_pipeline(bundle, specs)

    def _group_popularity(self, users: pl.DataFrame | None) -> dict[tuple[str, str], np.ndarray]:
        """(user attribute, value) -> item counts among users with that value: context-aware cold start."""
        out: dict[tuple[str, str], np.ndarray] = {}
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

    # ---- per request ----
    def user_index(self, user_id: str) -> int:
        """0-based dataset user index, -1 if the dataset does not know the user."""
        return self.users.index(user_id) - 1

    def history(self, user_id: str, live: list[Any], details: bool = False) -> History:
        """Dataset + live history (live: events with item_id, event_type, timestamp, seq, event_id).
        details=False skips the per-event raw ids and types (display only), a Python loop over the history."""
        u = self.user_index(user_id)
        raw: list[str] = []
        types: list[str] = []
        if u >= 0:
            a, b = int(self.hist_offsets[u]), int(self.hist_offsets[u + 1])
            items, times, bought = self.hist_items[a:b], self.hist_times[a:b], self.hist_purchased[a:b]
            codes = self.hist_codes[a:b]
            if details:
                raw = [self.vocab.raw(int(i)) if i != PAD else "" for i in items]
                types = [self.hist_types[int(c) - 1] for c in codes] if self.hist_types is not None else ["interaction"] * (b - a)  # fmt: skip
        else:
            items, times, bought, codes = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool),
                                           np.zeros(0, np.int64))  # fmt: skip
        live = sorted(live, key=lambda e: (e.timestamp, e.seq))
        ev = self.event_vocab
        l_items = np.array([self.vocab.index(e.item_id) for e in live], np.int64)
        l_times = np.array([e.timestamp for e in live], np.int64)
        l_bought = np.array([e.event_type in self.purchase_types for e in live], bool)
        l_codes = np.array([ev.index(e.event_type) if ev is not None else 0 for e in live], np.int64)
        all_times = np.concatenate([times, l_times])
        if len(all_times):
            all_times = np.maximum.accumulate(all_times)
        return History(
            items=np.concatenate([items, l_items]),
            timestamps=all_times,
            purchased=np.concatenate([bought, l_bought]),
            type_codes=np.concatenate([codes, l_codes]),
            num_dataset=len(items),
            raw_items=raw + [e.item_id for e in live] if details else [],
            event_types=types + [e.event_type for e in live] if details else [],
            event_ids=[None] * len(items) + [e.event_id for e in live] if details else [],
        )

    def context(
        self,
        user_id: str,
        k: int,
        live: list[Any],
        context: dict[str, Any] | None = None,
        exclude: list[str] | None = None,
        filters: Filters | None = None,
        request_time: int | None = None,
    ) -> RequestContext:
        """One served request. request_time: unix seconds for the rankers' time features; default now, or
        the request context's integer "timestamp" (replaying a past request)."""
        context = dict(context or {})
        if request_time is None:
            when = context.get("timestamp")
            request_time = int(when) if isinstance(when, int) and not isinstance(when, bool) else int(time.time())
        hist = self.history(user_id, live)
        return RequestContext(
            user_id=user_id,
            user_index=self.user_index(user_id),
            k=k,
            history=hist,
            allowed=self.allowed_mask(hist, exclude or [], filters or Filters()),
            context=context,
            request_time=request_time,
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
        return self.run_many([ctx])[0]

    def run_many(self, ctxs: list[RequestContext]) -> list[Candidates]:
        """All stages over requests served together: the final candidates (see run_batch)."""
        return self.run_batch(ctxs)[-1]

    def run_batch(self, ctxs: list[RequestContext]) -> list[list[Candidates]]:
        """All stages over many requests (batched where a stage allows): the candidates after each stage;
        each request's ctx.timings gets the seconds each stage took for the whole batch (what it waited)."""
        cands = [Candidates() for _ in ctxs]
        after = []
        for stage in self.stages:
            t0 = time.perf_counter()
            cands = run_batch(stage, ctxs, cands)
            dt = time.perf_counter() - t0
            for ctx in ctxs:
                ctx.timings[stage.name] = ctx.timings.get(stage.name, 0.0) + dt
            after.append(cands)
        return after

    def offline_contexts(self, data: SequenceData, users: np.ndarray, ends: np.ndarray, k: int = 10) -> list[RequestContext]:  # fmt: skip
        """Requests of dataset users with their histories cut at `ends` (exclusive), under this pipeline's rules."""
        ctxs = dataset_contexts(data, users, ends, k, self.base_mask.clone())
        bought = np.array([False] + [t in self.purchase_types for t in (self.hist_types or [])])
        for c in ctxs:
            c.history.purchased = bought[c.history.type_codes]
            c.allowed = self.allowed_mask(c.history, [], Filters())
        return ctxs

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_items": self.num_items,
            "num_users": len(self.users),
            "stages": [s.name for s in self.stages],
            "components": sorted(self.components),
            "loaded_at": self.loaded_at,
        }


def _remap(seq: SequenceData, vocab: Vocab) -> np.ndarray:
    """Dataset item indices -> the pipeline's item indices (identical unless the data changed since training)."""
    if seq.item_vocab.ids == vocab.ids:
        return seq.items
    table = np.array([PAD] + [vocab.index(r) for r in seq.item_vocab.ids], np.int64)
    return table[seq.items]


def rules_from_specs(specs: list[dict[str, Any]]) -> RerankRules:
    """The rerank spec's rule keys (the first rerank stage), defaults otherwise."""
    for s in specs:
        if s.get("stage") == "rerank":
            kw = {k: v for k, v in s.items() if k in RULE_KEYS}
            if "boosts" in kw:
                kw["boosts"] = [Boost(**b) if isinstance(b, dict) else b for b in kw["boosts"]]
            return RerankRules(**kw)
    return RerankRules()


# ---------------------------------------------------------------------------------------------------
# building stages from specs
# ---------------------------------------------------------------------------------------------------

StageFactory = Callable[..., Stage]  # factory(pipeline, **options) -> Stage


def _component(pipe: Pipeline, spec: dict[str, Any], want: tuple[type, ...] | None = None) -> tuple[str, Any]:
    name = spec.get("component")
    if name is None:  # the only component of the wanted kind
        fit = [n for n, c in pipe.components.items() if want is None or isinstance(c, want)]
        if len(fit) != 1:
            raise ValueError(f"needs a 'component' (one of {sorted(pipe.components)})")
        name = fit[0]
    if name not in pipe.components:
        raise ValueError(f"unknown component {name!r}; this pipeline has {sorted(pipe.components)}")
    return name, pipe.components[name]


def _retrieve(pipe: Pipeline, spec: dict[str, Any]) -> Stage:
    from genrec.models import SequentialModel

    opts = dict(spec)
    cname, comp = _component(pipe, opts, (SequentialModel, TwoTowerParts))
    name, k = opts.get("name", cname), opts.get("k", 200)
    if isinstance(comp, TwoTowerParts):
        return TwoTowerRetrieve(comp, k, name, opts.get("index", "auto"))
    if isinstance(comp, SequentialModel):
        return SequenceRetrieve(comp, k, name, opts.get("index", "exact"), pipe.uses_timestamps)
    raise ValueError(f"component {cname!r} ({type(comp).__name__}) cannot retrieve")


def _rank(pipe: Pipeline, spec: dict[str, Any]) -> Stage:
    cname, comp = _component(pipe, spec, (Ranker, tuple))
    name = spec.get("name", cname)
    if isinstance(comp, Ranker):
        return CTRRank(comp, name)
    if isinstance(comp, tuple):  # (HSTU ranker model, its meta)
        model, meta = comp
        return HSTURank(model, meta, pipe.vocab, pipe.event_vocab, sorted(pipe.purchase_types), spec.get("weights"), name)  # fmt: skip
    raise ValueError(f"component {cname!r} ({type(comp).__name__}) cannot rank")


def _popular(pipe: Pipeline, spec: dict[str, Any]) -> Stage:
    return Popular(pipe.popularity, pipe.group_popularity, pipe.catalog, spec.get("fill_factor", 3), spec.get("name", "popular"))  # fmt: skip


def _rerank(pipe: Pipeline, spec: dict[str, Any]) -> Stage:
    return Rerank(pipe.rules, pipe.catalog, pipe.vocab, spec.get("name", "rerank"))


SPEC_KEYS = {
    "retrieve": {"stage", "component", "k", "index", "name"},
    "rank": {"stage", "component", "name", "weights"},
    "popular": {"stage", "fill_factor", "name"},
    "rerank": {"stage", "name"} | RULE_KEYS,
}
STAGES: dict[str, Callable[[Pipeline, dict[str, Any]], Stage]] = {
    "retrieve": _retrieve, "rank": _rank, "popular": _popular, "rerank": _rerank,
}  # fmt: skip
LEGACY: dict[str, StageFactory] = {}  # serving config names: "retrieval", "popular", "rerank", register_stage()


def register_stage(name: str, factory: StageFactory) -> None:
    """Make {"name": name} usable in the serving config's [[stages]] list (factory(pipeline, **options))."""
    LEGACY[name] = factory


def _legacy(pipe: Pipeline, spec: dict[str, Any], i: int) -> Stage:
    opts = dict(spec)
    name = opts.pop("name")
    target = opts.pop("factory", None)
    if target is not None:
        module, _, attr = str(target).partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"stages[{i}] ({name}): cannot import factory {target!r}: {e}") from None
        stage = factory(pipe, **opts)
    elif name in LEGACY:
        stage = LEGACY[name](pipe, **opts)
    elif name == "retrieval":
        unknown = set(opts) - {"num_candidates", "index"}
        if unknown:
            raise TypeError(f"unexpected option(s) {sorted(unknown)}")
        stage = _retrieve(pipe, {"name": name, "k": opts.get("num_candidates", 300), "index": opts.get("index", "exact")})  # fmt: skip
    elif name == "popular":
        stage = Popular(pipe.popularity, pipe.group_popularity, pipe.catalog, **opts)
    elif name == "rerank":
        if opts:
            raise TypeError(f"unexpected option(s) {sorted(opts)} (rules live in the config's [rules])")
        stage = _rerank(pipe, {})
    else:
        known = ", ".join(["retrieval", "popular", "rerank", *LEGACY])
        raise ValueError(f"stages[{i}]: unknown stage {name!r}; known: {known} (or give a factory)")
    if getattr(stage, "name", None) != name:
        stage.name = name  # the config's name labels metrics and items
    return stage


def build_stages(pipe: Pipeline, specs: list[dict[str, Any]]) -> list[Stage]:
    stages: list[Stage] = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise ValueError(f"pipeline[{i}]: expected a table, got {spec!r}")
        try:
            if "stage" not in spec:
                if "name" not in spec:
                    raise ValueError("needs 'stage' (retrieve | popular | rank | rerank)")
                stages.append(_legacy(pipe, spec, i))
                continue
            kind = spec["stage"]
            if kind not in STAGES:
                raise ValueError(f"unknown stage {kind!r}; known: {', '.join(STAGES)}")
            unknown = sorted(set(spec) - SPEC_KEYS[kind])
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(SPEC_KEYS[kind]))}")
            stages.append(STAGES[kind](pipe, spec))
        except TypeError as e:
            raise ValueError(f"stages[{i}] ({spec.get('stage', spec.get('name'))}): {e}") from None
        except ValueError as e:
            if str(e).startswith("stages["):
                raise
            raise ValueError(f"pipeline[{i}] ({spec.get('stage', spec.get('name'))}): {e}") from None
    names = [s.name for s in stages]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"pipeline: stage name(s) {dup} used twice; give each a distinct 'name'")
    return stages


# ---------------------------------------------------------------------------------------------------
# the offline runner
# ---------------------------------------------------------------------------------------------------


def eval_positions(
    split: Split, which: str, users: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, history ends, targets) of a split, optionally restricted to a subset of its users."""
    u, e, t = split.eval_inputs(which)
    if users is not None:
        keep = np.isin(u, users)
        u, e, t = u[keep], e[keep], t[keep]
    return u, e, t


def _rank_of(items: np.ndarray, target: int) -> float:
    hit = np.flatnonzero(items == target)
    return float(hit[0] + 1) if len(hit) else float("inf")


def evaluate(
    pipe: Pipeline,
    which: str = "test",
    max_users: int | None = None,
    seed: int = 0,
    k: int = 10,
    batch: int = 256,
    dataset: str | None = None,
    progress: Any = None,
    users: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Leave-one-out evaluation of the pipeline's own stage objects: for each evaluation user of the split
    (test: target = last event, input = the events before it; valid: second-to-last) a request from that
    history prefix runs through every stage; the candidate list after each stage gives HR@k / NDCG@k (full
    catalog, seen items excluded by the pipeline's rules) and, for candidate generators, recall@K (K = the
    list's length cap). One record per stage: {dataset, stage (retrieval | ranking | rerank), name,
    components (used so far), metrics}."""
    if pipe.sequences is None:
        raise ValueError("evaluate: the pipeline has no dataset histories to evaluate on")
    split = leave_one_out(pipe.sequences)
    users = split.eval_users if users is None else np.sort(np.asarray(users, np.int64))  # dataset user indices
    if max_users is not None and max_users < len(users):
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    u_all, e_all, t_all = eval_positions(split, which, users)
    ranks: list[list[float]] = [[] for _ in pipe.stages]
    sizes = [0] * len(pipe.stages)
    task = progress.add_task(f"pipeline on {which}", total=len(u_all)) if progress else None
    for p in range(0, len(u_all), batch):
        u, e, t = u_all[p : p + batch], e_all[p : p + batch], t_all[p : p + batch]
        ctxs = pipe.offline_contexts(split.data, u, e, k)
        for j, cands in enumerate(pipe.run_batch(ctxs)):
            for c, target in zip(cands, t.tolist(), strict=True):
                ranks[j].append(_rank_of(c.items.numpy(), target))
                sizes[j] = max(sizes[j], len(c))
        if progress is not None and task is not None:
            progress.update(task, advance=len(u))
    if progress is not None and task is not None:
        progress.remove_task(task)
    records, used, big = [], [], k
    for j, (stage, spec) in enumerate(zip(pipe.stages, pipe.stage_specs, strict=True)):
        kind = STAGE_KIND.get(spec.get("stage", ""), "ranking" if spec.get("factory") else _legacy_kind(spec))
        if "component" in spec:
            used.append(spec["component"])
        if kind == "retrieval":  # recall@K: K = the largest retrieval list so far (its k), else the list's size
            big = max(big, int(getattr(stage, "k", 0)) or sizes[j])
        r = np.array(ranks[j])
        m = metrics_from_ranks(r, ks=(k, big))
        metrics = {f"HR@{k}": m[f"HR@{k}"], f"NDCG@{k}": m[f"NDCG@{k}"]}
        if kind == "retrieval":
            metrics[f"recall@{big}"] = m[f"HR@{big}"]
        metrics["users"] = len(r)
        records.append({"dataset": dataset or pipe.sequences.name, "split": which, "stage": kind, "name": stage.name,
                        "components": list(used), "metrics": metrics})  # fmt: skip
    return records


def _legacy_kind(spec: dict[str, Any]) -> str:
    return {"retrieval": "retrieval", "popular": "retrieval", "rerank": "rerank"}.get(spec.get("name", ""), "ranking")
