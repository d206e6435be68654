"""The pipeline's stages, each written once and run by both `genrec pipeline evaluate` and `genrec serve`.

    SequenceRetrieve  HSTU / SASRec user state after the history (with its event types when the model was
                      trained with event inputs), top-k over its L2-normalised item table: exact (matmul +
                      top-k) or a faiss HNSW index over the same table
    TwoTowerRetrieve  user tower over the request's history features, top-k from the item tower's faiss
                      index (exact when none); both mask the request's hard constraints first
    Popular           backfill / cold start: context-aware popular items (see Popular)
    CTRRank           DLRM / Wide & Deep / LR over (request, candidate) rows of RankingFeaturizer
    HSTURank          the generative ranker (M-FALCON: one history encoding shared by all candidates)
    Rerank            hard constraints re-checked, boosts, per-category cap with back-fill, cut to k

Several retrieval stages are fused by reciprocal rank fusion: after each one the candidates are the RRF
merge of every retrieval list so far (a single list keeps its own order and scores). Each retrieval stage
leaves (query, item table, list) in ctx.retrieved; a CTR ranker reads them as features: per retriever its
score and log(1 + rank) (k + 1 when it did not retrieve the item), then 100 x the fused RRF score.
Ranker training rows (training_rows) take their hard negatives from these same retrieval stage objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genrec.data.sequences import PAD, SequenceData, Split, Vocab
from genrec.features.jagged import Rows, SparseColumns
from genrec.features.ranking import RankingFeaturizer, Requests
from genrec.index.ann import FaissIndex
from genrec.models import SequentialModel
from genrec.pipeline.core import Candidates, Catalog, History, RequestContext, RerankRules, Retrieved, run_batch
from genrec.ranking.inference import FactoredWideDeep

RRF_K = 60.0  # the usual reciprocal-rank-fusion constant


# ---------------------------------------------------------------------------------------------------
# retrieval
# ---------------------------------------------------------------------------------------------------


def fuse(ctx: RequestContext, cands: Candidates, name: str, scores: torch.Tensor, tier: int = 0) -> Candidates:
    """Candidates after retrieval stage `name` (its list already in ctx.retrieved): its own list when it is
    the only one, else the RRF merge of all retrieval lists (ties by item index), labelled by the first
    retriever that found each item. Candidates of other stages before it stay behind the fused list."""
    lists = list(ctx.retrieved.items())
    own = ctx.retrieved[name].items
    rest = [i for i, t in enumerate(cands.tiers) if t != tier]
    if len(lists) == 1:
        new = Candidates(torch.from_numpy(own), scores.float(), [name] * len(own), [tier] * len(own))
    else:
        # RRF: sum over lists of 1 / (RRF_K + rank), summed in stage order; ties by item index
        every = np.concatenate([np.asarray(r.items, np.int64) for _, r in lists])
        ranks = np.concatenate([np.arange(1, len(r.items) + 1, dtype=np.float64) for _, r in lists])
        which = np.repeat(np.arange(len(lists)), [len(r.items) for _, r in lists])
        uniq, first, inv = np.unique(every, return_index=True, return_inverse=True)
        fused = np.bincount(inv, weights=1.0 / (RRF_K + ranks), minlength=len(uniq))
        best = np.lexsort((uniq, -fused))[: max(r.k for _, r in lists)]
        names = [stage for stage, _ in lists]
        labels = [names[j] for j in which[first[best]].tolist()]  # the first list that has the item
        scores = torch.from_numpy(fused[best].astype(np.float32))
        new = Candidates(torch.from_numpy(uniq[best]), scores, labels, [tier] * len(best))
    if rest:
        old = cands.select(rest)
        taken = set(new.items.tolist())
        keep = [j for j, i in enumerate(old.items.tolist()) if i not in taken]
        new = new.extend(old.items[keep], old.scores[keep], "", tier)  # placeholder labels, fixed below
        new.stages[len(new) - len(keep) :] = [old.stages[j] for j in keep]
        new.tiers[len(new) - len(keep) :] = [old.tiers[j] for j in keep]
    return new


def _masked_top(scores: torch.Tensor, allowed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, N+1), allowed (B, N+1) -> the top n allowed per row (values, indices); -inf ones dropped later."""
    return torch.topk(scores.masked_fill(~allowed, float("-inf")), n, dim=1)


