"""Training loops: BCE for CTR rankers on feature Rows, in-batch softmax with log-Q for the two-tower model.

fit_ctr(model, train_rows, valid_rows, cfg)   -> CTRResult (best-validation-AUC weights loaded into model)
fit_two_tower(model, featurizer, split, cfg)  -> history (best-validation-NDCG@10 weights loaded)
Both run genrec.training.loop and pick the epoch on validation data only; test rows are scored by the caller, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from genrec.data.batches import gather_windows
from genrec.data.sequences import Split
from genrec.evaluation.evaluate import evaluate_scorer
from genrec.features.jagged import Rows
from genrec.features.ranking import RankingFeaturizer
from genrec.models.dlrm import DLRM, DLRMConfig
from genrec.models.sparse import FeatureSchema
from genrec.models.two_tower import TwoTower
from genrec.models.wide_deep import LinearModel, WideDeep, WideDeepConfig
from genrec.ranking.metrics import auc, list_metrics, logloss
from genrec.training.loop import Epoch, LoopConfig, fit

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


@dataclass
class CTRConfig:
    epochs: int = 10
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3
    seed: int = 0
    select: str = "AUC"  # validation metric that picks the epoch: "AUC" or, for candidate lists, "NDCG@10"


@dataclass
class CTRResult:
    history: list[dict[str, Any]]  # genrec.training.loop records: epoch, loss, seconds, valid: {AUC, logloss, ...}
    best_epoch: int
    best_valid: dict[str, float]  # validation metrics of the best epoch


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


def fit_ctr(model: nn.Module, train: Rows, valid: Rows, cfg: CTRConfig, console: Console | None = None) -> CTRResult:
    """Mini-batch BCE with Adam (both parts of Wide & Deep too: the paper's FTRL/AdaGrad split is not used)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def train_epoch(ep: Epoch) -> dict[str, float]:
        order = rng.permutation(len(train))
        ep.start(total=len(order), unit="rows")
        for p in range(0, len(order), cfg.batch_size):
            dense, kjt, y = train.batch(np.sort(order[p : p + cfg.batch_size]))
            loss = F.binary_cross_entropy_with_logits(model(dense, kjt), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ep.step(len(y), loss=loss.item())
        return {"loss": ep.mean("loss")}

    def describe(rec: dict[str, Any]) -> str:
        v = rec["valid"]
        return f"loss {rec['loss']:.4f}  valid AUC {v['AUC']:.4f} logloss {v['logloss']:.4f}"

    loop = LoopConfig(cfg.epochs, cfg.select, "min" if cfg.select == "logloss" else "max", cfg.patience)
    res = fit(model, train_epoch, loop, lambda: ctr_metrics(valid, predict(model, valid)), describe=describe,
              console=console)  # fmt: skip
    return CTRResult(res.history, res.best_epoch, res.best_valid)


# ---- two-tower ---------------------------------------------------------------------------------------


@dataclass
class TwoTowerTrainConfig:
    epochs: int = 20
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_pairs_per_epoch: int | None = 300_000  # subsample (history, next item) pairs per epoch
    patience: int = 3
    seed: int = 0


def train_pairs(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Every (user, position) next-item pair inside the training part: history = data.items[start_u:p), target
    = data.items[p]. Training events are each user's prefix, so positions index data.items directly."""
    d = split.data
    starts = d.offsets[:-1]
    pos, off = gather_windows(starts + 1, np.maximum(starts + np.diff(split.train_offsets), starts + 1))
    return np.repeat(np.arange(d.num_users), np.diff(off)), pos


def log_q(split: Split) -> torch.Tensor:
    """(num_items + 1,) log share of training events per item (unseen items get one pseudo-count)."""
    counts = np.bincount(split.train_items, minlength=split.data.num_items + 1).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    return torch.from_numpy(np.log(counts / counts.sum())).float()


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


def fit_two_tower(
    model: TwoTower,
    feat: RankingFeaturizer,
    split: Split,
    cfg: TwoTowerTrainConfig,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    users, pos = train_pairs(split)
    lq = log_q(split)
    items = split.data.items
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def train_epoch(ep: Epoch) -> dict[str, float]:
        order = rng.permutation(len(users))[: cfg.max_pairs_per_epoch]
        ep.start(total=len(order), unit="pairs")
        for p in range(0, len(order), cfg.batch_size):
            sel = order[p : p + cfg.batch_size]
            if len(sel) < 2:
                continue
            u_dense, u_sp = feat.user_side(users[sel], pos[sel])
            tgt = items[pos[sel]]
            i_dense, i_sp = feat.item_side(tgt)
            uv = model.user_tower(torch.from_numpy(u_dense), u_sp.to_kjt())
            iv = model.item_tower(torch.from_numpy(i_dense), i_sp.to_kjt())
            t = torch.from_numpy(tgt)
            loss = model.in_batch_loss(uv, iv, t, lq[t])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ep.step(len(sel), loss=loss.item())
        return {"loss": ep.mean("loss")}

    def validate() -> dict[str, float]:
        return evaluate_scorer(two_tower_scorer(model, feat, split, "valid"), split, "valid", feat.cfg.history_len)

    def describe(rec: dict[str, Any]) -> str:
        v = rec["valid"]
        return (
            f"loss {rec['loss']:.4f}  valid NDCG@10 {v['NDCG@10']:.4f} HR@10 {v['HR@10']:.4f} HR@200 {v['HR@200']:.4f}"
        )

    loop = LoopConfig(cfg.epochs, "NDCG@10", "max", cfg.patience)
    return fit(model, train_epoch, loop, validate, describe=describe, console=console).history
