"""Next-item training on the loop core (genrec/training/loop.py): train_epoch is the task's epoch, validation
is full-catalog NDCG@10 (max), the loop does patience, EMA, the time budget, atomic last.pt and resume.

The run folder (RUN_DIR) becomes a one-component bundle (genrec/bundle.py) when training finishes: the best
model, its vocabularies, the data snapshot and the metrics, loadable with genrec.bundle.load_sequential.
Beside the bundle, for resume and for people:
    last.pt            model + optimizer + history + run config, rewritten atomically after each epoch (resume)
    best.pt            weights of the best validation epoch while training (moved into the bundle at the end)
    history.json       per-epoch loss, sequences/s, validation metrics
    curves.png         training loss and validation NDCG@10
    metrics.json       test metrics of the best model and of the popularity baseline (also the manifest's metrics)
A refit (fit="train+valid", `genrec train --refit-from RUN`) retrains RUN's settings on train + validation
events for the epochs RUN's validation chose, with no per-epoch validation; its last epoch is the final model.
Every epoch reseeds from (seed, epoch), so a resumed run replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from genrec.bundle import (
    ATTRIBUTES_FILE,
    SEQUENTIAL_KINDS,
    Bundle,
    BundleWriter,
    atomic_save,
    json_bytes,
    load_checkpoint,
    write_json,
)
from genrec.data.batches import train_batches
from genrec.data.datasets import Dataset, load_dataset
from genrec.data.io import ReadOptions
from genrec.data.sequences import Split, leave_one_out
from genrec.evaluation.evaluate import estimate_eval_seconds, evaluate_model, evaluate_popularity, model_scorer
from genrec.memory import keep_freed_memory
from genrec.models import SequentialModel, build_model
from genrec.runtime import flush_denormals, setup
from genrec.training.loop import Epoch, LoopConfig, fit
from genrec.training.losses import next_item_loss

LR_FLOOR = 0.02
SCHEDULES = ("constant", "cosine")
FITS = ("train", "train+valid")
# validation's cost is users x catalog scores (~4 ms a user at 147k items, 1 thread): beyond this many per
# validation a fixed sample of users is scored (ML-1M and Amazon Beauty: every user; a 200k-item catalog:
# 3,000 users, over which NDCG@10 ~0.05 has a standard error of about 0.003)
VALID_SCORES = 500_000_000
MIN_VALID_USERS = 3_000


@dataclass
class TrainConfig:
    model: str = "hstu"
    dataset: str = "synthetic"
    out: str = "runs/quickstart"
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    loss: str = "sampled"
    num_negatives: int = 128
    shared_negatives: bool = False  # one negative set for the whole batch (cheaper, learns worse: see losses.md)
    # model overrides; None = the model preset's value (the same for every dataset; `--model auto` tunes them)
    max_len: int | None = None
    dim: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    dropout: float | None = None
    temperature: float | None = None
    id_dropout: float | None = None  # with item_attributes: share of items trained on their attributes alone
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    crop: str = "last"
    seed: int = 42
    threads: int | None = None
    device: str = "auto"
    time_budget_s: float | None = None  # stop after this much training time (best checkpoint is kept)
    eval_batch_size: int = 256
    # users scored per validation (a fixed sample; the test split scores all); None: valid_users() chooses
    valid_users: int | None = None
    # an epoch trains a random sample of this many users (another each epoch); None: every user. A tuner's
    # trials on a big log use it so that a trial's slice holds several validated epochs
    epoch_users: int | None = None
    precision: str = "fp32"  # "bf16": autocast matmuls and attention to bfloat16 (weights and eval stay fp32)
    # "cosine": lr decays to LR_FLOOR x lr over the run, measured in time when time_budget_s is set, else in epochs;
    # the best epoch then lands near the declared end instead of wherever a constant lr plateaus
    schedule: str = "constant"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # "train+valid": a final refit whose settings (epochs included) were chosen on validation by another run
    fit: str = "train"
    item_attributes: bool = False  # add the catalog's categorical / multi-valued attributes to item vectors
    ema: float = 0.0  # > 0: validate and save an exponential moving average of the weights with this decay per step
    refit_of: str | None = None  # the run whose validation chose this refit's settings
    stop_epoch: int | None = None  # train epochs 1..stop_epoch of an `epochs`-long schedule (a refit's best epoch)
    read: dict[str, Any] = field(default_factory=dict)  # how to read a user's file (genrec.data.io.ReadOptions)
    # the event type of each input event (view, cart, ...) as an input token, next to the item; None: on when the
    # data has event types (validation NDCG@10 on the synthetic shop: hstu x1.09, sasrec x1.06)
    event_inputs: bool | None = None
    # which event types are prediction targets (training, validation and test); None: every event
    target_events: list[str] | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.fit not in FITS:
            raise ValueError(f"unknown fit {self.fit!r}; choose from {', '.join(FITS)}")
        if self.id_dropout is not None and not (0 <= self.id_dropout < 1 and self.item_attributes):
            raise ValueError(f"--id-dropout {self.id_dropout}: needs --item-attributes and a value in [0, 1)")

    def model_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        for k in ("max_len", "dim", "num_layers", "num_heads", "dropout", "temperature", "id_dropout"):
            if getattr(self, k) is not None:
                kw[k] = getattr(self, k)
        kw.setdefault("max_len", 200)
        return {**kw, **self.model_overrides}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def lr_factor(cfg: TrainConfig, epoch: int, epoch_fraction: float, elapsed: float) -> float:
    """Multiplier of cfg.lr at this point of the run; elapsed = seconds so far (training + validation)."""
    if cfg.schedule == "constant":
        return 1.0
    progress = elapsed / cfg.time_budget_s if cfg.time_budget_s else (epoch - 1 + epoch_fraction) / cfg.epochs
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def refit_config(source: str | Path, out: str | Path, threads: int | None = None) -> TrainConfig:
    """The settings of a finished run, to retrain on train + validation for the epochs its validation chose."""
    src = Path(source)
    comp = Bundle.open(src).component(kinds=SEQUENTIAL_KINDS)  # BundleError: not a finished `genrec train` run
    if comp.kind == "ensemble":
        raise ValueError(
            f"{src} is an ensemble: its weights were chosen on the validation events a refit trains on; refit a single run"
        )
    meta = dict(comp.config["train"])
    if meta.get("fit", "train") != "train":
        raise ValueError(f"{src} is itself a refit; refit from the run that was validated")
    if meta.get("schedule") == "cosine" and meta["time_budget_s"]:
        raise ValueError(
            f"{src} decays its lr over wall time, which a refit cannot replay; "
            "validate with --schedule cosine over --epochs instead"
        )
    best_epoch = comp.metrics["best_epoch"]
    meta.update(
        out=str(out), fit="train+valid", refit_of=str(src), time_budget_s=None, threads=threads or meta["threads"],
        betas=tuple(meta["betas"]),
        stop_epoch=best_epoch,  # an epoch-based cosine keeps its horizon and stops there too
    )  # fmt: skip
    return TrainConfig(**meta)


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict[str, Any]]
    best_epoch: int
    best_valid: dict[str, float]
    test: dict[str, float]
    popularity_test: dict[str, float]
    train_seconds: float


def plot_curves(history: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [h["loss"] for h in history], marker="o", ms=3)
    a.set(xlabel="epoch", ylabel="training loss", title="loss")
    scored = [h for h in history if h["valid"]]  # a refit has no validation
    b.plot([h["epoch"] for h in scored], [h["valid"]["NDCG@10"] for h in scored], marker="o", ms=3, label="NDCG@10")
    b.plot([h["epoch"] for h in scored], [h["valid"]["HR@10"] for h in scored], marker="o", ms=3, label="HR@10")
    b.set(xlabel="epoch", title="validation (full catalog)" if scored else "refit on train + valid: no validation")
    if scored:
        b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_epoch(
    model: SequentialModel, opt: torch.optim.Optimizer, split: Split, cfg: TrainConfig, device: torch.device, ep: Epoch
) -> dict[str, float]:
    """One epoch of next-item training, reseeded from (seed, epoch); ep.step updates the EMA and the bar."""
    model.train()
    seed = cfg.seed * 100_003 + ep.number
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    c = model.config
    n_users = int((np.diff(split.train_offsets) >= 2).sum())
    if cfg.epoch_users:
        n_users = min(n_users, cfg.epoch_users)
    ep.start(total=n_users, unit="seq")
    n_tok = 0
    for batch in train_batches(split, cfg.batch_size, c.max_len, seed, cfg.crop, max_users=cfg.epoch_users):
        batch = batch.to(device)
        factor = lr_factor(cfg, ep.number, ep.count / max(n_users, 1), ep.elapsed + ep.seconds())
        for group in opt.param_groups:
            group["lr"] = cfg.lr * factor
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            states = model.encode(batch.items, batch.offsets, batch.timestamps, batch.events)  # (sum N, D)
            loss = next_item_loss(
                states,
                batch.targets,
                model.item_table() if cfg.loss == "full" else model.item_rows,  # sampled: only the rows used
                c.temperature,
                cfg.loss,
                cfg.num_negatives,
                generator=gen,
                offsets=None if cfg.shared_negatives else batch.offsets,
                mask=batch.target_mask,
                num_items=c.num_items,
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ep.step(batch.num_sequences, loss=loss.item())
        n_tok += len(batch.items)
        if ep.time_left() <= 0:  # the budget ends inside this epoch: validate what it trained so far
            break
    secs = ep.seconds()
    return {
        "loss": ep.mean("loss"),
        "seconds": secs,
        "seq_per_s": ep.count / secs,
        "tok_per_s": n_tok / secs,
        "lr": opt.param_groups[0]["lr"],
        "fraction": round(ep.count / max(n_users, 1), 4),  # < 1: the epoch was cut by the time budget
    }


def valid_users(cfg: TrainConfig, users: int, items: int) -> int:
    """How many users validation scores: cfg.valid_users, else all of them up to VALID_SCORES full-catalog scores
    per validation (a 100k-item catalog: 5,000 users), never fewer than MIN_VALID_USERS."""
    if cfg.valid_users:
        return min(cfg.valid_users, users)
    return min(users, max(MIN_VALID_USERS, VALID_SCORES // max(items, 1)))


class RunCheck:
    """Saved in last.pt beside the optimizer: a resume refuses another run's checkpoint (model, data or fit)."""

    def __init__(self, run: Path, meta: dict[str, Any]) -> None:
        self.run, self.meta = run, meta

    def state_dict(self) -> dict[str, str]:
        return {"meta_json": json.dumps(self.meta)}

    def load_state_dict(self, state: dict[str, str]) -> None:
        old, new = json.loads(state["meta_json"]), self.meta
        if (
            old["model"] != new["model"]
            or old["dataset"] != new["dataset"]
            or old["train"]["fit"] != new["train"]["fit"]
        ):
            raise SystemExit(
                f"{self.run} holds a different run (model, dataset or fit differ); use --restart or another --out"
            )