class _Retrieve:
    """Shared retrieval logic: per-request query vectors, exact or faiss top-k under ctx.allowed."""

    name: str
    k: int
    table: torch.Tensor  # (num_items + 1, d)
    index: FaissIndex | None = None
    tier = 0

    def queries(self, ctxs: list[RequestContext]) -> torch.Tensor:
        raise NotImplementedError

    def can_query(self, ctx: RequestContext) -> bool:
        return not ctx.cold_start

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        return self.batch([ctx], [cands])[0]

    @torch.no_grad()
    def batch(self, ctxs: list[RequestContext], cands: list[Candidates]) -> list[Candidates]:
        out = list(cands)
        live = [i for i, c in enumerate(ctxs) if self.can_query(c)]
        if not live:
            return out
        with torch.inference_mode():  # ~15% less per-op overhead than no_grad on the small serving batches
            q = self.queries([ctxs[i] for i in live]).clone()  # (B, d); the clone is a normal tensor again
        allowed = torch.stack([ctxs[i].allowed for i in live])  # (B, N+1)
        n = min(max(self.k, max(ctxs[i].k for i in live)), allowed.shape[1] - 1)
        every = None  # (B, N+1) every item's score, when exact search computed them anyway
        if self.index is None:
            every = q @ self.table.T
            vals, idx = _masked_top(every, allowed, n)
        else:
            vals, idx = self._ann_top(q, allowed, n)
        for row, i in enumerate(live):
            ok = torch.isfinite(vals[row])
            items, scores = idx[row][ok], vals[row][ok]
            ctx = ctxs[i]
            ctx.retrieved[self.name] = Retrieved(
                q[row], self.table, items.numpy(), self.k, every[row] if every is not None else None
            )
            out[i] = fuse(ctx, cands[i], self.name, scores, self.tier)
        return out

    def _ann_top(self, q: torch.Tensor, allowed: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """faiss over-fetches by the number of banned items (up to 2n + 64); a short row is topped up exactly."""
        assert self.index is not None
        banned = int((~allowed[:, 1:]).sum(1).max())
        fetch = min(allowed.shape[1] - 1, n + min(banned, n + 64))
        scores, ids = self.index.search(q.numpy(), fetch)
        vals = torch.full((len(q), n), float("-inf"))
        idx = torch.zeros((len(q), n), dtype=torch.long)
        for b in range(len(q)):
            row, sc = ids[b], scores[b]
            ok = row > 0
            ok[ok] = allowed[b, torch.from_numpy(row[ok])].numpy()
            row, sc = row[ok][:n], sc[ok][:n]
            if len(row) < n:  # the approximate search came up short: exact top-up
                mask = allowed[b].clone()
                mask[torch.from_numpy(row)] = False
                v, i = _masked_top((q[b : b + 1] @ self.table.T), mask[None], n - len(row))
                row, sc = np.concatenate([row, i[0].numpy()]), np.concatenate([sc, v[0].numpy()])
            idx[b], vals[b] = torch.from_numpy(row), torch.from_numpy(sc.astype(np.float32))
        return vals, idx


class SequenceRetrieve(_Retrieve):
    """A sequence model (HSTU, SASRec) as a retriever: query = its user state after the request's history."""

    def __init__(
        self, model: SequentialModel, k: int = 200, name: str = "hstu", index: str = "exact",
        uses_timestamps: bool = True,
    ) -> None:  # fmt: skip
        self.model, self.k, self.name, self.uses_timestamps = model.eval(), int(k), name, uses_timestamps
        self.uses_events = model.uses_events  # trained with --event-inputs: (item, action) tokens
        with torch.no_grad():
            self.table = model.item_table().detach()
        if resolve_index(index, len(self.table) - 1) == "faiss":
            n = len(self.table) - 1
            self.index = FaissIndex.build(self.table[1:].numpy(), np.arange(1, n + 1), kind="hnsw")

    def queries(self, ctxs: list[RequestContext]) -> torch.Tensor:
        toks = [c.history.model_tokens(self.model.config.max_len) for c in ctxs]
        off = np.zeros(len(toks) + 1, np.int64)
        np.cumsum([len(t[0]) for t in toks], out=off[1:])
        items = torch.from_numpy(np.concatenate([t[0] for t in toks]))
        ts = torch.from_numpy(np.concatenate([t[1] for t in toks])) if self.uses_timestamps else None
        events = torch.from_numpy(np.concatenate([t[2] for t in toks])) if self.uses_events else None
        return self.model.user_states(items, torch.from_numpy(off), ts, events)


@dataclass
class TwoTowerParts:
    """A loaded two-tower component: the model, its featurizer and (optionally) the item tower's faiss index."""

    model: Any  # genrec.models.two_tower.TwoTower
    feat: RankingFeaturizer
    index: FaissIndex | None = None


def requests_of(ctxs: list[RequestContext], h: int) -> Requests:
    """The feature-side view of B requests: their known items, request times and last event types."""
    last = np.array([int(c.history.type_codes[-1]) if len(c.history.type_codes) else 0 for c in ctxs], np.int64)
    return Requests.from_histories(
        np.array([c.user_index for c in ctxs], np.int64),
        [c.history.known for c in ctxs],
        h,
        np.array([c.request_time for c in ctxs], np.int64),
        last,
    )


# "auto" index: exact scoring up to this many items. On ML-1M (3,416 items) exact top-200 took 0.18 ms per
# query in batches of 32 against HNSW's 0.75 ms (efSearch 256), and it is exact; past ~65k items the
# (B, N) score matrix costs more than the graph walk.
EXACT_MAX_ITEMS = 1 << 16


INDEX_KINDS = ("exact", "faiss", "auto")


def resolve_index(index: str, num_items: int) -> str:
    if index not in INDEX_KINDS:
        raise ValueError(f"index: expected 'exact', 'faiss' or 'auto', got {index!r}")
    if index == "auto":
        return "exact" if num_items <= EXACT_MAX_ITEMS else "faiss"
    return index


class TwoTowerRetrieve(_Retrieve):
    """Two-tower retrieval: query = the user tower over the request's history features."""

    def __init__(self, parts: TwoTowerParts, k: int = 200, name: str = "two-tower", index: str = "auto") -> None:
        self.model, self.feat, self.k, self.name = parts.model.eval(), parts.feat, int(k), name
        self.index = parts.index if resolve_index(index, parts.feat.t.num_items) == "faiss" else None
        with torch.no_grad():  # (num_items + 1, d) item tower outputs; row 0 (padding) is zero
            n = self.feat.t.num_items + 1
            dense, sp = self.feat.item_side(np.arange(n))
            self.table = self.model.item_tower(torch.from_numpy(dense), sp.to_kjt())
            self.table[0] = 0

    def can_query(self, ctx: RequestContext) -> bool:
        return True  # the user tower reads attributes too: a cold user still has a query

    def queries(self, ctxs: list[RequestContext]) -> torch.Tensor:
        dense, sp = self.feat.request_user_side(requests_of(ctxs, self.feat.cfg.history_len))
        return self.model.user_tower.forward_columns(torch.from_numpy(dense), *sp.tensors())


def retrieval_feature_names(names: list[str]) -> list[str]:
    return [f"{n}_{f}" for n in names for f in ("score", "logrank")] + ["rrf"]


def _ranks_in(listed: np.ndarray, items: np.ndarray, missing: int) -> np.ndarray:
    """(n,) the 1-based position of each item in `listed` (distinct items, best first), `missing` when absent."""
    if not len(listed):
        return np.full(len(items), missing, np.float32)
    order = np.argsort(listed, kind="stable")
    at = np.minimum(np.searchsorted(listed, items, sorter=order), len(listed) - 1)
    hit = listed[order[at]] == items
    return np.where(hit, order[at] + 1, missing).astype(np.float32)


def retrieval_features(ctx: RequestContext, items: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """(n,) items -> (n, 2 R + 1) ranker features from the request's retrieval lists of retrievers `names`
    (default: the lists the request has, in stage order). A retriever that did not run for this request
    (a sequence model skips a user without history) counts as not retrieving any item: score 0, rank k + 1."""
    n = len(items)
    cols, rrf = [], np.zeros(n, np.float32)
    it = torch.from_numpy(np.asarray(items, np.int64))
    lists = ctx.retrieved
    miss_k = max((r.k for r in lists.values()), default=200)
    for name in names if names is not None else list(lists):
        r = lists.get(name)
        if r is None:
            cols += [np.zeros(n, np.float32), np.full(n, np.log1p(miss_k + 1), np.float32)]
            continue
        score = (r.scores[it] if r.scores is not None else r.table[it] @ r.query).numpy()
        rank = _ranks_in(r.items, np.asarray(items, np.int64), r.k + 1)
        rrf += np.where(rank <= r.k, 1.0 / (RRF_K + rank), 0.0).astype(np.float32)
        cols += [score, np.log1p(rank)]
    return np.stack([*cols, rrf * 100], axis=-1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# popularity backfill
# ---------------------------------------------------------------------------------------------------


class Popular:
    """Cold start and backfill: popular items, from the users who share the request's context when known.

    context keys that match a user attribute of the dataset (e.g. region, age_group) switch to that group's
    popularity; `category` puts that category's items first. Fills up to fill_factor * k candidates.
    """

    def __init__(
        self, popularity: np.ndarray, group_popularity: dict[tuple[str, str], np.ndarray], catalog: Catalog,
        fill_factor: int = 3, name: str = "popular", tier: int = 1,
    ) -> None:  # fmt: skip
        self.fill_factor, self.name, self.tier, self.catalog = int(fill_factor), name, tier, catalog
        self.log_pop = torch.from_numpy(np.log1p(popularity)).float()
        self.groups = {key: torch.from_numpy(np.log1p(c)).float() for key, c in group_popularity.items()}
        self._category = torch.from_numpy(catalog.category)

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        want = ctx.k * self.fill_factor - len(cands)
        if want <= 0:
            return cands
        score = self.log_pop.clone()
        groups = []
        for key, value in ctx.context.items():
            g = self.groups.get((str(key), str(value)))
            if g is not None:
                groups.append(g)
                ctx.context_used.append(str(key))
        if groups:
            score = torch.stack(groups).mean(0) + 1e-3 * score  # group popularity, global breaks ties
        cat = ctx.context.get("category")
        if isinstance(cat, str) and cat in self.catalog.category_names:
            score = score + 1e3 * (self._category == self.catalog.category_names.index(cat)).float()
            ctx.context_used.append("category")
        allowed = ctx.allowed.clone()
        if len(cands):
            allowed[cands.items] = False
        n = min(want, int(allowed.sum()))
        if n == 0:
            return cands
        top = torch.topk(score.masked_fill(~allowed, float("-inf")), n)
        return cands.extend(top.indices, top.values, self.name, self.tier)


# ---------------------------------------------------------------------------------------------------
# ranking
# ---------------------------------------------------------------------------------------------------


@dataclass
class Ranker:
    """A loaded CTR ranker: the model, its dense scaler (anything with transform(x)) and featurizer."""

    model: torch.nn.Module
    scaler: Any
    feat: RankingFeaturizer


def _ordered(cands: Candidates, scores: torch.Tensor, name: str) -> Candidates:
    """The same candidates rescored and labelled `name`, ordered by (tier, score descending), stable."""
    s, tiers = scores.numpy(), np.asarray(cands.tiers)
    order = np.lexsort((-s, tiers))
    out = cands.select(order)
    return Candidates(out.items, scores[torch.from_numpy(order)].float(), [name] * len(out), out.tiers)


def ranking_inputs(
    feat: RankingFeaturizer, ctxs: list[RequestContext], items: list[np.ndarray], name: str = "ranker"
) -> tuple[Requests, np.ndarray, np.ndarray, np.ndarray | None]:
    """(requests, of, candidates, retrieval columns) of request b x items[b]: what a ranking row is built from."""
    extra_names = feat.cfg.extra_dense
    retrievers = [f.removesuffix("_score") for f in extra_names if f.endswith("_score")]
    for c in ctxs:
        if retrievers and not set(c.retrieved) <= set(retrievers):
            raise ValueError(
                f"{name}: trained with retrieval features {extra_names} ({len(retrievers)} retrievers); "
                f"this request went through {list(c.retrieved)}"
            )
    of = np.repeat(np.arange(len(ctxs)), [len(x) for x in items])
    flat = np.concatenate(items).astype(np.int64) if items else np.zeros(0, np.int64)
    extra = None
    if retrievers:
        extra = np.concatenate(
            [retrieval_features(c, np.asarray(x), retrievers) for c, x in zip(ctxs, items, strict=True)]
        )
    return requests_of(ctxs, feat.cfg.history_len), of, flat, extra


def ranking_rows(
    feat: RankingFeaturizer, ctxs: list[RequestContext], items: list[np.ndarray], name: str = "ranker"
) -> Rows:
    """CTR ranker rows of request b x items[b]: ranking a request and training the ranker build the same rows."""
    return feat.request_rows(*ranking_inputs(feat, ctxs, items, name))


class CTRRank:
    """DLRM / Wide & Deep / LR probabilities for every (request, candidate) row; requests batched.

    fp32 on purpose: bf16 autocast ran the MLP 3x faster on AVX512-BF16, but its sums depend on the batch's
    shape, so a page would change with the requests it was batched with (served != offline)."""

    def __init__(self, ranker: Ranker, name: str = "ranker", batch_size: int = 8192) -> None:
        self.ranker, self.name, self.batch_size = ranker, name, batch_size
        self.ranker.model.eval()
        # Wide & Deep: the catalog's side of the first layer once, not per row (same logits, ~3x less work)
        self.factored = FactoredWideDeep.of(ranker.model, ranker.scaler, ranker.feat)

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        return self.batch([ctx], [cands])[0]

    def rows(self, ctxs: list[RequestContext], items: list[np.ndarray]) -> Rows:
        return ranking_rows(self.ranker.feat, ctxs, items, self.name)

    @torch.no_grad()
    def predict(self, rows: Rows) -> np.ndarray:
        rows.dense = self.ranker.scaler.transform(rows.dense)
        out = []
        for p in range(0, len(rows), self.batch_size):
            dense, kjt, _ = rows.batch(np.arange(p, min(p + self.batch_size, len(rows))))
            out.append(torch.sigmoid(self.ranker.model(dense, kjt)).numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def batch(self, ctxs: list[RequestContext], cands: list[Candidates]) -> list[Candidates]:
        live = [i for i, c in enumerate(cands) if len(c)]
        out = list(cands)
        if not live:
            return out
        items = [cands[i].items.numpy() for i in live]
        with torch.inference_mode():  # the probabilities leave as numpy
            if self.factored is not None:
                inputs = ranking_inputs(self.ranker.feat, [ctxs[i] for i in live], items, self.name)
                probs = torch.sigmoid(self.factored.logits(*inputs)).numpy()
            else:
                probs = self.predict(self.rows([ctxs[i] for i in live], items))
        pos = 0
        for i, x in zip(live, items, strict=True):
            out[i] = _ordered(cands[i], torch.from_numpy(probs[pos : pos + len(x)].copy()), self.name)
            pos += len(x)
        return out


class HSTURank:
    """The HSTU ranker (genrec.generative_ranking) over the candidates: score = sum_t w_t P(task t).

    The history becomes (item, action, time) tokens in the ranker's vocabulary (items matched by raw id); an
    event's type maps to the ranker's action (a live type the dataset never had: purchase -> the purchase
    action, else the lowest); consecutive events on one item collapse to one token with the highest
    action, as in training. Candidates the ranker does not know get score min - 1 (last within their tier).
    """

    def __init__(
        self, model: Any, meta: dict[str, Any], vocab: Vocab, event_vocab: Vocab | None, purchase_types: list[str],
        weights: dict[str, float] | None = None, name: str = "hstu_rank",
    ) -> None:  # fmt: skip
        self.model, self.meta, self.name = model.eval(), meta, name
        tasks = meta["tasks"]
        unknown = set(weights or {}) - set(tasks)
        if unknown:
            raise ValueError(f"weights: unknown task(s) {sorted(unknown)}; the ranker predicts {tasks}")
        self.weights = torch.tensor([float((weights or {}).get(t, 0.0 if weights else 1.0)) for t in tasks])
        index = {raw: i + 1 for i, raw in enumerate(meta["item_ids"])}
        # pipeline item index -> ranker item index (PAD where the ranker does not know the item)
        self.to_ranker = np.array([PAD] + [index.get(raw, PAD) for raw in vocab.ids], np.int64)
        actions: dict[str, int] = meta["event_actions"]
        self.low_action = min(actions.values())
        self.purchase_action = max((actions[t] for t in purchase_types if t in actions), default=self.low_action)
        types = event_vocab.ids if event_vocab is not None else []
        self.type_action = np.array([-1] + [actions.get(t, self.low_action) for t in types], np.int64)

    def history_tokens(self, ctx: RequestContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from genrec.generative_ranking.data import collapse_history

        h = ctx.history
        by_flag = np.where(h.purchased, self.purchase_action, self.low_action).astype(np.int64)
        by_type = self.type_action[h.type_codes]
        actions = np.where(by_type >= 0, by_type, by_flag)
        items = self.to_ranker[h.items]
        known = items != PAD
        items, actions, times = collapse_history(items[known], actions[known], h.timestamps[known])
        return torch.from_numpy(items), torch.from_numpy(actions), torch.from_numpy(times)

    @torch.no_grad()
    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        if not len(cands):
            return cands
        items, actions, times = self.history_tokens(ctx)
        cand = torch.from_numpy(self.to_ranker[cands.items.numpy()])
        known = cand != PAD
        with torch.inference_mode():
            probs = self.model.score(items, actions, times, cand.clamp(min=1)).clone()  # (C, T)
        scores = probs @ self.weights  # unknown rows replaced below
        if not bool(known.all()):
            floor = scores[known].min() - 1 if bool(known.any()) else torch.tensor(0.0)
            scores = torch.where(known, scores, floor)
        return _ordered(cands, scores.float(), self.name)


# ---------------------------------------------------------------------------------------------------
# re-ranking
# ---------------------------------------------------------------------------------------------------


def capped_order(order: np.ndarray, category: np.ndarray, k: int, cap: int | None) -> np.ndarray:
    """Positions `order` (best first) with category[i] (-1 = none, never capped) -> the first k under the cap
    of `cap` per category; when the cap leaves fewer than k, the best capped-out items fill the rest, so the
    page is never short while candidates remain."""
    if cap is None:
        return order[:k]
    taken: list[int] = []
    spill: list[int] = []
    used: dict[int, int] = {}
    for i, c in zip(order.tolist(), category.tolist(), strict=True):
        if c >= 0 and used.get(c, 0) >= cap:
            spill.append(i)
            continue
        used[c] = used.get(c, 0) + 1
        taken.append(i)
        if len(taken) == k:
            break
    return np.array((taken + spill)[:k], np.int64)


class Rerank:
    """Rules: re-check the hard constraints (seen, out of stock, request filters), add boosts, order by
    (tier, score), one item once, at most max_per_category of a category (with back-fill), cut to k."""

    def __init__(self, rules: RerankRules, catalog: Catalog, vocab: Vocab, name: str = "rerank") -> None:
        self.name, self.catalog, self.cap = name, catalog, rules.max_per_category
        self.boost = torch.zeros(len(vocab) + 1)
        for b in rules.boosts:
            col = catalog.column(b.field, vocab)
            self.boost[torch.from_numpy(col == str(b.value))] += float(b.weight)

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        if not len(cands):
            return cands
        items = cands.items.numpy()
        keep = ctx.allowed[cands.items].numpy()
        first = np.zeros(len(items), bool)
        first[np.unique(items, return_index=True)[1]] = True  # a repeated item keeps its first (best) entry
        scores = cands.scores + self.boost[cands.items]
        s, tiers = scores.numpy(), np.asarray(cands.tiers)
        idx = np.flatnonzero(keep & first)
        order = idx[np.lexsort((-s[idx], tiers[idx]))]  # primary key last: tier, then score descending
        order = capped_order(order, self.catalog.category[items[order]], ctx.k, self.cap)
        out = cands.select(order)
        out.scores = scores[torch.from_numpy(order)]
        return out


# ---------------------------------------------------------------------------------------------------
# ranker training rows
# ---------------------------------------------------------------------------------------------------


def dataset_contexts(
    data: SequenceData, users: np.ndarray, ends: np.ndarray, k: int = 10, base: torch.Tensor | None = None
) -> list[RequestContext]:
    """Requests of dataset users whose histories end (exclusive) at `ends`, seen items excluded; the request
    time is the next event's (the target's) time. base: (num_items + 1,) bool items allowed at all."""
    n = data.num_items + 1
    mask = torch.ones(n, dtype=torch.bool) if base is None else base
    mask[PAD] = False
    out = []
    for u, e in zip(users.tolist(), ends.tolist(), strict=True):
        a = int(data.offsets[u])
        items = data.items[a:e]
        ts = data.timestamps[a:e] if data.timestamps is not None else np.zeros(e - a, np.int64)
        codes = data.event_types[a:e] if data.event_types is not None else np.zeros(e - a, np.int64)
        hist = History(items, ts, np.zeros(e - a, bool), codes, num_dataset=e - a)
        allowed = mask.clone()
        allowed[torch.from_numpy(items)] = False
        when = int(data.timestamps[min(e, len(data.items) - 1)]) if data.timestamps is not None else 0
        out.append(RequestContext(data.user_vocab.raw(u + 1), u, k, hist, allowed, {}, when))
    return out


def training_rows(
    retrievers: list[_Retrieve],
    feat: RankingFeaturizer,
    split: Split,
    which: str,
    users: np.ndarray,
    n_hard: int = 20,
    n_random: int = 10,
    seed: int = 0,
    batch: int = 256,
    progress: Any = None,
    only_retrieved: bool = True,
    lists_per_user: int = 1,
) -> Rows:
    """One list per user: the real next item (label 1), `n_hard` negatives sampled from the candidates of
    the retrieval stages (rank r drawn with weight 1/sqrt(r): the top of the list, where the ranker's order
    matters, is sampled most) and `n_random` uniform unseen items (label 0). Rows of a list are contiguous
    (groups = user), built by ranking_rows as at ranking time. only_retrieved: keep
    only lists whose positive was retrieved, so positives carry the retrieval features they can have when
    the ranker is used. lists_per_user > 1 adds lists at the positions just before the split's target
    (inside the retrievers' training part: more data, but in-sample retrieval scores, so more optimistic)."""
    from genrec.pipeline.pipeline import eval_positions

    rng = np.random.default_rng(seed)
    u_all, e_all, t_all = eval_positions(split, which, users)
    if lists_per_user > 1:
        u0, e0 = u_all, e_all
        shifts = np.arange(lists_per_user)
        u_all, e_all = np.repeat(u0, lists_per_user), (e0[:, None] - shifts[None, :]).ravel()
        ok = e_all - split.data.offsets[u_all] >= 2  # keep at least two history items
        u_all, e_all = u_all[ok], e_all[ok]
        t_all = split.data.items[e_all]
    n_items = split.data.num_items
    k = max(r.k for r in retrievers)
    w = 1.0 / np.sqrt(np.arange(1, k + 1))
    parts = []
    task = progress.add_task(f"{which} rows", total=len(u_all)) if progress else None
    for p in range(0, len(u_all), batch):
        u, e, t = u_all[p : p + batch], e_all[p : p + batch], t_all[p : p + batch]
        ctxs = dataset_contexts(split.data, u, e)
        cands = [Candidates() for _ in ctxs]
        for r in retrievers:
            cands = run_batch(r, ctxs, cands)
        merged = [c.items.numpy() for c in cands]
        keep = [j for j in range(len(u)) if not only_retrieved or (merged[j] == t[j]).any()]
        if not keep:
            continue
        items = np.zeros((len(keep), 1 + n_hard + n_random), np.int64)
        for row, j in enumerate(keep):
            items[row, 0] = t[j]
            ok = merged[j] != t[j]
            pool, pw = merged[j][ok], w[: len(ok)][ok]
            items[row, 1 : 1 + n_hard] = rng.choice(pool, n_hard, replace=len(pool) < n_hard, p=pw / pw.sum())
            bad = set(ctxs[j].history.items.tolist()) | {int(t[j])}
            rand = [int(x) for x in rng.integers(1, n_items + 1, 4 * n_random + 8) if int(x) not in bad]
            items[row, 1 + n_hard :] = (rand * n_random)[:n_random]
        n = items.shape[1]
        rows = ranking_rows(feat, [ctxs[j] for j in keep], list(items))
        labels = np.zeros((len(keep), n), np.float32)
        labels[:, 0] = 1
        rows.labels = labels.ravel()
        rows.groups = np.repeat(u[keep], n)
        parts.append(rows)
        if progress is not None and task is not None:
            progress.update(task, advance=len(u))
    if progress is not None and task is not None:
        progress.remove_task(task)
    if not parts:
        raise ValueError(f"no {which} lists for the ranker: retrieval (top {k}) found none of the {which} targets of "
                         f"{len(u_all):,} users; train the retrievers longer or raise their k")  # fmt: skip
    return concat_rows(parts)


def concat_rows(parts: list[Rows]) -> Rows:
    sp = SparseColumns({}, {})
    for k in parts[0].sparse.keys:
        vals = [r.sparse.values[k] for r in parts]
        lens = np.concatenate([np.diff(r.sparse.offsets[k]) for r in parts])
        off = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=off[1:])
        sp.add(k, np.concatenate(vals), off)
    groups = None if parts[0].groups is None else np.concatenate([r.groups for r in parts])
    return Rows(np.concatenate([r.dense for r in parts]), sp, np.concatenate([r.labels for r in parts]), groups)
