"""Training loop for next-item models: per-epoch validation, early stopping, atomic checkpoints, resume.

Run folder layout (RUN_DIR):
    config.json        training + model config, dataset summary
    vocab.json         item / user / event id vocabularies (stable ids for serving)
    last.pt            model + optimizer + history, rewritten atomically after each epoch (resume)
    best.pt            weights of the best validation epoch
    history.json       per-epoch loss, sequences/s, validation metrics
    curves.png         training loss and validation NDCG@10
    metrics.json       test metrics of the best model and of the popularity baseline (scored once)
A refit (fit="train+valid", `genrec train --refit-from RUN`) retrains RUN's settings on train + validation
events for the epochs RUN's validation chose, with no per-epoch validation; its last epoch is the final model.
Every epoch reseeds from (seed, epoch), so a resumed run replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from genrec.data.batches import train_batches
from genrec.data.datasets import Dataset, load_dataset
from genrec.data.sequences import Split, leave_one_out
from genrec.evaluation.evaluate import evaluate_model, evaluate_scorer, popularity_scorer
from genrec.memory import keep_freed_memory
from genrec.models import SequentialModel, build_model, model_from_config
from genrec.runtime import flush_denormals, setup
from genrec.training.averaging import WeightEMA
from genrec.training.losses import next_item_loss

LR_FLOOR = 0.02
SCHEDULES = ("constant", "cosine")
FITS = ("train", "train+valid")


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
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    crop: str = "last"
    seed: int = 42
    threads: int | None = None
    device: str = "auto"
    time_budget_s: float | None = None  # stop after this much training time (best checkpoint is kept)
    eval_batch_size: int = 256
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

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.fit not in FITS:
            raise ValueError(f"unknown fit {self.fit!r}; choose from {', '.join(FITS)}")

    def model_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        for k in ("max_len", "dim", "num_layers", "num_heads", "dropout", "temperature"):
            if getattr(self, k) is not None:
                kw[k] = getattr(self, k)
        kw.setdefault("max_len", 200)
        return {**kw, **self.model_overrides}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, rename: a kill never leaves a torn checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def lr_factor(cfg: TrainConfig, epoch: int, epoch_fraction: float, elapsed: float) -> float:
    """Multiplier of cfg.lr at this point of the run; elapsed = seconds so far (training + validation)."""
    if cfg.schedule == "constant":
        return 1.0
    progress = elapsed / cfg.time_budget_s if cfg.time_budget_s else (epoch - 1 + epoch_fraction) / cfg.epochs
    return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def refit_config(source: str | Path, out: str | Path, threads: int | None = None) -> TrainConfig:
    """The settings of a finished run, to retrain on train + validation for the epochs its validation chose."""
    src = Path(source)
    if not (src / "metrics.json").exists():
        raise FileNotFoundError(f"{src}/metrics.json not found: refit needs a finished `genrec train` run")
    meta = json.loads((src / "config.json").read_text())["train"]
    if meta.get("fit", "train") != "train":
        raise ValueError(f"{src} is itself a refit; refit from the run that was validated")
    if meta.get("schedule") == "cosine" and meta["time_budget_s"]:
        raise ValueError(
            f"{src} decays its lr over wall time, which a refit cannot replay; "
            "validate with --schedule cosine over --epochs instead"
        )
    best_epoch = json.loads((src / "metrics.json").read_text())["best_epoch"]
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
    model: SequentialModel,
    opt: torch.optim.Optimizer,
    split: Split,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    progress: Progress | None,
    elapsed: float = 0.0,
    ema: WeightEMA | None = None,
) -> dict[str, float]:
    model.train()
    seed = cfg.seed * 100_003 + epoch
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    c = model.config
    n_users = int((np.diff(split.train_offsets) >= 2).sum())
    task = progress.add_task(f"epoch {epoch}", total=n_users, stats="") if progress else None
    t0, total_loss, n_seq, n_tok, steps = time.perf_counter(), 0.0, 0, 0, 0
    for batch in train_batches(split, cfg.batch_size, c.max_len, seed, cfg.crop):
        batch = batch.to(device)
        factor = lr_factor(cfg, epoch, n_seq / max(n_users, 1), elapsed + time.perf_counter() - t0)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * factor
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            states = model.encode(batch.items, batch.offsets, batch.timestamps)  # (sum N, D)
            loss = next_item_loss(
                states,
                batch.targets,
                model.item_table(),
                c.temperature,
                cfg.loss,
                cfg.num_negatives,
                generator=gen,
                offsets=None if cfg.shared_negatives else batch.offsets,
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model)
        total_loss += loss.item()
        steps += 1
        n_seq += batch.num_sequences
        n_tok += len(batch.items)
        if progress is not None and task is not None:
            rate = n_seq / (time.perf_counter() - t0)
            progress.update(
                task, advance=batch.num_sequences, stats=f"loss {total_loss / steps:.4f}  {rate:,.0f} seq/s"
            )
    secs = time.perf_counter() - t0
    if progress is not None and task is not None:
        progress.remove_task(task)
    return {
        "loss": total_loss / max(steps, 1),
        "seconds": secs,
        "seq_per_s": n_seq / secs,
        "tok_per_s": n_tok / secs,
        "lr": opt.param_groups[0]["lr"],
    }


def prepare(cfg: TrainConfig, dataset: Dataset | None = None) -> tuple[Dataset, Split, SequentialModel]:
    ds = dataset or load_dataset(cfg.dataset, seed=cfg.seed)
    split = leave_one_out(ds.sequences, valid_in_train=cfg.fit == "train+valid")
    torch.manual_seed(cfg.seed)
    kwargs = cfg.model_kwargs()
    tokens = None
    if cfg.item_attributes:
        from genrec.features.tables import item_attribute_tokens

        tokens, vocab_size = item_attribute_tokens(ds, split)
        kwargs.update(num_attribute_tokens=vocab_size, attributes_per_item=tokens.shape[1])
    model = build_model(cfg.model, ds.sequences.num_items, **kwargs)
    if tokens is not None:
        model.set_item_attributes(torch.from_numpy(tokens))
    return ds, split, model


def train(
    cfg: TrainConfig,
    dataset: Dataset | None = None,
    console: Console | None = None,
    restart: bool = False,
    on_epoch: Callable[[int, dict[str, float] | None], bool] | None = None,
    score_test: bool = True,
) -> RunResult:
    """on_epoch(epoch, valid metrics) runs after each epoch is saved; returning False stops training there.
    score_test=False (a tuning trial) leaves the test split unscored and metrics.json unwritten."""
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
    history: list[dict[str, Any]] = []
    start_epoch, best, best_epoch, elapsed = 1, -1.0, 0, 0.0
    ema = WeightEMA(model, cfg.ema) if cfg.ema else None
    last = run / "last.pt"
    if last.exists() and not restart:
        old = json.loads((run / "config.json").read_text())
        if old["model"] != meta["model"] or old["dataset"] != meta["dataset"] or old["train"].get("fit") != cfg.fit:
            raise SystemExit(
                f"{run} holds a different run (model, dataset or fit differ); use --restart or another --out"
            )
        ck = load_checkpoint(last)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ema is not None:
            ema.load(ck["ema"])
        history, best, best_epoch, elapsed = ck["history_json"], ck["best"], ck["best_epoch"], ck["elapsed"]
        history = json.loads(history)
        start_epoch = ck["epoch"] + 1
        console.print(f"[yellow]resuming {run} after epoch {ck['epoch']} (best epoch {best_epoch})")
    write_json(meta, run / "config.json")
    ds.sequences.save_vocabs(run)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(
        f"[bold]{cfg.model}[/] on {ds.sequences.name}: {ds.sequences.num_users:,} users, "
        f"{ds.sequences.num_items:,} items, {len(ds.sequences.items):,} events; {n_params:,} parameters on {device}"
    )
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"))
    progress = Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
    with flush_denormals(), progress:
        for epoch in range(start_epoch, (cfg.stop_epoch or cfg.epochs) + 1):
            if cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s:
                console.print(f"time budget of {cfg.time_budget_s:.0f}s reached")
                break
            if epoch - best_epoch > cfg.patience and best_epoch > 0:
                break
            stats = train_epoch(model, opt, split, cfg, epoch, device, progress, elapsed, ema)
            t0 = time.perf_counter()
            valid = None
            with ema.applied(model) if ema is not None else contextlib.nullcontext():  # validate what is saved
                if not split.valid_in_train:  # a refit has no validation: its last epoch is the final model
                    valid = evaluate_model(model, split, "valid", cfg.eval_batch_size, str(device), cfg.precision)
                stats["eval_seconds"] = time.perf_counter() - t0
                improved = valid is None or valid["NDCG@10"] > best
                if improved:
                    best, best_epoch = (valid or {}).get("NDCG@10", -1.0), epoch
                    state = {"model": model.state_dict(), "epoch": epoch, "config": meta["model"]}
                    atomic_save(state, run / "best.pt")
            elapsed += stats["seconds"] + stats["eval_seconds"]
            rec = {"epoch": epoch, **stats, "elapsed": elapsed, "valid": valid}
            history.append(rec)
            atomic_save(
                {
                    "model": model.state_dict(),
                    **({"ema": ema.state()} if ema is not None else {}),
                    "optimizer": opt.state_dict(),
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "elapsed": elapsed,
                    "history_json": json.dumps(history),
                },
                last,
            )
            write_json(history, run / "history.json")
            plot_curves(history, run / "curves.png", f"{cfg.model} on {ds.sequences.name}")
            scores = f"valid NDCG@10 {valid['NDCG@10']:.4f} HR@10 {valid['HR@10']:.4f}" if valid else "refit"
            console.print(
                f"epoch {epoch:3d}  loss {stats['loss']:.4f}  {stats['seq_per_s']:7.0f} seq/s  {scores}"
                + ("  [green]best" if improved and valid else "")
                + f"  ({elapsed / 60:.1f} min)"
            )
            if on_epoch is not None and not on_epoch(epoch, valid):
                break
    if not score_test:
        best_valid = next((h["valid"] or {} for h in history if h["epoch"] == best_epoch), {})
        return RunResult(run, history, best_epoch, best_valid, {}, {}, elapsed)
    return finish(run, split, model, history, best_epoch, elapsed, cfg, device, console)


def finish(
    run: Path,
    split: Split,
    model: SequentialModel,
    history: list[dict[str, Any]],
    best_epoch: int,
    elapsed: float,
    cfg: TrainConfig,
    device: torch.device,
    console: Console,
) -> RunResult:
    """Score the best checkpoint on the test split once, with the popularity baseline beside it."""
    model.load_state_dict(load_checkpoint(run / "best.pt")["model"])
    test = evaluate_model(model, split, "test", cfg.eval_batch_size, str(device))
    pop = evaluate_scorer(popularity_scorer(split), split, "test", model.config.max_len)
    best_valid = next((h["valid"] or {} for h in history if h["epoch"] == best_epoch), {})
    write_json(
        {
            "dataset": split.data.name,
            "model": cfg.model,
            "split": "test",
            "metrics": test,
            "popularity": pop,
            "best_epoch": best_epoch,
            "best_valid": best_valid,
            "fit": cfg.fit,
            "refit_of": cfg.refit_of,
            "epochs": len(history),
            "train_seconds": elapsed,
        },
        run / "metrics.json",
    )
    return RunResult(run, history, best_epoch, best_valid, test, pop, elapsed)


def load_run(run_dir: str | Path) -> tuple[SequentialModel, dict[str, Any]]:
    """The best model of a run folder and its config.json; weights loaded with weights_only=True."""
    run = Path(run_dir)
    if not (run / "best.pt").exists():
        raise FileNotFoundError(f"{run} has no best.pt: is it a genrec run folder that finished an epoch?")
    ck = load_checkpoint(run / "best.pt")
    model = model_from_config(ck["config"])
    model.load_state_dict(ck["model"])
    model.eval()
    meta = json.loads((run / "config.json").read_text())
    return model, meta