def prepare(cfg: TrainConfig, dataset: Dataset | None = None) -> tuple[Dataset, Split, SequentialModel]:
    ds = dataset or load_dataset(cfg.dataset, seed=cfg.seed, read=ReadOptions.from_dict(cfg.read))
    targets = list(cfg.target_events) if cfg.target_events else None
    split = leave_one_out(ds.sequences, valid_in_train=cfg.fit == "train+valid", target_events=targets)
    torch.manual_seed(cfg.seed)
    return ds, split, new_model(cfg, ds, split)


def new_model(cfg: TrainConfig, ds: Dataset, split: Split) -> SequentialModel:
    """cfg's model for ds, initialised (from the torch seed as it stands), with the catalog's attributes set."""
    kwargs = cfg.model_kwargs()
    event_vocab = ds.sequences.event_vocab
    if cfg.event_inputs and event_vocab is None:
        raise ValueError(f"--event-inputs needs an event_type column; {cfg.dataset} has none")
    if event_vocab is not None and cfg.event_inputs is not False:
        kwargs["num_event_types"] = len(event_vocab)
    tokens = None
    if cfg.item_attributes:
        from genrec.features.tables import item_attribute_tokens

        tokens, tokenizer = item_attribute_tokens(ds, split)
        kwargs.update(num_attribute_tokens=tokenizer.size, attributes_per_item=tokens.shape[1])
    model = build_model(cfg.model, ds.sequences.num_items, **kwargs)
    if tokens is not None:
        model.set_item_attributes(torch.from_numpy(tokens))
        # catalog items without training events: vectors from their attributes alone
        trained = np.bincount(split.train_items, minlength=ds.sequences.num_items + 1) > 0
        model.freeze_untrained_ids(torch.from_numpy(trained))
    return model


