"""Inference helpers of the CTR rankers and the two-tower model: what loading, evaluating and serving need.

build_ranker(kind, schema)          dlrm | wide-deep | lr module for a feature schema
DenseScaler                         the dense columns' standardisation (fitted on training rows)
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
from genrec.features.jagged import Rows
from genrec.features.ranking import RankingFeaturizer
from genrec.models.dlrm import DLRM, DLRMConfig
from genrec.models.sparse import FeatureSchema
from genrec.models.two_tower import TwoTower
from genrec.models.wide_deep import LinearModel, WideDeep, WideDeepConfig
from genrec.ranking.metrics import auc, list_metrics, logloss

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
