"""Training loops: BCE for CTR rankers on feature Rows, in-batch softmax with log-Q for the two-tower model.

fit_ctr(model, train_rows, valid_rows, cfg)   -> CTRResult (best-validation-AUC weights loaded into model)
fit_two_tower(model, featurizer, split, cfg)  -> history (best-validation-NDCG@10 weights loaded)
Both run genrec.training.loop and pick the epoch on validation data only; test rows are scored by the caller, once.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from genrec.models.two_tower import TwoTower
from genrec.ranking.inference import ctr_metrics, predict, two_tower_scorer
from genrec.training.loop import Epoch, LoopConfig, fit
from genrec.training.losses import log_q


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