def train(
    cfg: TrainConfig,
    dataset: Dataset | None = None,
    console: Console | None = None,
    restart: bool = False,
    on_epoch: Callable[[list[dict[str, Any]]], bool | None] | None = None,
    started: float | None = None,
    score_test: bool = True,
) -> RunResult:
    """Train cfg.model on cfg.dataset into the run folder cfg.out (resuming its last.pt unless `restart`).
    on_epoch(history): after each epoch; True stops the run there (a tuner pruning a trial).
    started: the time.perf_counter() the time budget counts from (a CLI's start); default: this call's.
    score_test=False (a tuning trial): best.pt stays in the folder, the test split unscored, no bundle written."""
    t_start = time.perf_counter() if started is None else started
    console = console or Console()
    setup(cfg.threads)
    keep_freed_memory()  # each step reuses the last step's blocks without page faults (genrec/memory.py)
    device = resolve_device(cfg.device)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    ds, split, model = prepare(cfg, dataset)
    model.to(device)
    # fused: one kernel per parameter instead of a dozen small ops (-0.6 ms of a ~75 ms hstu step on CPU, measured);
    # None (torch's choice) on devices without a fused AdamW
    fused = True if device.type in ("cpu", "cuda") else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused)
    meta = {"train": asdict(cfg), "model": model.config.to_dict(), "dataset": ds.sequences.summary()}
    n_params = sum(p.numel() for p in model.parameters())
    console.print(
        f"[bold]{cfg.model}[/] on {ds.sequences.name}: {ds.sequences.num_users:,} users, "
        f"{ds.sequences.num_items:,} items, {len(ds.sequences.items):,} events; {n_params:,} parameters on {device}"
    )

    valid_split = split
    if not split.valid_in_train:
        n_valid = valid_users(cfg, len(split.eval_users), ds.sequences.num_items)
        valid_split = split.sample_users(n_valid, cfg.seed)
        if n_valid < len(split.eval_users):
            console.print(f"validation on a fixed sample of {n_valid:,} of the {len(split.eval_users):,} users "
                          "(the test split: all of them)")  # fmt: skip

    def validate() -> dict[str, float]:
        return evaluate_model(model, valid_split, "valid", cfg.eval_batch_size, str(device), cfg.precision)

    def estimate_eval() -> float:
        return estimate_eval_seconds(model_scorer(model, cfg.precision), valid_split, "valid",
                                     model.config.max_len, cfg.eval_batch_size, str(device))  # fmt: skip

    def save_best(epoch: int) -> None:  # inside the loop's EMA context: the averaged weights when --ema
        atomic_save({"model": model.state_dict(), "epoch": epoch}, run / "best.pt")

    def after_epoch(history: list[dict[str, Any]]) -> bool:
        write_json(history, run / "history.json")
        plot_curves(history, run / "curves.png", f"{cfg.model} on {ds.sequences.name}")
        return bool(on_epoch(history)) if on_epoch is not None else False

    def describe(rec: dict[str, Any]) -> str:
        v = rec["valid"]
        scores = f"valid NDCG@10 {v['NDCG@10']:.4f} HR@10 {v['HR@10']:.4f}" if v else "refit"
        return f"loss {rec['loss']:.4f}  {rec['seq_per_s']:7.0f} seq/s  {scores}"

    refit = split.valid_in_train  # a refit has no validation: its last epoch is the final model
    budget = cfg.time_budget_s - (time.perf_counter() - t_start) if cfg.time_budget_s is not None else None
    loop = LoopConfig(
        epochs=cfg.stop_epoch or cfg.epochs,
        metric=None if refit else "NDCG@10",
        patience=cfg.patience,
        time_budget_s=budget,  # what is left of it after loading: the budget holds for the whole command
        ema=cfg.ema,
        # the test split is scored after the loop: one validation's time per validated user it scores
        reserve_evals=len(split.eval_users) / max(len(valid_split.eval_users), 1) if score_test and not refit else 0,
    )
    with flush_denormals():
        res = fit(
            model,
            lambda ep: train_epoch(model, opt, split, cfg, device, ep),
            loop,
            None if refit else validate,
            state={"run": RunCheck(run, meta), "optimizer": opt},
            checkpoint=run / "last.pt",
            resume=not restart,
            keep_best=False,  # best.pt holds them; finish() loads it
            on_best=save_best,
            on_epoch=after_epoch,
            describe=describe,
            console=console,
            estimate_eval=None if refit else estimate_eval,
        )
    history, best_epoch, elapsed = res.history, res.best_epoch, res.elapsed
    if not score_test:
        best_valid = next((h["valid"] or {} for h in history if h["epoch"] == best_epoch), {})
        return RunResult(run, history, best_epoch, best_valid, {}, {}, elapsed)
    return finish(run, ds, split, model, history, best_epoch, elapsed, cfg, device, console)


