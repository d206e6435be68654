"""Baselines scored on exactly the HSTU ranker's candidates and labels.

popularity   per task, a logistic model on log(1 + how often the item earned that task's label in training):
             "popularity by action" (how often an item is bought, not just seen), calibrated so logloss means
             something. 2 parameters per task.
dlrm-style   hand-built features of (history up to the cut, candidate) -> DLRM (dot interaction) with one
             logit per task. Features: the candidate item and its attributes, a mean bag of the last
             `window` history items and one bag per action (items the user viewed / carted / bought, or rated 1..5),
             dense: log history length, log hours since the last event, log counts of the candidate among the last
             `window` events per action (re-visits / re-purchases), and the candidate's log popularity per task.
per task     genrec.models.dlrm.DLRM / genrec.models.wide_deep.WideDeep on the same features as a torchrec
             KeyedJaggedTensor, one single-logit model per task (see fit_per_task).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from torch import nn

from genrec.generative_ranking.data import ActionSequences
from genrec.generative_ranking.examples import Examples
from genrec.generative_ranking.train import multitask_loss
from genrec.models.dlrm import dot_interaction
from genrec.models.sparse import mlp
from genrec.training.loop import Epoch, LoopConfig, fit

# ---------------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------------


@dataclass
class Features:
    cand: np.ndarray  # (R,) candidate item
    attrs: np.ndarray  # (R, num_attributes) candidate attribute codes
    window: np.ndarray  # (R, W) last W history items before the cut, 0 = none
    window_actions: np.ndarray  # (R, W) their actions, 0 = none
    dense: np.ndarray  # (R, num_dense) float32
    dense_names: list[str]

    def __len__(self) -> int:
        return len(self.cand)


def task_counts(train: ActionSequences) -> np.ndarray:
    """(num_items + 1, T): how often each item earned each task's label in the training tokens."""
    out = np.zeros((train.num_items + 1, len(train.tasks)))
    labels = np.nan_to_num(train.task_labels[train.actions])
    np.add.at(out, train.items, labels)
    return out


def featurize(ex: Examples, data: ActionSequences, counts: np.ndarray, window: int = 20) -> Features:
    """Per candidate row: the features listed in the module doc. counts: task_counts of the TRAINING data."""
    R = ex.num_candidates
    user = ex.cand_user()
    base = ex.hist_offsets[user] + ex.cand_cuts  # one past the last visible history event
    lag = np.arange(1, window + 1)
    pos = base[:, None] - lag  # (R, W), most recent first
    ok = pos >= ex.hist_offsets[user][:, None]
    pos = np.where(ok, pos, 0)
    win = np.where(ok, ex.hist_items[pos], 0)
    act = np.where(ok, ex.hist_actions[pos], 0)
    A = data.num_actions
    dense = [np.log1p(ex.cand_cuts)]
    names = ["log_history_len"]
    last = np.where(ex.cand_cuts > 0, ex.hist_times[np.maximum(base - 1, 0)], ex.cand_times)
    dense.append(np.log1p(np.maximum(ex.cand_times - last, 0) / 3600.0))
    names.append("log_hours_since_last")
    same = win == ex.cand_items[:, None]
    for a in range(1, A + 1):
        dense.append(np.log1p((same & (act == a)).sum(1)))
        names.append(f"log_recent_{data.action_names[a - 1]}_of_item")
    for t, name in enumerate(data.tasks):
        dense.append(np.log1p(counts[ex.cand_items, t]))
        names.append(f"log_item_{name}_count")
    attrs = [data.item_attributes[k][ex.cand_items] for k in data.item_attributes]
    return Features(
        cand=ex.cand_items,
        attrs=np.stack(attrs, 1) if attrs else np.zeros((R, 0), np.int64),
        window=win,
        window_actions=act,
        dense=np.stack(dense, 1).astype(np.float32),
        dense_names=names,
    )


# ---------------------------------------------------------------------------------------------------
# popularity by action
# ---------------------------------------------------------------------------------------------------


