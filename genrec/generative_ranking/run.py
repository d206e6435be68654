"""Train an HSTU ranker on a dataset and keep it as a bundle (genrec/bundle.py) that serving can load.

One ranking component "hstu-ranker": model.pt (the state dict, loaded weights_only=True); its config holds the
HSTURankerConfig dict ("model"), item ids (index i <-> item_ids[i - 1]), action names, event type -> action
id, tasks and the training settings ("run"); its metrics are the held-out test metrics. history.json beside.
The ranker reads its own action data, so the bundle has no data snapshot (serving matches items by raw id).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec.bundle import BundleWriter, write_json
from genrec.data.io import ReadOptions
from genrec.evaluation.metrics import ranking_report
from genrec.generative_ranking.data import SHOP_ACTIONS, ActionSequences, load_action_dataset
from genrec.generative_ranking.examples import eval_examples, item_statistics, popularity, split_train, train_examples
from genrec.generative_ranking.train import RankTrainConfig, fit_hstu, predict_hstu
from genrec.models.hstu_ranker import HSTURanker, HSTURankerConfig


@dataclass
class RankerRunConfig:
    dataset: str = "synthetic:small"
    seed: int = 0
    max_users: int | None = None
    token_mode: str = "summed"  # the better mode in benchmarks/results/generative_ranking*.md
    attributes: bool = True
    item_stats: bool = True  # per-item log counts per task (training data) as a dense item attribute
    max_len: int = 200
    dim: int = 64
    dropout: float = 0.2
    window: int = 5  # held-out events per user (test lists)
    negatives: int = 100  # sampled negatives per test list
    train_negatives: int = 2  # per training cut
    horizon: int = 1  # positives per training cut: the next `horizon` events
    cut_every: int = 1
    epochs: int = 10
    lr: float = 3e-3
    weight_decay: float = 0.0
    batch_users: int = 16
    read: dict[str, Any] = field(default_factory=dict)  # how to read a user's file (genrec.data.io.ReadOptions)


def event_actions(data: ActionSequences) -> dict[str, int]:
    """The raw event_type string of the event log -> action id (what serving sees in live events)."""
    if data.action_names == list(SHOP_ACTIONS):
        return dict(SHOP_ACTIONS)
    if data.action_names == [f"rating{r}" for r in range(1, 6)]:
        return {str(r): r for r in range(1, 6)}
    return {name: i + 1 for i, name in enumerate(data.action_names)}


def build_ranker(data: ActionSequences, cfg: RankerRunConfig, stats: np.ndarray | None = None) -> HSTURanker:
    model = HSTURanker(
        HSTURankerConfig(
            num_items=data.num_items,
            num_actions=data.num_actions,
            num_tasks=len(data.tasks),
            attributes=data.attribute_sizes() if cfg.attributes else {},
            num_item_stats=0 if stats is None else stats.shape[1],
            token_mode=cfg.token_mode,
            max_len=cfg.max_len,
            dim=cfg.dim,
            dropout=cfg.dropout,
            use_time=data.timestamps is not None,
        )
    )
    if cfg.attributes and data.item_attributes:
        model.set_item_attributes({k: torch.from_numpy(v) for k, v in data.item_attributes.items()})
    if stats is not None:
        model.set_item_stats(torch.from_numpy(stats))
    return model


def train_ranker(cfg: RankerRunConfig, out: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Train on the data minus each user's last `window` events, evaluate on those lists, save the run."""
    data = load_action_dataset(
        cfg.dataset, seed=cfg.seed, max_users=cfg.max_users, read=ReadOptions.from_dict(cfg.read)
    )
    train, evaluated = split_train(data, cfg.window)
    pop = popularity(train)
    trx = train_examples(
        train, cfg.max_len, cfg.train_negatives, pop, cfg.seed, horizon=cfg.horizon, cut_every=cfg.cut_every
    )
    tex = eval_examples(data, evaluated, cfg.window, cfg.max_len, cfg.negatives, pop, cfg.seed + 1)
    model = build_ranker(data, cfg, item_statistics(train) if cfg.item_stats else None)
    tcfg = RankTrainConfig(
        epochs=cfg.epochs, batch_users=cfg.batch_users, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed
    )
    history = fit_hstu(model, trx, tcfg, quiet=quiet)
    metrics = ranking_report(data.tasks, tex.labels, predict_hstu(model, tex), tex.cand_user())
    save_ranker(out, model, data, {"run": asdict(cfg)}, metrics)
    write_json(history, Path(out) / "history.json")
    return metrics


def save_ranker(
    out: str | Path, model: HSTURanker, data: ActionSequences, extra: dict[str, Any], metrics: dict[str, Any]
) -> Path:
    config = {
        "model": model.config.to_dict(),
        "dataset": data.name,
        "item_ids": data.item_vocab.ids,
        "action_names": data.action_names,
        "event_actions": event_actions(data),
        "tasks": data.tasks,
        **extra,
    }
    writer = BundleWriter(out, None, data_name=data.name)
    writer.add_component("hstu-ranker", "hstu-ranker", "ranking", config, model.state_dict(), metrics)
    writer.set_metrics(metrics)
    writer.commit()
    return Path(out)
