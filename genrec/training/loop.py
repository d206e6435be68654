"""The one training loop: epochs, validation on a declared metric, patience, weight EMA, a time budget that holds,
atomic checkpoint / resume, a live progress bar and per-epoch history. Every genrec trainer is a task plugged in.

A task supplies the epoch (train once over the data, return stats) and, optionally, validation (metrics):

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def train_epoch(ep: Epoch) -> dict[str, float]:
        ep.start(total=len(x), unit="rows")               # the progress bar's length
        for rows in np.array_split(rng.permutation(len(x)), 10):
            loss = F.mse_loss(model(x[rows]), y[rows])
            opt.zero_grad(); loss.backward(); opt.step()
            ep.step(len(rows), loss=loss.item())          # after each optimizer step: EMA update, live stats
        return {"loss": ep.mean("loss")}

    cfg = LoopConfig(epochs=20, metric="logloss", mode="min", patience=3, ema=0.99, time_budget_s=600)
    result = fit(model, train_epoch, cfg, validate=lambda: {"logloss": ...},
                 state={"optimizer": opt, "rng": rng}, checkpoint="run/last.pt")
    result.best_epoch, result.best_valid, result.history   # the model now holds the best epoch's weights

`state` names everything besides the model that a resumed run needs (objects with state_dict / load_state_dict,
or numpy Generators); torch's global RNG is saved too, so a resumed run replays exactly what an uninterrupted one
does. With `ema`, validation, the kept best weights and `on_best` all see the averaged weights. Without `metric`
(a refit, a fixed-epoch baseline) every epoch counts as the best: the last one is the final model.

The time budget covers everything the loop runs (training, validation, checkpoints, callbacks): before each epoch
the loop stops if the last epoch's cost would overrun the budget (less `reserve_evals` validations' time, for a
caller that scores the test split after the loop). A task with long epochs stops early inside one when
`ep.time_left()` runs out (the sequence trainer does: one epoch of a 3M-event log can outlast a tuning trial's
slice); before the first validation its time comes from `estimate_eval`.
"""

from __future__ import annotations

import copy
import json
import time
import zipfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from genrec.bundle import atomic_save
from genrec.training.averaging import WeightEMA

MODES = ("max", "min")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message is one line naming the file (the CLI prints it as is)."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) on CPU; a missing, empty or unreadable file is a CheckpointError."""
    path = Path(path)
    hint = "use --restart to train from scratch"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; {hint}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint is empty (an interrupted copy?); {hint}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive: anything else is torn or foreign
        raise CheckpointError(f"{path}: checkpoint is corrupt (not a torch.save archive: a torn write?); {hint}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn archive, or objects weights_only loading refuses
        what = "it holds objects other than tensors and plain data" if "weights_only" in str(e) else type(e).__name__
        raise CheckpointError(f"{path}: checkpoint is corrupt ({what}); {hint}") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: not a genrec checkpoint (a {type(ck).__name__}, not a dict); {hint}")
    return ck


@dataclass
class LoopConfig:
    epochs: int
    metric: str | None = None  # validation metric that picks the epoch; None: no validation, the last epoch is kept
    mode: str = "max"  # "max" (NDCG@10, AUC) or "min" (logloss)
    patience: int | None = None  # stop after this many epochs without a better metric; None: never
    time_budget_s: float | None = None  # the whole loop, validation included, stays inside this
    ema: float = 0.0  # > 0: validate and keep an exponential moving average of the weights (decay per step)
    reserve_evals: float = 0  # keep this many validations' time of the budget free for the caller's final scoring

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")

    def better(self, score: float, best: float | None) -> bool:
        return best is None or (score > best if self.mode == "max" else score < best)


@dataclass
class LoopResult:
    history: list[dict[str, Any]]
    best_epoch: int  # 0 when no epoch ran
    best_valid: dict[str, float]  # validation metrics of the best epoch ({} without validation)
    best_score: float | None
    elapsed: float  # seconds of the whole run, resumed parts included
    stopped: str  # "epochs" | "patience" | "time budget" | "callback"


class Epoch:
    """What a task's train_epoch gets: its number, the run's time so far, and the per-step hook. The loop makes
    one per epoch; `Epoch(n)` alone (no bar, no EMA, no budget) runs a task's epoch outside the loop."""

    def __init__(self, number: int, elapsed: float = 0.0, left: float = float("inf"), ema: WeightEMA | None = None,
                 model: nn.Module | None = None, progress: Progress | None = None) -> None:  # fmt: skip
        self.number = number  # 1-based
        self.elapsed = elapsed  # seconds of the run before this epoch (training, validation, checkpoints)
        self._left, self._ema, self._model, self._progress = left, ema, model, progress
        self._t0 = time.perf_counter()
        self._sums: dict[str, float] = {}
        self._steps, self._count, self._unit = 0, 0, ""
        self._task = progress.add_task(f"epoch {number}", total=None, stats="") if progress is not None else None

    def start(self, total: int | None, unit: str = "") -> None:
        """Declare the epoch's length (in the units `step` advances by) for the bar, and the rate's unit."""
        self._unit = unit
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)

    def step(self, advance: int = 1, **values: float) -> None:
        """Call after each optimizer step: updates the EMA, averages `values` over the epoch, moves the bar."""
        if self._ema is not None and self._model is not None:
            self._ema.update(self._model)
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._steps += 1
        self._count += advance
        if self._progress is None or self._task is None:
            return
        stats = "  ".join(f"{k} {s / self._steps:.4f}" for k, s in self._sums.items())
        if self._unit:
            stats += f"  {self._count / max(self.seconds(), 1e-9):,.0f} {self._unit}/s"
        self._progress.update(self._task, advance=advance, stats=stats)

    def mean(self, key: str) -> float:
        """Mean of a `step` value over this epoch's steps so far (0.0 before any)."""
        return self._sums.get(key, 0.0) / max(self._steps, 1)

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def count(self) -> int:
        """Sum of `advance` over the steps so far (sequences, rows, users)."""
        return self._count

    def seconds(self) -> float:
        """Seconds since this epoch started."""
        return time.perf_counter() - self._t0

    def time_left(self) -> float:
        """Seconds of budget left for training in this epoch, after reserving the last validation's time (inf
        without a budget)."""
        return self._left - self.seconds()

    def close(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)


