"""Inference helpers of the CTR rankers and the two-tower model: what loading, evaluating and serving need.

build_ranker(kind, schema)          dlrm | wide-deep | lr module for a feature schema
DenseScaler                         the dense columns' standardisation (fitted on training rows)
FactoredWideDeep                    Wide & Deep logits with the catalog's side of the first layer precomputed
predict(model, rows)                click probabilities;  ctr_metrics(rows, probs): AUC, logloss, list metrics
item_vectors / user_vectors         the two towers' outputs;  two_tower_scorer: a full-catalog Scorer
No training code here: genrec/ranking/train.py holds the loops and imports these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from genrec.data.sequences import Split
from genrec.evaluation.metrics import auc, list_metrics, logloss
from genrec.features.jagged import Rows, SparseColumns
from genrec.features.ranking import RankingFeaturizer, Requests
from genrec.models.dlrm import DLRM, DLRMConfig
from genrec.models.sparse import FeatureSchema
from genrec.models.two_tower import TwoTower
from genrec.models.wide_deep import LinearModel, WideDeep, WideDeepConfig

RANKERS = ("dlrm", "wide-deep", "lr")


@dataclass
class DenseScaler:
    """Per-column standardisation of the dense matrix, statistics from the training rows only."""

    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def fit(self, x: np.ndarray) -> DenseScaler:
        self.mean = x.mean(0).tolist()
        self.std = np.where(x.std(0) > 1e-8, x.std(0), 1.0).tolist()
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)


@dataclass
class _SidePart:
    """One side's share of the first deep layer and the wide part, all as (., H + 1) matrices (column H: wide)."""

    mean: np.ndarray  # (F_side,) the scaler's statistics of the side's dense columns
    std: np.ndarray
    dense_w: torch.Tensor  # (F_side, H + 1)
    tables: list[tuple[str, torch.Tensor, str]]  # (key, (rows, H + 1) projected table, pooling)


class FactoredWideDeep:
    """Wide & Deep logits of (request, candidate) rows, computed side by side instead of row by row.

    The first deep layer and the wide part are linear in a row's inputs, and a row is [item side, request
    side, pair side] (RankingFeaturizer.sides). So W1 x + b1 = W1_item x_item + W1_req x_req + W1_pair x_pair
    + b1, and for an embedded id W1_k e_k is a row of the projected table E_k W1_k^T (mean pooling commutes
    with it). The item term is precomputed for the whole catalog, the request term is one lookup per id per
    request, and per row only the pair term is left (a few dense columns and the wide crosses). The logits
    equal model(rows) up to float rounding (tested). `of` returns None (use the row path) where the model has
    another shape (DLRM, LR, a scaler without mean/std) or the projected tables would pass `max_floats`."""

    def __init__(self, model: WideDeep, scaler: DenseScaler, feat: RankingFeaturizer) -> None:
        self.model, self.feat = model.eval(), feat
        schema, d = model.config.schema, model.config.dim
        col = {n: j for j, n in enumerate(schema.dense)}
        block = {k: len(schema.dense) + i * d for i, k in enumerate(model.deep_keys)}
        spec = {f: t for t in schema.tables for f in t.features}
        mean, std = np.asarray(scaler.mean), np.asarray(scaler.std)
        with torch.no_grad():
            w1 = model.deep[0].weight.detach()  # (H, F + d * deep keys)
            wd = model.wide.dense.weight.detach()[0]  # (F,)
            self.parts: dict[str, _SidePart] = {}
            for side, (keys, names) in feat.sides().items():
                idx = [col[n] for n in names]
                tables = []
                for k in keys:
                    t = spec[k]
                    wide = model.wide.ebc.embedding_bags[t.name].weight.detach()  # (rows, 1)
                    if k in block:
                        e = model.deep_ebc.embedding_bags[t.name].weight.detach()  # (rows, d)
                        wide = torch.cat([e @ w1[:, block[k] : block[k] + d].T, wide], 1)
                    tables.append((k, wide.contiguous(), t.pooling))
                dense_w = torch.cat([w1[:, idx].T, wd[idx, None]], 1).contiguous()
                self.parts[side] = _SidePart(mean[idx], std[idx], dense_w, tables)
            dense, sp = feat.item_columns(np.arange(feat.t.num_items + 1))
            bias = torch.cat([model.deep[0].bias.detach(), model.wide.dense.bias.detach()])
            self.items = self._side("item", dense, sp) + bias  # (N + 1, H + 1)
            self.parts["item"].tables.clear()  # folded into self.items

    @staticmethod
    def size(model: WideDeep, feat: RankingFeaturizer) -> int:
        """Floats the projected tables and the item table would hold."""
        h = model.deep[0].out_features + 1
        rows = {f: t.num_embeddings for t in model.config.schema.tables for f in t.features}
        request = feat.sides()["request"][0]
        return h * (feat.t.num_items + 1 + sum(rows[k] for k in request if k in model.deep_keys))

    @classmethod
    def of(
        cls, model: nn.Module, scaler: Any, feat: RankingFeaturizer, max_floats: int = 1 << 26
    ) -> FactoredWideDeep | None:
        if not isinstance(model, WideDeep) or model.deep is None or not hasattr(scaler, "mean"):
            return None
        sides = feat.sides()
        keys = [k for ks, _ in sides.values() for k in ks]
        names = [n for _, ns in sides.values() for n in ns]
        schema = model.config.schema
        if sorted(keys) != sorted(schema.sparse_keys()) or sorted(names) != sorted(schema.dense):
            return None
        if any(k in model.deep_keys for k in sides["pair"][0]):  # pair ids in the deep part: not factored
            return None
        if cls.size(model, feat) > max_floats:
            return None  # a catalog this large: the (N, H) tables would cost more memory than they save time
        return cls(model, scaler, feat)

    def _side(self, side: str, dense: np.ndarray, sp: SparseColumns) -> torch.Tensor:
        """(n, H + 1): one side's first-layer (columns :H) and wide (column H) contributions."""
        p = self.parts[side]
        x = torch.from_numpy(((dense - p.mean) / p.std).astype(np.float32))  # as DenseScaler.transform
        out = x @ p.dense_w
        for k, w, mode in p.tables:
            vals, offs = torch.from_numpy(sp.values[k]), torch.from_numpy(sp.offsets[k])
            bag = torch.nn.functional.embedding_bag(vals, w, offs, mode=mode, include_last_offset=True)
            if bag.shape[1] == 1:
                out[:, -1] += bag[:, 0]  # a wide-only id (a cross)
            else:
                out += bag
        return out

    @torch.no_grad()
    def logits(self, req: Requests, of: np.ndarray, cands: np.ndarray, extra: np.ndarray | None) -> torch.Tensor:
        """Row r = request of[r] x candidate cands[r] -> (R,) logits, as model(feat.request_rows(...)) gives."""
        q = self._side("request", *self.feat.request_columns(req))  # (B, H + 1)
        z = self._side("pair", *self.feat.pair_columns(req, of, cands, extra))  # (R, H + 1)
        z += self.items.index_select(0, torch.from_numpy(cands))
        z += q.index_select(0, torch.from_numpy(of))
        return self.model.deep[1:](z[:, :-1]).squeeze(-1) + z[:, -1]