class PopularityByAction(nn.Module):
    """logit_t = a_t * log(1 + count_t(item)) + b_t with a_t > 0: the ranking is by count, always (a fit that
    would prefer a negative slope only flattens the calibration)."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(num_tasks))
        self.b = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, log_counts: torch.Tensor) -> torch.Tensor:  # (R, T) -> (R, T)
        return (nn.functional.softplus(self.a) + 1e-3) * log_counts + self.b


def fit_popularity(train_counts: np.ndarray, train: Examples, steps: int = 200) -> PopularityByAction:
    x = torch.from_numpy(np.log1p(train_counts[train.cand_items])).float()
    y = torch.from_numpy(train.labels)
    model = PopularityByAction(x.shape[1])
    opt = torch.optim.LBFGS(model.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = multitask_loss(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    return model


@torch.no_grad()
def predict_popularity(model: PopularityByAction, counts: np.ndarray, ex: Examples) -> np.ndarray:
    return torch.sigmoid(model(torch.from_numpy(np.log1p(counts[ex.cand_items])).float())).numpy()


# ---------------------------------------------------------------------------------------------------
# DLRM-style multi-task feature model
# ---------------------------------------------------------------------------------------------------


@dataclass
class DLRMStyleConfig:
    num_items: int
    num_actions: int
    num_tasks: int
    num_dense: int
    attributes: list[int]  # table size per attribute column
    dim: int = 32
    bottom: tuple[int, ...] = (64,)
    top: tuple[int, ...] = (128, 64)


class DLRMStyle(nn.Module):
    """Bottom MLP(dense); embeddings of candidate, attributes, history bag, per-action bags; pairwise dots;
    top MLP -> (R, T) logits. The DLRM of genrec.models.dlrm (its MLP and dot interaction) with one logit per
    task, over plain embedding tables of the window arrays instead of a KeyedJaggedTensor."""

    def __init__(self, c: DLRMStyleConfig) -> None:
        super().__init__()
        self.c = c
        self.item = nn.Embedding(c.num_items + 1, c.dim, padding_idx=0)
        self.attrs = nn.ModuleList(nn.Embedding(n, c.dim, padding_idx=0) for n in c.attributes)
        self.bottom = mlp([c.num_dense, *c.bottom, c.dim], final_activation=True)
        f = 1 + 1 + len(c.attributes) + 1 + c.num_actions  # dense, cand, attrs, bag, per-action bags
        self.top = mlp([c.dim + f * (f - 1) // 2, *c.top, c.num_tasks], final_activation=False)
        nn.init.normal_(self.item.weight, std=0.05)
        for e in self.attrs:
            nn.init.normal_(e.weight, std=0.05)

    def forward(
        self, dense: torch.Tensor, cand: torch.Tensor, attrs: torch.Tensor, win: torch.Tensor, act: torch.Tensor
    ):
        """dense (R, F), cand (R,), attrs (R, A), win / act (R, W) -> (R, T) logits."""
        e = self.item(win)  # (R, W, d), zero rows for padding
        vecs = [self.bottom(dense), self.item(cand)]
        vecs += [emb(attrs[:, i]) for i, emb in enumerate(self.attrs)]
        present = (win > 0).float()
        vecs.append((e * present[..., None]).sum(1) / present.sum(1, keepdim=True).clamp(min=1))
        for a in range(1, self.c.num_actions + 1):
            m = (act == a).float()
            vecs.append((e * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1))
        return self.top(dot_interaction(vecs[0], torch.stack(vecs[1:], 1)))  # vecs[1:]: (R, F - 1, d)


class DenseScaler:
    """Standardise dense features with training mean / std."""

    def __init__(self, x: np.ndarray) -> None:
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def _tensors(f: Features, scaler: DenseScaler, rows: np.ndarray | slice) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(scaler(f.dense[rows])),
        torch.from_numpy(f.cand[rows]),
        torch.from_numpy(f.attrs[rows]),
        torch.from_numpy(f.window[rows]),
        torch.from_numpy(f.window_actions[rows]),
    )


def fit_dlrm_style(
    data: ActionSequences,
    train: Features,
    labels: np.ndarray,
    epochs: int = 3,
    batch: int = 512,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[DLRMStyle, DenseScaler, float]:
    """Returns the model, its dense scaler and the training seconds."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scaler = DenseScaler(train.dense)
    sizes = [int(data.item_attributes[k].max()) + 1 for k in data.item_attributes]
    model = DLRMStyle(DLRMStyleConfig(data.num_items, data.num_actions, len(data.tasks), train.dense.shape[1], sizes))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    y = torch.from_numpy(labels)

    def train_epoch(ep: Epoch) -> dict[str, float]:
        order = rng.permutation(len(train))
        ep.start(total=len(order), unit="rows")
        for s in range(0, len(order), batch):
            rows = order[s : s + batch]
            loss = multitask_loss(model(*_tensors(train, scaler, rows)), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ep.step(len(rows), loss=loss.item())
        return {"loss": ep.mean("loss")}

    res = fit(model, train_epoch, LoopConfig(epochs), console=Console(quiet=True))
    model.eval()
    return model, scaler, res.elapsed


@torch.no_grad()
def predict_dlrm_style(model: DLRMStyle, scaler: DenseScaler, f: Features, batch: int = 4096) -> np.ndarray:
    out = [torch.sigmoid(model(*_tensors(f, scaler, slice(s, s + batch)))).numpy() for s in range(0, len(f), batch)]
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------------
# genrec.models' DLRM and Wide & Deep, one single-logit model per task
# ---------------------------------------------------------------------------------------------------

PER_TASK_KINDS = ("dlrm", "wide-deep")


def _schema(data: ActionSequences, f: Features):  # noqa: ANN202
    from genrec.features.schema import FeatureSchema, TableSpec

    bags = ["hist"] + [f"hist_{n}" for n in data.action_names]
    tables = [TableSpec("t_item", data.num_items + 1, ["cand_item", *bags], pooling="mean")]
    tables += [TableSpec(f"t_{k}", int(v.max()) + 1, [k]) for k, v in data.item_attributes.items()]
    return FeatureSchema(dense=list(f.dense_names), tables=tables), bags


def _kjt(data: ActionSequences, f: Features, rows: np.ndarray | slice, keys: list[str]):  # noqa: ANN202
    """Features -> KeyedJaggedTensor over the rows, keys in schema order; empty bags have length 0."""
    from torchrec import KeyedJaggedTensor

    win, act = f.window[rows], f.window_actions[rows]
    cols: dict[str, np.ndarray] = {"cand_item": f.cand[rows][:, None], "hist": win}
    for a, name in enumerate(data.action_names, start=1):
        cols[f"hist_{name}"] = np.where(act == a, win, 0)
    for i, k in enumerate(data.item_attributes):
        cols[k] = f.attrs[rows][:, i : i + 1]
    values, lengths = [], []
    for k in keys:
        m = cols[k]
        keep = m > 0
        values.append(m[keep])  # row-major: each row's ids stay together, rows in order
        lengths.append(keep.sum(1))
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys,
        values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
    )