def _save_state(obj: Any) -> Any:
    return obj.bit_generator.state if isinstance(obj, np.random.Generator) else obj.state_dict()


def _load_state(obj: Any, state: Any) -> None:
    if isinstance(obj, np.random.Generator):
        obj.bit_generator.state = state
    else:
        obj.load_state_dict(state)


class Checkpoint(Protocol):
    """Where a run's state goes after each epoch. `loop` is the loop's own part (epoch, best, history, EMA,
    RNG); an implementation saves it together with the task's model and state, and hands it back on load."""

    path: Path  # named in messages

    def exists(self) -> bool: ...

    def save(self, loop: dict[str, Any]) -> None: ...

    def load(self) -> dict[str, Any]: ...  # restores the model and the task's state in place, returns `loop`


class FileCheckpoint:
    """One file, written atomically: the model's state_dict, each `state` object's, and the loop's part."""

    def __init__(self, path: str | Path, model: nn.Module, state: dict[str, Any] | None = None) -> None:
        self.path, self.model, self.state = Path(path), model, state or {}

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, loop: dict[str, Any]) -> None:
        objs = {name: _save_state(obj) for name, obj in self.state.items()}
        atomic_save({"model": self.model.state_dict(), "state": objs, **loop}, self.path)

    def load(self) -> dict[str, Any]:
        ck = read_checkpoint(self.path)
        for name, obj in self.state.items():  # first: a state object may check that the file is this run's
            _load_state(obj, ck["state"][name])
        self.model.load_state_dict(ck.pop("model"))
        return ck


