"""Ranker training rows from retrieval candidates, re-ranking rules, and the stage-by-stage evaluation.

Data discipline (leave-one-out, as in the foundation issue): the retrievers were trained on each user's
training prefix; the ranker learns on the *validation* targets (second-to-last item, input ends before it),
with hard negatives from the retrieval stage run on that same input, so its retrieval-score features have
the distribution they will have at test time; the test targets are scored once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import Progress

from genrec.data.batches import gather_windows
from genrec.data.sequences import Split
from genrec.evaluation.metrics import metrics_from_ranks, ranks_from_scores
from genrec.features.jagged import Rows
from genrec.features.ranking import RankingFeaturizer
from genrec.pipeline.retrieval import RetrievalOutput, RetrievalStage
from genrec.ranking.inference import DenseScaler, predict


def eval_positions(
    split: Split, which: str, users: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, history ends, targets) of a split, optionally restricted to a subset of its users."""
    u, e, t = split.eval_inputs(which)
    if users is not None:
        keep = np.isin(u, users)
        u, e, t = u[keep], e[keep], t[keep]
    return u, e, t


def seen_lists(split: Split, users: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    idx, off = gather_windows(split.data.offsets[users], ends)
    return np.split(split.data.items[idx], off[1:-1])


def rerank(
    cands: np.ndarray, scores: np.ndarray, category: np.ndarray, seen: np.ndarray, k: int = 10, cap: int = 3
) -> np.ndarray:
    """Shop rules on a ranked candidate list -> (<= k,) unique items: drop seen items and padding, at most `cap`
    per category (category 0 = unknown, uncapped). If the cap leaves fewer than k, the best capped-out items
    fill the rest, so the page is never short while candidates remain."""
    order = np.argsort(-scores, kind="stable")
    taken: list[int] = []
    spill: list[int] = []
    per_cat: dict[int, int] = {}
    banned = set(seen.tolist()) | {0}
    for i in cands[order].tolist():
        if i in banned:
            continue
        banned.add(i)
        c = int(category[i])
        if c and per_cat.get(c, 0) >= cap:
            spill.append(i)
            continue
        per_cat[c] = per_cat.get(c, 0) + 1
        taken.append(i)
        if len(taken) == k:
            break
    return np.array((taken + spill)[:k], np.int64)


def training_rows(
    stage: RetrievalStage,
    feat: RankingFeaturizer,
    split: Split,
    which: str,
    users: np.ndarray,
    n_hard: int = 20,
    n_random: int = 10,
    seed: int = 0,
    batch: int = 256,
    progress: Progress | None = None,
    only_retrieved: bool = True,
    lists_per_user: int = 1,
) -> Rows:
    """One list per user: the real next item (label 1), `n_hard` negatives sampled from its retrieved
    candidates (rank r drawn with weight 1/sqrt(r): the top of the list, where the ranker's order matters,
    is sampled most) and `n_random` uniform unseen items (label 0). Rows of a list are contiguous (groups =
    user). only_retrieved: keep only lists whose positive the retrieval stage found, so positives carry the
    retrieval features they can have when the ranker is used (a not-retrieved item is never ranked).
    lists_per_user > 1 adds lists at the positions just before the split's target (inside the retrievers'
    training part: more data, but their retrieval scores are in-sample, so more optimistic)."""
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
    parts = []
    w = 1.0 / np.sqrt(np.arange(1, stage.k + 1))
    task = progress.add_task(f"{which} rows", total=len(u_all)) if progress else None
    for p in range(0, len(u_all), batch):
        u, e, t = u_all[p : p + batch], e_all[p : p + batch], t_all[p : p + batch]
        seen = seen_lists(split, u, e)
        out = stage.run(u, e, seen)
        if only_retrieved:
            keep = (out.merged == t[:, None]).any(1)
            u, e, t, seen = u[keep], e[keep], t[keep], [s for s, k in zip(seen, keep, strict=True) if k]
            out = RetrievalOutput([q[torch.from_numpy(keep)] for q in out.queries], [x[keep] for x in out.lists],
                                  out.merged[keep])  # fmt: skip
            if not len(u):
                continue
        items = np.zeros((len(u), 1 + n_hard + n_random), np.int64)
        items[:, 0] = t
        for b in range(len(u)):
            ok = (out.merged[b] != t[b]) & (out.merged[b] > 0)
            pool, pw = out.merged[b][ok], w[: len(ok)][ok]
            items[b, 1 : 1 + n_hard] = rng.choice(pool, n_hard, replace=len(pool) < n_hard, p=pw / pw.sum())
            bad = set(seen[b].tolist()) | {int(t[b])}
            rand = [int(x) for x in rng.integers(1, n_items + 1, 4 * n_random + 8) if int(x) not in bad]
            items[b, 1 + n_hard :] = (rand * n_random)[:n_random]
        extra = stage.features(out, items)
        n = items.shape[1]
        labels = np.zeros((len(u), n), np.float32)
        labels[:, 0] = 1
        parts.append(
            feat.rows(
                np.repeat(u, n),
                items.ravel(),
                np.repeat(e, n),
                extra.reshape(-1, extra.shape[-1]),
                labels.ravel(),
                np.repeat(u, n),
            )
        )
        if progress is not None and task is not None:
            progress.update(task, advance=len(u))
    if progress is not None and task is not None:
        progress.remove_task(task)
    return concat_rows(parts)


def concat_rows(parts: list[Rows]) -> Rows:
    from genrec.features.jagged import SparseColumns

    sp = SparseColumns({}, {})
    for k in parts[0].sparse.keys:
        vals = [r.sparse.values[k] for r in parts]
        lens = np.concatenate([np.diff(r.sparse.offsets[k]) for r in parts])
        off = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=off[1:])
        sp.add(k, np.concatenate(vals), off)
    groups = None if parts[0].groups is None else np.concatenate([r.groups for r in parts])
    return Rows(np.concatenate([r.dense for r in parts]), sp, np.concatenate([r.labels for r in parts]), groups)