def fit_per_task(
    kind: str,
    data: ActionSequences,
    train: Features,
    labels: np.ndarray,
    epochs: int = 3,
    batch: int = 512,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[list[nn.Module], DenseScaler, list[str], float]:
    """One single-logit genrec.models DLRM / Wide & Deep per task, trained with the masked loss on that task's labels."""
    from genrec.models.dlrm import DLRM, DLRMConfig
    from genrec.models.wide_deep import WideDeep, WideDeepConfig

    schema, _ = _schema(data, train)
    keys = schema.sparse_keys()
    scaler = DenseScaler(train.dense)
    rng = np.random.default_rng(seed)
    models, t0 = [], time.perf_counter()
    for t in range(len(data.tasks)):
        torch.manual_seed(seed + t)
        model = DLRM(DLRMConfig(schema)) if kind == "dlrm" else WideDeep(WideDeepConfig(schema))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        y = torch.from_numpy(labels[:, t : t + 1])

        def train_epoch(ep: Epoch, model: nn.Module = model, opt: torch.optim.Optimizer = opt,
                        y: torch.Tensor = y) -> dict[str, float]:  # fmt: skip
            order = rng.permutation(len(train))
            ep.start(total=len(order), unit="rows")
            for s in range(0, len(order), batch):
                rows = order[s : s + batch]
                logit = model(torch.from_numpy(scaler(train.dense[rows])), _kjt(data, train, rows, keys))
                loss = multitask_loss(logit[:, None], y[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                ep.step(len(rows), loss=loss.item())
            return {"loss": ep.mean("loss")}

        fit(model, train_epoch, LoopConfig(epochs), console=Console(quiet=True))
        model.eval()
        models.append(model)
    return models, scaler, keys, time.perf_counter() - t0


@torch.no_grad()
def predict_per_task(
    models: list[nn.Module], scaler: DenseScaler, keys: list[str], data: ActionSequences, f: Features, batch: int = 4096
) -> np.ndarray:
    out = []
    for s in range(0, len(f), batch):
        rows = slice(s, s + batch)
        dense, kjt = torch.from_numpy(scaler(f.dense[rows])), _kjt(data, f, rows, keys)
        out.append(torch.stack([torch.sigmoid(m(dense, kjt)) for m in models], 1).numpy())
    return np.concatenate(out)