def fit(
    model: nn.Module,
    train_epoch: Callable[[Epoch], dict[str, Any]],
    cfg: LoopConfig,
    validate: Callable[[], dict[str, float]] | None = None,
    *,
    state: dict[str, Any] | None = None,
    checkpoint: str | Path | Checkpoint | None = None,
    resume: bool = True,
    keep_best: bool = True,
    agree: Callable[[bool], bool] | None = None,
    on_best: Callable[[int], None] | None = None,
    on_epoch: Callable[[list[dict[str, Any]]], bool | None] | None = None,
    describe: Callable[[dict[str, Any]], str] | None = None,
    console: Console | None = None,
    estimate_eval: Callable[[], float] | None = None,
) -> LoopResult:
    """Train `model` epoch by epoch (see the module doc). Returns with the best epoch's weights in `model`.

    checkpoint: a file (FileCheckpoint of the model and `state`) or a Checkpoint, rewritten after every epoch;
        with `resume`, an existing one is continued.
    keep_best: keep a copy of the best epoch's weights (in memory and in the checkpoint) and load it at the end;
        False where `on_best` saves them itself (sharded tables).
    agree(stop): one stop decision for all processes of a distributed run (e.g. stop if any rank runs out of time).
    on_best(epoch): after a new best epoch, with the (averaged) best weights in the model: save them.
    on_epoch(history): after each epoch's checkpoint, the records so far (this epoch's last); returning True
        stops the run (e.g. pruning a trial).
    describe(record): the middle of the epoch's printed line (default: loss and the validation metric).
    estimate_eval(): seconds one validation will take, asked once under a time budget before any validation was
        timed (e.g. one batch timed and scaled): the first epoch keeps that much of the budget free for it.
    """
    if cfg.metric is not None and validate is None:
        raise ValueError(f"metric {cfg.metric!r} needs a validate function")
    console = console or Console()
    ema = WeightEMA(model, cfg.ema) if cfg.ema else None
    history: list[dict[str, Any]] = []
    best_score: float | None = None
    best_epoch, elapsed, start = 0, 0.0, 1
    best_weights: dict[str, torch.Tensor] | None = None
    last_cost = last_eval = 0.0  # seconds of the last epoch's whole iteration and of its validation: estimates
    ckpt = FileCheckpoint(checkpoint, model, state) if isinstance(checkpoint, str | Path) else checkpoint
    if ckpt is not None and resume and ckpt.exists():
        try:
            ck = ckpt.load()
            if ema is not None:
                ema.load(ck["ema"])
            if "torch_rng" in ck:
                torch.set_rng_state(ck["torch_rng"])
            history, elapsed = json.loads(ck["history_json"]), ck["elapsed"]
            best_score, best_epoch, best_weights = ck["best"], ck["best_epoch"], ck.get("best_model")
            last_cost, last_eval = ck.get("last_cost", 0.0), ck.get("last_eval", 0.0)
            start = ck["epoch"] + 1
        except (KeyError, RuntimeError, ValueError, TypeError) as e:  # another run's or another program's file
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(
                f"{ckpt.path}: checkpoint does not match this run ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:100] if str(e) else ''}); use --restart to train from scratch"
            ) from None
        console.print(f"[yellow]resuming from {ckpt.path} after epoch {start - 1} (best epoch {best_epoch})")

    def averaged() -> Any:  # validate, keep and save what the run will hand back
        return ema.applied(model) if ema is not None else nullcontext()

    if estimate_eval is not None and cfg.time_budget_s is not None and last_eval == 0.0:
        t = time.perf_counter()
        last_eval = estimate_eval()
        elapsed += time.perf_counter() - t
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"))
    progress = Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
    carry = 0.0
    stopped = "epochs"
    with progress:
        for epoch in range(start, cfg.epochs + 1):
            if cfg.patience is not None and best_epoch > 0 and epoch - best_epoch > cfg.patience:
                stopped = "patience"
                break
            budget_left = float("inf")
            if cfg.time_budget_s is not None:
                budget_left = cfg.time_budget_s - elapsed - cfg.reserve_evals * last_eval
            out_of_time = last_cost > budget_left or budget_left <= 0
            if agree(out_of_time) if agree is not None else out_of_time:
                of = f" ({elapsed:.0f}s of {cfg.time_budget_s:.0f}s)" if cfg.time_budget_s is not None else ""
                console.print(f"time budget reached{of}")
                stopped = "time budget"
                break
            t0 = time.perf_counter()
            model.train()
            ep = Epoch(epoch, elapsed, budget_left - last_eval, ema, model, progress)
            try:
                stats = dict(train_epoch(ep))
            finally:
                ep.close()
            stats.setdefault("seconds", time.perf_counter() - t0)
            t1 = time.perf_counter()
            valid = None
            with averaged():
                if validate is not None:
                    valid = validate()
                    if cfg.metric is not None and cfg.metric not in valid:
                        raise ValueError(f"cannot select epochs on {cfg.metric!r}: validation gives {', '.join(valid)}")
                score = valid[cfg.metric] if valid is not None and cfg.metric is not None else None
                improved = score is None or cfg.better(score, best_score)
                if improved:
                    best_score, best_epoch = score, epoch
                    if cfg.metric is not None and keep_best:
                        best_weights = copy.deepcopy(model.state_dict())
                    if on_best is not None:
                        on_best(epoch)
            last_eval = time.perf_counter() - t1
            t2 = time.perf_counter()
            elapsed += carry + t2 - t0
            rec = {"epoch": epoch, **stats, "eval_seconds": last_eval, "elapsed": elapsed, "valid": valid}
            history.append(rec)
            if ckpt is not None:
                ckpt.save(
                    {
                        **({"ema": ema.state()} if ema is not None else {}),
                        **({"best_model": best_weights} if best_weights is not None else {}),
                        "torch_rng": torch.get_rng_state(),
                        "epoch": epoch,
                        "best": best_score,
                        "best_epoch": best_epoch,
                        "elapsed": elapsed,
                        "last_cost": t2 - t0 + carry,
                        "last_eval": last_eval,
                        "history_json": json.dumps(history),
                    }
                )
            stop = bool(on_epoch(history)) if on_epoch is not None else False
            stop = agree(stop) if agree is not None else stop
            line = describe(rec) if describe is not None else _describe(rec, cfg.metric)
            console.print(
                f"epoch {epoch:3d}  {line}"
                + ("  [green]best" if improved and valid else "")
                + f"  ({elapsed / 60:.1f} min)"
            )
            # what the epoch cost after `elapsed` was taken (checkpoint, callback) counts in the next one's
            carry, last_cost = time.perf_counter() - t2, time.perf_counter() - t0
            if stop:
                stopped = "callback"
                break
    if best_weights is not None:
        model.load_state_dict(best_weights)
    elif ema is not None and history:  # no validation: the final model is the average
        model.load_state_dict(ema.shadow, strict=False)
    best_valid = next((h["valid"] or {} for h in history if h["epoch"] == best_epoch), {})
    return LoopResult(history, best_epoch, best_valid, best_score, elapsed, stopped)


def _describe(rec: dict[str, Any], metric: str | None) -> str:
    out = f"loss {rec['loss']:.4f}" if "loss" in rec else ""
    if rec["valid"] and metric:
        out += f"  valid {metric} {rec['valid'][metric]:.4f}"
    return out
