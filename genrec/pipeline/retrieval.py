"""Retrieval stage: each retriever returns its top-K unseen items; the lists are merged by reciprocal rank fusion.

A retriever is a query encoder plus an item table in one space (score = <query, item>):
    HSTURetriever      query = HSTU user state after the history window, table = its L2-normalised item
                       embeddings (cosine; the model's temperature only rescales)
    TwoTowerRetriever  query = user tower, table = item tower; top-K from an ANN index (faiss HNSW) over the
                       table, exact top-k when no index is given
For any (user, item) pair the stage also gives the ranker its retrieval features: each retriever's score and
log(1 + rank in that retriever's list) (K + 1 when the item was not retrieved), plus the fused RRF score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genrec.data.batches import gather_windows
from genrec.data.sequences import SequenceData
from genrec.features.ranking import RankingFeaturizer
from genrec.index.ann import FaissIndex
from genrec.models import SequentialModel
from genrec.models.two_tower import TwoTower
from genrec.ranking.inference import item_vectors, user_vectors

RRF_K = 60.0  # the usual reciprocal-rank-fusion constant


class Retriever:
    name: str
    table: torch.Tensor  # (num_items + 1, d)

    def query(self, users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        """(B,) users, (B,) history ends (exclusive) -> (B, d)."""
        raise NotImplementedError

    def top(self, q: torch.Tensor, seen: list[np.ndarray], k: int) -> np.ndarray:
        """(B, k) best unseen items (padding and `seen` excluded), exact search."""
        scores = q @ self.table.T
        scores[:, 0] = float("-inf")
        rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
        if len(rows):
            scores[torch.from_numpy(rows), torch.from_numpy(np.concatenate(seen))] = float("-inf")
        return torch.topk(scores, k, dim=1).indices.numpy()


class HSTURetriever(Retriever):
    def __init__(self, model: SequentialModel, data: SequenceData, name: str = "hstu") -> None:
        self.model, self.data, self.name = model.eval(), data, name
        with torch.no_grad():
            self.table = model.item_table()

    @torch.no_grad()
    def query(self, users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        d = self.data
        starts = np.maximum(d.offsets[users], ends - self.model.config.max_len)
        idx, off = gather_windows(starts, ends)
        ts = None if d.timestamps is None else torch.from_numpy(d.timestamps[idx])
        return self.model.user_states(torch.from_numpy(d.items[idx]), torch.from_numpy(off), ts)


class TwoTowerRetriever(Retriever):
    def __init__(
        self, model: TwoTower, feat: RankingFeaturizer, index: FaissIndex | None = None, name: str = "two-tower"
    ) -> None:
        self.model, self.feat, self.index, self.name = model.eval(), feat, index, name
        self.table = item_vectors(model, feat)

    def query(self, users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        return user_vectors(self.model, self.feat, users, ends)

    def top(self, q: torch.Tensor, seen: list[np.ndarray], k: int) -> np.ndarray:
        if self.index is None:
            return super().top(q, seen, k)
        # over-fetch by the longest history so that k unseen items remain after filtering
        n = len(self.table) - 1
        fetch = min(n, k + max((len(s) for s in seen), default=0))
        _, ids = self.index.search(q.numpy(), fetch)
        out = np.zeros((len(seen), k), np.int64)
        for b, (row, s) in enumerate(zip(ids, seen, strict=True)):
            keep = row[(row > 0) & ~np.isin(row, s)][:k]
            if len(keep) < k:  # the approximate search came up short: top up exactly
                keep = np.concatenate([keep, super().top(q[b : b + 1], [np.concatenate([s, keep])], k - len(keep))[0]])
            out[b] = keep
        return out


@dataclass
class RetrievalOutput:
    queries: list[torch.Tensor]  # per retriever (B, d)
    lists: list[np.ndarray]  # per retriever (B, K) its own top-K, best first
    merged: np.ndarray  # (B, K) fused candidates, best first


class RetrievalStage:
    def __init__(self, retrievers: list[Retriever], k: int = 200) -> None:
        self.retrievers, self.k = retrievers, k

    def feature_names(self) -> list[str]:
        return [f"{r.name}_{f}" for r in self.retrievers for f in ("score", "logrank")] + ["rrf"]

    def run(self, users: np.ndarray, ends: np.ndarray, seen: list[np.ndarray]) -> RetrievalOutput:
        queries = [r.query(users, ends) for r in self.retrievers]
        lists = [r.top(q, seen, self.k) for r, q in zip(self.retrievers, queries, strict=True)]
        merged = np.zeros((len(users), self.k), np.int64)
        for b in range(len(users)):
            fused: dict[int, float] = {}
            for lst in lists:
                for rank, item in enumerate(lst[b].tolist(), 1):
                    fused[item] = fused.get(item, 0.0) + 1.0 / (RRF_K + rank)
            best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[: self.k]
            merged[b, : len(best)] = [i for i, _ in best]
        return RetrievalOutput(queries, lists, merged)

    def features(self, out: RetrievalOutput, items: np.ndarray) -> np.ndarray:
        """items: (B, n) -> (B, n, E) retrieval features in feature_names() order."""
        b, n = items.shape
        cols, rrf = [], np.zeros((b, n), np.float32)
        it = torch.from_numpy(items)
        for r, q, lst in zip(self.retrievers, out.queries, out.lists, strict=True):
            score = torch.einsum("bd,bnd->bn", q, r.table[it]).numpy()
            rank = np.full((b, n), self.k + 1, np.float32)
            for row in range(b):  # position of each item in this retriever's list
                pos = {int(x): p for p, x in enumerate(lst[row], 1)}
                rank[row] = [pos.get(int(x), self.k + 1) for x in items[row]]
            rrf += np.where(rank <= self.k, 1.0 / (RRF_K + rank), 0.0)
            cols += [score, np.log1p(rank)]
        return np.stack([*cols, rrf * 100], axis=-1).astype(np.float32)