def finish(
    run: Path,
    ds: Dataset,
    split: Split,
    model: SequentialModel,
    history: list[dict[str, Any]],
    best_epoch: int,
    elapsed: float,
    cfg: TrainConfig,
    device: torch.device,
    console: Console,
) -> RunResult:
    """Score the best checkpoint on the test split once, with the popularity baseline beside it; write the bundle."""
    best = run / "best.pt"
    if best.exists():
        model.load_state_dict(load_checkpoint(best)["model"])
    else:  # resumed after it had finished: the best weights are already in the bundle
        model.load_state_dict(Bundle.open(run).state_dict(cfg.model))
    best_valid = next((h["valid"] or {} for h in history if h["epoch"] == best_epoch), {})
    res = publish(run, ds, split, model, cfg, history, best_epoch, best_valid, elapsed, device)
    best.unlink(missing_ok=True)
    return res


def publish(
    run: Path,
    ds: Dataset,
    split: Split,
    model: SequentialModel,
    cfg: TrainConfig,
    history: list[dict[str, Any]],
    best_epoch: int,
    best_valid: dict[str, float],
    elapsed: float,
    device: torch.device,
    extra_config: dict[str, Any] | None = None,
) -> RunResult:
    """Score `model` (its final weights) on the test split once, with popularity beside it; write the bundle with
    it as the one retrieval component (named by its kind: cfg.model, or "ensemble")."""
    from genrec.models.ensemble import Ensemble

    kind = "ensemble" if isinstance(model, Ensemble) else cfg.model
    test = evaluate_model(model, split, "test", cfg.eval_batch_size, str(device))
    pop = evaluate_popularity(split, "test")
    metrics = {
        "dataset": split.data.name,
        "model": kind,
        "split": "test",
        "metrics": test,
        "popularity": pop,
        "best_epoch": best_epoch,
        "best_valid": best_valid,
        "fit": cfg.fit,
        "refit_of": cfg.refit_of,
        "epochs": len(history),
        "train_seconds": elapsed,
    }
    write_json(metrics, run / "metrics.json")
    writer = BundleWriter(run, ds, command=sys.argv, data_name=cfg.dataset)
    config = {"model": model.config.to_dict(), "train": asdict(cfg), **(extra_config or {})}
    extra = {}
    if cfg.item_attributes and kind != "ensemble":  # what tokenizes the catalog row of an item added after training
        from genrec.features.tables import item_attribute_tokens

        extra[ATTRIBUTES_FILE] = json_bytes(item_attribute_tokens(ds, split)[1].to_dict())
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    writer.add_component(kind, kind, "retrieval", config, state, metrics, extra_files=extra)
    writer.set_metrics(metrics)
    writer.commit()
    return RunResult(run, history, best_epoch, best_valid, test, pop, elapsed)