def build_ranker(kind: str, schema: FeatureSchema, **kw: Any) -> nn.Module:
    """'dlrm' | 'wide-deep' | 'lr' (logistic regression = the wide part alone)."""
    if kind == "dlrm":
        return DLRM(DLRMConfig(schema, **kw))
    if kind == "wide-deep":
        return WideDeep(WideDeepConfig(schema, **kw))
    if kind == "lr":
        return LinearModel(schema)
    raise ValueError(f"unknown ranker {kind!r}: choose from {', '.join(RANKERS)}")


@torch.no_grad()
def predict(model: nn.Module, rows: Rows, batch_size: int = 4096) -> np.ndarray:
    """(R,) click probabilities."""
    model.eval()
    out = []
    for p in range(0, len(rows), batch_size):
        dense, kjt, _ = rows.batch(np.arange(p, min(p + batch_size, len(rows))))
        out.append(torch.sigmoid(model(dense, kjt)).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def ctr_metrics(rows: Rows, probs: np.ndarray) -> dict[str, float]:
    m = {"AUC": auc(rows.labels, probs), "logloss": logloss(rows.labels, probs)}
    if rows.groups is not None:
        m |= list_metrics(rows.groups, rows.labels, probs, 10)
    return m


@torch.no_grad()
def item_vectors(model: TwoTower, feat: RankingFeaturizer, batch: int = 8192) -> torch.Tensor:
    """(num_items + 1, d) item tower outputs; row 0 (padding) is zero."""
    model.eval()
    n = feat.t.num_items + 1
    out = []
    for p in range(0, n, batch):
        dense, sp = feat.item_side(np.arange(p, min(p + batch, n)))
        out.append(model.item_tower(torch.from_numpy(dense), sp.to_kjt()))
    v = torch.cat(out)
    v[0] = 0
    return v


@torch.no_grad()
def user_vectors(model: TwoTower, feat: RankingFeaturizer, users: np.ndarray, ends: np.ndarray) -> torch.Tensor:
    """(B, d) user tower outputs for histories ending (exclusive) at `ends`."""
    model.eval()
    dense, sp = feat.user_side(users, ends)
    return model.user_tower(torch.from_numpy(dense), sp.to_kjt())


def two_tower_scorer(model: TwoTower, feat: RankingFeaturizer, split: Split, which: str):
    """A Scorer for genrec.evaluation: full-catalog dot products for the batch's users at split `which`."""
    table = item_vectors(model, feat)
    drop = 2 if which == "valid" else 1
    data = split.data

    def score(batch: Any) -> torch.Tensor:
        users = batch.users.numpy()
        return user_vectors(model, feat, users, data.offsets[users + 1] - drop) @ table.T

    return score