@dataclass
class Ranker:
    model: torch.nn.Module
    scaler: DenseScaler
    feat: RankingFeaturizer


def rank_and_rerank(
    out: RetrievalOutput,
    stage: RetrievalStage,
    ranker: Ranker,
    users: np.ndarray,
    ends: np.ndarray,
    seen: list[np.ndarray],
    category: np.ndarray | None,
    k: int = 10,
    cap: int = 3,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Ranker probabilities for the fused candidates (B, K) and each user's final page after re-ranking."""
    n = out.merged.shape[1]
    extra = stage.features(out, out.merged)
    rows = ranker.feat.rows(
        np.repeat(users, n), out.merged.ravel(), np.repeat(ends, n), extra.reshape(-1, extra.shape[-1])
    )
    rows.dense = ranker.scaler.transform(rows.dense)
    scores = predict(ranker.model, rows).reshape(len(users), n)
    cat = category if category is not None else np.zeros(int(out.merged.max()) + 1, np.int64)
    return scores, [rerank(out.merged[b], scores[b], cat, seen[b], k, cap) for b in range(len(users))]


def recommend_pages(
    stage: RetrievalStage, ranker: Ranker, split: Split, users: np.ndarray, ends: np.ndarray,
    category: np.ndarray | None, k: int = 10, cap: int = 3,
) -> list[np.ndarray]:  # fmt: skip
    """The whole pipeline for users whose histories end (exclusive) at `ends`: their final top-k pages."""
    seen = seen_lists(split, users, ends)
    out = stage.run(users, ends, seen)
    return rank_and_rerank(out, stage, ranker, users, ends, seen, category, k, cap)[1]


def _list_rank(ranked: np.ndarray, target: int) -> float:
    hit = np.flatnonzero(ranked == target)
    return float(hit[0] + 1) if len(hit) else float("inf")


def evaluate_pipeline(
    stage: RetrievalStage,
    split: Split,
    which: str = "test",
    users: np.ndarray | None = None,
    ranker: Ranker | None = None,
    category: np.ndarray | None = None,
    k: int = 10,
    cap: int = 3,
    batch: int = 256,
    progress: Progress | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics after each stage on one split (full catalog, seen items excluded), same users for all stages:
    '<retriever>-only' full-catalog ranking by one retriever; 'retrieval' the fused list (recall@K = HR@K);
    'ranking' the ranker's order of the fused list; 'rerank' the final top-k after the shop rules."""
    u_all, e_all, t_all = eval_positions(split, which, users)
    ranks: dict[str, list[float]] = {f"{r.name}-only": [] for r in stage.retrievers}
    ranks |= {"retrieval": [], "ranking": [], "rerank": []}
    task = progress.add_task(f"pipeline on {which}", total=len(u_all)) if progress else None
    for p in range(0, len(u_all), batch):
        u, e, t = u_all[p : p + batch], e_all[p : p + batch], t_all[p : p + batch]
        seen = seen_lists(split, u, e)
        out = stage.run(u, e, seen)
        tt = torch.from_numpy(t)
        for r, q in zip(stage.retrievers, out.queries, strict=True):
            scores = q @ r.table.T
            scores[:, 0] = float("-inf")
            rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
            scores[torch.from_numpy(rows), torch.from_numpy(np.concatenate(seen))] = float("-inf")
            ranks[f"{r.name}-only"] += ranks_from_scores(scores, tt).tolist()
        if ranker is not None:
            scores_r, finals = rank_and_rerank(out, stage, ranker, u, e, seen, category, k, cap)
        for b in range(len(u)):
            ranks["retrieval"].append(_list_rank(out.merged[b], t[b]))
            if ranker is None:
                continue
            order = np.argsort(-scores_r[b], kind="stable")
            ranks["ranking"].append(_list_rank(out.merged[b][order], t[b]))
            ranks["rerank"].append(_list_rank(finals[b], t[b]))
        if progress is not None and task is not None:
            progress.update(task, advance=len(u))
    if progress is not None and task is not None:
        progress.remove_task(task)
    kk = (k, stage.k)
    res = {}
    for name, r in ranks.items():
        if not r:
            continue
        m = metrics_from_ranks(np.array(r), ks=kk)
        res[name] = {f"HR@{k}": m[f"HR@{k}"], f"NDCG@{k}": m[f"NDCG@{k}"], f"recall@{stage.k}": m[f"HR@{stage.k}"]}
        if name == "rerank":  # the final page holds k items: nothing beyond k can be found
            res[name].pop(f"recall@{stage.k}")
        res[name]["users"] = len(r)
    return res
