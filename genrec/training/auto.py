"""Automatic configuration: `genrec train --model auto --time-budget MIN`.

The data's statistics (catalog size, history lengths, density, timestamps, item attributes, event types) set a
search space; an Optuna study (TPESampler(seed), MedianPruner on the per-epoch validation NDCG@10) tries settings
inside it, each trial a `genrec train` run on a slice of the budget; the best trial by validation is then trained
on in the time left and the test split is scored once. Nothing but the validation split chooses.

Time: the whole call (loading, trials, final training, test scoring, report) holds the budget. Of the time left
after a reserve for test scoring and the report, SEARCH_FRACTION goes to trials and the rest to the winner:
    trials   each gets at most 1 / TRIALS_PER_SEARCH of the search time; it stops when its next epoch would not
             fit (epoch time as measured), when the pruner says its curve is below the median of earlier trials at
             the same epoch, or when validation has not improved for PATIENCE epochs (converged)
    final    the winning trial's run folder is copied to the output and resumed (same optimizer, same epoch
             numbering) while epochs fit. A constant-lr winner is annealed: its lr follows a cosine from where the
             trial left it down to the floor at the end of the time left, with no early stop (ML-1M's 60-min
             runs, leaders their slice stopped: validation 0.1876 -> 0.1918, 0.1858 -> 0.1932; Beauty's, also cut by
             its slice at epoch 24, never passed it in 84 more epochs). The space's trials all run at a constant
             lr (search_space says why); given a space with cosine trials, a cosine winner keeps its schedule
             stretched to the new end (a warm restart) while validation still improves, and one that converged is
             not resumed. best.pt stays the best validation epoch, so the final model scores at least the winning
             trial's validation NDCG@10.
    extended when the leader after the usual search converged inside its slice (short histories: Beauty), the
             search goes on into the winner's share, keeping PATIENCE of its epochs for the anneal: two 60-min
             Beauty runs annealed a converged leader for ~26 min and never passed its trial's best epoch.
    ensemble the final run's best epoch and up to ENSEMBLE_TRIALS other complete trials' best epochs are the
             candidates of a greedy ensemble selection on validation (genrec.training.ensemble, at most
             MAX_MEMBERS members); the bundle ships the ensemble when it validates higher than the final run
             alone, else the final run. Its time is kept in the reserve (ensemble_evals); max_members=1 (CLI
             --max-members 1: one encoder per request when served) skips the step and its reserve.
A setting whose predicted epoch time (a cost model calibrated on the trials so far) leaves no room for
MIN_EPOCHS epochs in the search time left is skipped (recorded as pruned, reason "too slow"). On a big log a
trial's epoch trains a sample of users, so that its slice holds EPOCHS_PER_SLICE validated epochs (4.1M rows,
100,000 users, 20-min budget: epochs of 2,000-12,000 users; benchmarks/results/own_log_scale.md).
Reproducible: the same seed samples the same settings in the same order for the same results; with time slices
the number of epochs a trial gets depends on the machine's speed.

Output folder (besides the chosen setting's bundle: manifest.json, components/, metrics.json, ...):
    trials/NNN/     each trial's history.json (its weights are removed once the bundle holds what ships)
    tuning.json     statistics, search space and why, every trial (params, state, curve), the choice, the
                    ensemble step (candidates' validation, greedy path, members), test scores
    tuning.md       the trials table and the choice
    tuning.png      validation NDCG@10 against time since the start, one line per trial and the final run
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from rich.console import Console
from rich.table import Table

from genrec.bundle import load_checkpoint
from genrec.data.datasets import Dataset, load_dataset
from genrec.data.io import ReadOptions
from genrec.data.sequences import Split, leave_one_out
from genrec.evaluation.evaluate import evaluate_model
from genrec.models.sequential import SequentialModel
from genrec.training.ensemble import MAX_MEMBERS, Candidate, build, select
from genrec.training.trainer import (
    RunResult,
    TrainConfig,
    new_model,
    publish,
    resolve_device,
    train,
    valid_users,
    write_json,
)

FULL_SOFTMAX_MAX_ITEMS = 50_000  # above this a (N, V) logit matrix per batch costs more than it teaches
SHORT_HISTORY = 20  # median events per user below which histories count as short (stronger dropout)
SEARCH_FRACTION = 0.6  # of the time after the reserve: trials; the rest trains the winner further
TRIALS_PER_SEARCH = 5  # a trial's slice is at most 1/5 of the search time (pruned trials free theirs)
MIN_EPOCHS = 2  # a trial must fit at least this many epochs
PATIENCE = 8  # epochs without a better validation NDCG@10: converged
RESERVE_S = 5.0  # fixed part of the time kept for the end of the call
MAX_SKIPS = 5  # consecutive too-slow samples before the search ends
# a trial's slice should hold this many validated epochs; on a log too big for that, a trial's epoch trains a
# random sample of users (TrainConfig.epoch_users), never fewer than MIN_EPOCH_USERS
EPOCHS_PER_SLICE = 6
MIN_EPOCH_USERS = 2_000
# seconds per CostModel.proxy unit before any trial was timed, on 2 threads: the slowest of the 60-min ML-1M and
# Beauty runs' trials (1.4e-11 .. 3.9e-11) rounded up; a trial's measurement replaces it
PRIOR_SECONDS_PER_UNIT = 4e-11
# every trial validates a weight EMA (decay per step, warmed up over the first steps): on ML-1M and Beauty it
# lifted validation NDCG@10 at every epoch of the runs compared (benchmarks/results/sequential.md), early ones
# included, which is what the pruner compares
EMA_DECAY = 0.998
FAMILIES = ("hstu", "hstu-large", "sasrec")
# the final model and up to this many other complete trials (best first) are the ensemble's candidates
ENSEMBLE_TRIALS = 4


def ensemble_evals(members: int) -> float:
    """Validations' worth of time the ensemble step takes, kept in the reserve: each candidate scored once, the
    greedy search's rankings (~0.3 of a validation each, up to members + 1 rounds over the candidates), the
    ensemble's validation and its extra members' test scoring; none with one member (no step)."""
    if members <= 1:
        return 0.0
    return (ENSEMBLE_TRIALS + 1) * (1 + 0.3 * (members + 1)) + 1 + (members - 1) * 1.5


@dataclass
class DataStats:
    name: str
    users: int
    items: int
    events: int
    median_len: float
    p90_len: float
    max_len: int
    density: float  # events / (users x items)
    has_timestamps: bool
    has_event_types: bool
    has_attributes: bool  # categorical / multi-valued item attributes usable as item tokens
    train_lengths: np.ndarray = field(repr=False)  # (U,) training events per user (leave-one-out)


def _has_item_attributes(ds: Dataset) -> bool:
    from genrec.data.io import DataError
    from genrec.features.tables import raw_tables

    try:
        items, _, _ = raw_tables(ds)
    except (FileNotFoundError, DataError):
        return False
    return bool(items.cat or items.multi)


def data_stats(ds: Dataset) -> DataStats:
    s = ds.sequences
    lengths = s.lengths
    return DataStats(
        name=s.name, users=s.num_users, items=s.num_items, events=int(len(s.items)),
        median_len=float(np.median(lengths)), p90_len=float(np.percentile(lengths, 90)), max_len=int(lengths.max()),
        density=len(s.items) / max(s.num_users * s.num_items, 1), has_timestamps=s.timestamps is not None,
        has_event_types=s.event_vocab is not None, has_attributes=_has_item_attributes(ds),
        train_lengths=np.where(lengths >= 3, lengths - 2, lengths),
    )  # fmt: skip


@dataclass
class SearchSpace:
    families: tuple[str, ...]
    attributes: tuple[bool, ...]
    events: tuple[bool, ...]  # each input event's type (view, cart, ...) as a token next to its item
    dims: tuple[int, ...]
    layers: tuple[int, int]  # sasrec / hstu; hstu-large keeps its 8 layers
    dropout: tuple[float, float]
    max_lens: tuple[int, ...]
    losses: tuple[str, ...]
    lr: tuple[float, float]  # log-uniform
    schedules: tuple[str, ...]
    temperatures: tuple[float, ...]  # logit = cos(state, item) / temperature
    default: dict[str, Any]  # the first trial: the middle of the space (with the catalog's attributes if any)
    reasons: list[str]  # why each range is what it is, for the report


def search_space(st: DataStats, event_inputs: bool | None = None) -> SearchSpace:
    """event_inputs: the user's --event-inputs / --no-event-inputs (None: searched where the data has event types)."""
    reasons = []
    p90 = max(int(math.ceil(st.p90_len / 10) * 10), 20)
    cap = min(200, max(int(math.ceil(st.max_len / 10) * 10), 20))
    max_lens = tuple(sorted({min(v, cap) for v in (p90 // 2, p90, 2 * p90) if v >= 10}))
    reasons.append(f"p90 history length {st.p90_len:.0f} (longest {st.max_len}): max_len in {list(max_lens)}")
    if st.median_len < SHORT_HISTORY:
        dropout = (0.3, 0.6)
        reasons.append(f"median history {st.median_len:.0f} < {SHORT_HISTORY} events: short, dropout 0.3-0.6")
    else:
        dropout = (0.1, 0.4)
        reasons.append(f"median history {st.median_len:.0f} >= {SHORT_HISTORY} events: dropout 0.1-0.4")
    if st.items <= FULL_SOFTMAX_MAX_ITEMS:
        losses = ("full",)
        reasons.append(f"{st.items:,} items <= {FULL_SOFTMAX_MAX_ITEMS:,}: full softmax")
    else:
        losses = ("sampled", "in-batch")
        reasons.append(f"{st.items:,} items > {FULL_SOFTMAX_MAX_ITEMS:,}: sampled or in-batch softmax")
    dims = (32, 48, 64) if st.events < 100_000 else (48, 64, 96) if st.events < 2_000_000 else (64, 96, 128)
    reasons.append(f"{st.events:,} events (density {st.density:.2e}): width in {list(dims)}")
    attributes = (False, True) if st.has_attributes else (False,)
    reasons.append("item attributes in the catalog: tried, first trial with them" if st.has_attributes
                   else "no item attributes")  # fmt: skip
    if event_inputs and not st.has_event_types:
        raise ValueError(f"--event-inputs needs an event_type column; {st.name} has none")
    if not st.has_event_types:
        events: tuple[bool, ...] = (False,)
    elif event_inputs is None:
        events = (True, False)  # the first trial with them: validation NDCG@10 x1.09 (HSTU, synthetic shop)
        reasons.append("event types in the log: action tokens tried, first trial with them")
    else:
        events = (event_inputs,)
        reasons.append(f"event types in the log: action tokens {'on' if event_inputs else 'off'} (as asked)")
    # a cosine logit spans 2 / temperature: 0.05 (HSTU's) lets the softmax be very sure of one item, a softer one
    # spreads the mass over similar items, which sparse histories cannot tell apart (Beauty, hand runs at 15 min:
    # validation NDCG@10 0.0715 at 0.05, 0.0729 at 0.1, 0.0636 at 0.15)
    temperatures = (0.05, 0.075, 0.1)
    reasons.append(f"softmax temperature in {list(temperatures)} (logit = cosine / temperature)")
    if (n_valid := valid_users(TrainConfig(), st.users, st.items)) < st.users:
        reasons.append(f"{st.users:,} users x {st.items:,} items: validation scores a fixed sample of {n_valid:,} "
                       "users (the test split: all of them)")  # fmt: skip
    if st.has_timestamps:
        reasons.append("timestamps: HSTU's time buckets carry them")
    reasons.append(f"every trial validates a weight EMA (decay {EMA_DECAY} per step)")
    # the lr schedule is the final run's: a cosine squeezed into a trial's slice decays over a horizon the setting
    # will not train on, which says little about it (the 4 cosine trials of the 60-min ML-1M and Beauty runs all
    # lost, HSTU-large's at 0.1404 against 0.1854); at a constant lr the trials compare the settings' pace
    reasons.append(
        "trials at a constant lr; the winner's lr is annealed by a cosine over the time left "
        "(a leader that converged in its trial: over its patience, the rest to more trials)"
    )
    default = dict(family="hstu", attributes=st.has_attributes, events=events[0], dim=dims[1], layers=2,
                   dropout=round(sum(dropout) / 2, 2), max_len=max_lens[len(max_lens) // 2], loss=losses[0], lr=1e-3,
                   schedule="constant", temperature=temperatures[len(temperatures) // 2])  # fmt: skip
    return SearchSpace(FAMILIES, attributes, events, dims, (1, 4), dropout, max_lens, losses, (5e-4, 3e-3),
                       ("constant",), temperatures, default, reasons)  # fmt: skip


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """One setting from the space (define-by-run: hstu-large has no depth to choose)."""
    p: dict[str, Any] = {"family": trial.suggest_categorical("family", space.families)}
    p["attributes"] = trial.suggest_categorical("attributes", space.attributes)
    p["events"] = trial.suggest_categorical("events", space.events)
    p["dim"] = trial.suggest_categorical("dim", space.dims)
    if p["family"] != "hstu-large":
        p["layers"] = trial.suggest_int("layers", *space.layers)
    p["dropout"] = trial.suggest_float("dropout", *space.dropout, step=0.05)
    p["max_len"] = trial.suggest_categorical("max_len", space.max_lens)
    p["loss"] = trial.suggest_categorical("loss", space.losses)
    p["lr"] = trial.suggest_float("lr", *space.lr, log=True)
    p["schedule"] = trial.suggest_categorical("schedule", space.schedules)
    p["temperature"] = trial.suggest_categorical("temperature", space.temperatures)
    return p


def make_study(space: SearchSpace, seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3),
    )
    study.enqueue_trial(space.default)
    return study


def describe(p: dict[str, Any]) -> str:
    depth = f" x{p['layers']}" if "layers" in p else ""
    tokens = (" +attr" if p["attributes"] else "") + (" +events" if p.get("events") else "")
    sample = f" epochs of {p['epoch_users']:,} users" if p.get("epoch_users") else ""
    return (
        f"{p['family']}{tokens} d{p['dim']}{depth} drop {p['dropout']:.2f} "
        f"len {p['max_len']} {p['loss']} t {p['temperature']:g} lr {p['lr']:.1e} {p['schedule']}{sample}"
    )


class CostModel:
    """Seconds per epoch (training + validation + saving) ~ ratio x a FLOP-like count, ratio measured per family.
    An epoch over a sample of users (p["epoch_users"]) counts that share of the training tokens; validation
    counts the users it scores (trainer.valid_users)."""

    def __init__(self, st: DataStats, threads: int | None = None) -> None:
        self.st, self.ratios = st, {}
        self.valid_users = valid_users(TrainConfig(), st.users, st.items)
        self.prior = PRIOR_SECONDS_PER_UNIT * 2 / max(1, min(2, threads or 2))

    def proxy(self, p: dict[str, Any]) -> float:
        tokens = float(np.minimum(self.st.train_lengths, p["max_len"]).sum())
        if p.get("epoch_users"):
            tokens *= min(p["epoch_users"], self.st.users) / max(self.st.users, 1)
        layers = p.get("layers", 8)
        encoder = layers * (12 * p["dim"] ** 2 + 2 * p["max_len"] * p["dim"])
        outputs = (self.st.items if p["loss"] == "full" else 128) * p["dim"]
        return tokens * (3 * (encoder + outputs)) + self.valid_users * (encoder + self.st.items * p["dim"])

    def add(self, p: dict[str, Any], epoch_seconds: float) -> None:
        self.ratios.setdefault(p["family"], []).append(epoch_seconds / self.proxy(p))

    def epoch_seconds(self, p: dict[str, Any], prior: bool = False) -> float | None:
        """Predicted seconds of p's epoch; None before any trial was timed, unless prior (then a guess)."""
        ratios = self.ratios.get(p["family"]) or [r for rs in self.ratios.values() for r in rs]
        if not ratios:
            return self.prior * self.proxy(p) if prior else None
        return float(np.median(ratios)) * self.proxy(p)

    def epoch_users(self, p: dict[str, Any], slice_s: float) -> int | None:
        """Users per trial epoch so that p's slice holds EPOCHS_PER_SLICE epochs; None: every user fits."""
        whole = self.epoch_seconds({**p, "epoch_users": None}, prior=True)
        assert whole is not None
        if EPOCHS_PER_SLICE * whole <= slice_s or self.st.users <= MIN_EPOCH_USERS:
            return None
        valid = self.epoch_seconds({**p, "epoch_users": 1}, prior=True) or 0.0  # about the validation alone
        train_s = max(whole - valid, 1e-9)
        share = max(slice_s / EPOCHS_PER_SLICE - valid, 0.0) / train_s
        return int(min(self.st.users, max(MIN_EPOCH_USERS, share * self.st.users)))


def trial_config(p: dict[str, Any], base: TrainConfig, out: Path, slice_s: float) -> TrainConfig:
    return TrainConfig(
        model=p["family"], dataset=base.dataset, out=str(out), epochs=1000, batch_size=base.batch_size, lr=p["lr"],
        loss=p["loss"], max_len=p["max_len"], dim=p["dim"], num_layers=p.get("layers"), dropout=p["dropout"],
        temperature=p["temperature"], patience=PATIENCE, seed=base.seed, threads=base.threads, device=base.device,
        precision="bf16", schedule=p["schedule"], time_budget_s=slice_s, item_attributes=p["attributes"],
        read=base.read, ema=EMA_DECAY, event_inputs=p.get("events", False), target_events=base.target_events,
        epoch_users=p.get("epoch_users"),
    )  # fmt: skip


@dataclass
class EpochClock:
    """The on_epoch callback: stops when the next epoch (as long as the slowest so far) would pass the deadline,
    and reports the curve to the trial's pruner. Records (seconds since the search started, NDCG@10) per epoch."""

    deadline: float  # perf_counter value
    origin: float
    trial: optuna.Trial | None = None
    last: float = field(default_factory=time.perf_counter)
    slowest: float = 0.0
    walls: list[float] = field(default_factory=list)  # wall seconds of each epoch (the first includes setup)
    curve: list[tuple[float, float]] = field(default_factory=list)
    stop: str = ""  # why it stopped: "time", "pruned"; "" = the trainer stopped by itself

    def __call__(self, history: list[dict[str, Any]]) -> bool:
        """The trainer's on_epoch(history): True stops the run after this epoch."""
        epoch, valid = history[-1]["epoch"], history[-1]["valid"]
        now = time.perf_counter()
        self.walls.append(now - self.last)
        self.slowest, self.last = max(self.slowest, now - self.last), now
        if valid is not None:
            self.curve.append((round(now - self.origin, 2), valid["NDCG@10"]))
            if self.trial is not None:
                self.trial.report(valid["NDCG@10"], epoch)
                if self.trial.should_prune():
                    self.stop = "pruned"
                    return True
        if now + self.slowest > self.deadline:
            self.stop = "time"
            return True
        return False


def _stop_reason(clock: EpochClock, res: RunResult) -> str:
    if clock.stop:
        return clock.stop
    last = res.history[-1]["epoch"] if res.history else 0
    return "converged" if last - res.best_epoch >= PATIENCE else "time"


def tune(base: TrainConfig, budget_s: float, dataset: Dataset | None = None, console: Console | None = None,
         restart: bool = False, started: float | None = None, max_members: int = MAX_MEMBERS) -> RunResult:  # fmt: skip
    """Choose a setting on validation within budget_s seconds, train it further, score the test split once.
    started: the perf_counter() value the budget counts from (the CLI: its process start), default now.
    max_members: the most distinct models the shipped bundle may average (serving encodes a history once per
    member); 1 ships the final run alone and keeps no time for the ensemble step."""
    if max_members < 1:
        raise ValueError(f"max_members must be at least 1, got {max_members}")
    t0 = time.perf_counter() if started is None else started
    console = console or Console()
    quiet = Console(quiet=True)
    out = Path(base.out)
    if (out / "tuning.json").exists() and not restart:
        raise ValueError(f"{out} holds a finished auto run; use --restart or another --out")
    if (out / "trials").exists():
        shutil.rmtree(out / "trials")
    ds = dataset or load_dataset(base.dataset, seed=base.seed, read=ReadOptions.from_dict(base.read))
    st = data_stats(ds)
    space = search_space(st, base.event_inputs)
    console.print(f"[bold]auto[/] on {st.name}: {st.users:,} users, {st.items:,} items, {st.events:,} events; "
                  f"budget {budget_s / 60:.1f} min")  # fmt: skip
    for r in space.reasons:
        console.print(f"  {r}")
    study = make_study(space, base.seed)
    costs = CostModel(st, base.threads)
    deadline = t0 + budget_s
    # test + popularity scoring, the report, the interpreter's exit (seconds with torch loaded); grows with the
    # measured validation time
    reserve = RESERVE_S + 0.02 * budget_s
    search_end = t0 + SEARCH_FRACTION * (budget_s - reserve)
    slice_s = (search_end - time.perf_counter()) / TRIALS_PER_SEARCH
    trials: list[dict[str, Any]] = []
    runs: dict[int, tuple[RunResult, TrainConfig, EpochClock]] = {}
    skips = 0
    extended = False
    keep = 0.0  # of an extended search: the time kept for the leader's anneal
    eval_s = 0.0  # the longest validation measured
    while True:
        while skips < MAX_SKIPS:
            now = time.perf_counter()
            if extended:  # the reserve grows with the validation time measured so far
                search_end = min(search_end, deadline - reserve - keep)
            left = search_end - now
            if left <= 0 or (runs and left < 0.5 * slice_s):
                break
            trial = study.ask()
            p = suggest(trial, space)
            if users := costs.epoch_users(p, slice_s):
                p["epoch_users"] = users  # a big log: the trial's epochs train a sample of users each
            predicted = costs.epoch_seconds(p)
            if predicted is not None and MIN_EPOCHS * predicted > min(left, slice_s):
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                trials.append({"number": trial.number, "params": p, "state": "pruned", "stop": "too slow",
                               "predicted_epoch_s": round(predicted, 1)})  # fmt: skip
                skips += 1
                continue
            skips = 0
            run_dir = out / "trials" / f"{trial.number:03d}"
            clock = EpochClock(deadline=min(now + slice_s, search_end), origin=t0, trial=trial)
            cfg = trial_config(p, base, run_dir, slice_s)
            try:
                res = train(cfg, dataset=ds, console=quiet, restart=True, on_epoch=clock, score_test=False)
            except (
                ValueError,
                RuntimeError,
            ) as e:  # one setting that cannot train (e.g. out of memory) ends only itself
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                trials.append({"number": trial.number, "params": p, "state": "failed", "stop": str(e).splitlines()[0][:80],
                               "seconds": round(time.perf_counter() - now, 1)})  # fmt: skip
                console.print(f"  trial {trial.number:2d}  {describe(p):60s} failed: {trials[-1]['stop']}")
                continue
            if not res.history:  # loading used the slice up (a loaded machine): no epoch fitted, nothing to compare
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                trials.append({"number": trial.number, "params": p, "state": "failed", "stop": "no epoch fitted",
                               "seconds": round(time.perf_counter() - now, 1)})  # fmt: skip
                console.print(f"  trial {trial.number:2d}  {describe(p):60s} no epoch fitted in its slice")
                continue
            stop = _stop_reason(clock, res)
            value = res.best_valid.get("NDCG@10", 0.0)
            if stop == "pruned":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, value)
            # a whole epoch's seconds: an epoch the slice cut (fraction < 1) counts at its full length
            full = [h["seconds"] * (1 / h.get("fraction", 1.0) - 1) for h in res.history]
            epoch_s = [h["seconds"] + h["eval_seconds"] + f for h, f in zip(res.history, full, strict=True)]
            costs.add(p, float(np.median([w + f for w, f in zip(clock.walls, full, strict=True)])))
            eval_s = max(eval_s, max(h["eval_seconds"] for h in res.history))
            reserve = max(reserve, RESERVE_S + 0.02 * budget_s + (2.5 + ensemble_evals(max_members)) * eval_s)
            runs[trial.number] = (res, cfg, clock)
            trials.append({
                "number": trial.number, "params": p, "state": "pruned" if stop == "pruned" else "complete", "stop": stop,
                "best_valid_ndcg10": round(value, 5), "best_epoch": res.best_epoch, "epochs": len(res.history),
                "seconds": round(time.perf_counter() - now, 1), "epoch_seconds": round(float(np.mean(epoch_s)), 2),
                "curve": clock.curve,
            })  # fmt: skip
            console.print(f"  trial {trial.number:2d}  {describe(p):60s} valid NDCG@10 {value:.4f}  "
                          f"{len(res.history):3d} ep  {stop}")  # fmt: skip
        done = [t for t in trials if t["state"] == "complete"]
        leader = max(done, key=lambda t: t["best_valid_ndcg10"]) if done else None
        if extended or leader is None or leader["stop"] != "converged":
            break
        # the leader converged inside its slice: training it on cannot use the time kept for that, more trials
        # can. A constant-lr leader keeps PATIENCE epochs for an anneal (the epochs it was given to improve at a
        # constant lr); a longer one did not pay: on Beauty (60-min runs) 25.8 and 25.6 min of cosine never beat
        # the converged trial's best epoch
        keep = PATIENCE * leader["epoch_seconds"] if annealable(leader) else 0.0
        extended, skips = True, 0
        search_end = deadline - reserve - keep
        console.print(f"  the leader (trial {leader['number']}) converged: searching on for "
                      f"{(search_end - time.perf_counter()) / 60:.1f} min")  # fmt: skip
    complete = [t for t in trials if t["state"] == "complete"]
    if not complete:
        raise ValueError(f"no trial finished within {budget_s / 60:.1f} min; give a larger --time-budget")
    best = max(complete, key=lambda t: t["best_valid_ndcg10"])
    res, cfg, clock = runs[best["number"]]
    # the final run: the winner's folder resumed in --out with the time left
    for f in Path(cfg.out).iterdir():
        shutil.copy2(f, out / f.name)
    now = time.perf_counter()
    extra = deadline - reserve - now
    anneal = annealable(best)
    resume = (anneal or best["stop"] != "converged") and extra > 1.5 * clock.slowest
    final_cfg = TrainConfig(**{**asdict(cfg), "out": str(out), "betas": tuple(cfg.betas)})
    final_cfg.time_budget_s = res.train_seconds + (extra if resume else 0.0)
    if resume and anneal:  # cosine in time over the whole stretched run: from about the trial's lr to the floor
        final_cfg.schedule, final_cfg.patience = "cosine", final_cfg.epochs
    final_clock = EpochClock(deadline=deadline - reserve, origin=t0, slowest=clock.slowest)
    if resume:
        how = ", lr annealed to the end" if anneal else ""
        console.print(f"  final: trial {best['number']} resumed for up to {extra / 60:.1f} min{how}")
    final = train(final_cfg, dataset=ds, console=quiet, on_epoch=final_clock, score_test=False)
    others = sorted((t for t in complete if t is not best), key=lambda t: -t["best_valid_ndcg10"])[:ENSEMBLE_TRIALS]
    time_left = deadline - time.perf_counter() - RESERVE_S - (2.5 + max_members) * eval_s
    # what the step will take: each candidate's validation as measured, and the search's rankings
    scored = [final.history, *(runs[t["number"]][0].history for t in others)]
    needed = (1 + 0.3 * (max_members + 1)) * sum(float(np.median([h["eval_seconds"] for h in hs])) for hs in scored)
    final, ensemble = ship(final, final_cfg, best, ds, [(t, runs[t["number"]][1]) for t in others], time_left,
                           needed, console, max_members)  # fmt: skip
    for f in (out / "trials").glob("*/*.pt"):  # the shipped weights are in the bundle
        f.unlink()
    report = {
        "dataset": st.name, "budget_s": budget_s, "wall_s": 0.0, "seed": base.seed,
        "stats": {k: v for k, v in asdict(st).items() if k != "train_lengths"},
        "space": {k: v for k, v in asdict(space).items() if k not in ("reasons", "default")},
        "reasons": space.reasons, "trials": trials, "search_extended": extended,
        "chosen": {"trial": best["number"], "params": best["params"], "setting": describe(best["params"]),
                   "why": _why(best, complete, trials)},
        "final": {"resumed": resume, "annealed": resume and anneal, "best_epoch": final.best_epoch, "epochs": len(final.history),
                  "valid": final.best_valid, "test": final.test, "popularity": final.popularity_test,
                  "curve": final_clock.curve},
        "ensemble": ensemble,
    }  # fmt: skip
    plot_tuning(report, out / "tuning.png")
    report["wall_s"] = round(time.perf_counter() - t0, 1)  # the report's own writing included
    (out / "tuning.md").write_text(render_markdown(report))
    write_json(report, out / "tuning.json")
    print_report(report, console)
    return final


def load_run(cfg: TrainConfig, ds: Dataset, split: Split, weights: Path) -> SequentialModel:
    model = new_model(cfg, ds, split)
    model.load_state_dict(load_checkpoint(weights)["model"])
    return model.eval()


def ship(
    final: RunResult, cfg: TrainConfig, best: dict[str, Any], ds: Dataset,
    others: list[tuple[dict[str, Any], TrainConfig]], time_left: float, needed: float, console: Console,
    max_members: int = MAX_MEMBERS,
) -> tuple[RunResult, dict[str, Any]]:  # fmt: skip
    """Write the bundle: the final run's best epoch, or the ensemble of it and other complete trials' best epochs
    that scores higher on validation (genrec.training.ensemble); test scored once. Returns the result and the
    ensemble step's record."""
    split = leave_one_out(ds.sequences, target_events=list(cfg.target_events) if cfg.target_events else None)
    model = load_run(cfg, ds, split, Path(cfg.out) / "best.pt")
    record: dict[str, Any] = {}
    if max_members == 1:
        record = {"skipped": "one member asked for (--max-members 1)"}
    elif not others:
        record = {"skipped": "no other complete trial"}
    elif needed > time_left:
        record = {"skipped": f"about {needed:.0f} s needed, {max(time_left, 0):.0f} s left in the budget"}
    valid_metrics = final.best_valid
    if not record:
        cands = [Candidate("final", model, {"trial": best["number"], "setting": describe(best["params"])})]
        for t, c in others:
            cands.append(Candidate(f"trial {t['number']}", load_run(c, ds, split, Path(c.out) / "best.pt"),
                                   {"trial": t["number"], "setting": describe(t["params"])}))  # fmt: skip
        valid = split.sample_users(valid_users(cfg, len(split.eval_users), ds.sequences.num_items), cfg.seed)
        sel = select(cands, valid, max_members, cfg.eval_batch_size, cfg.seed, console)
        record = {"candidates": sel.singles, "steps": sel.steps, "valid_users": sel.users}
        if list(sel.weights) != ["final"]:
            model = build(cands, sel.weights)
            valid_metrics = evaluate_model(model, valid, "valid", cfg.eval_batch_size)
            members = [
                {"name": c.name, **c.source, "weight": sel.weights[c.name]} for c in cands if c.name in sel.weights
            ]
            record.update(members=members, valid=valid_metrics)
    extra = {"ensemble": record} if "members" in record else None
    res = publish(Path(cfg.out), ds, split, model, cfg, final.history, final.best_epoch, valid_metrics,
                  final.train_seconds, resolve_device(cfg.device), extra)  # fmt: skip
    (Path(cfg.out) / "best.pt").unlink(missing_ok=True)
    return res, record


def annealable(t: dict[str, Any]) -> bool:
    """A trial trained at a constant lr: its plateau is not its end, decaying the lr can still lift it."""
    return t["params"]["schedule"] == "constant"


def _final_kind(f: dict[str, Any]) -> str:
    if not f["resumed"]:
        return "the trial as trained"
    return "resumed, lr annealed by a cosine over the time left" if f.get("annealed") else "resumed"


def _why(best: dict[str, Any], complete: list[dict[str, Any]], trials: list[dict[str, Any]]) -> str:
    others = sorted((t for t in complete if t is not best), key=lambda t: -t["best_valid_ndcg10"])
    runner = (f"; runner-up trial {others[0]['number']} ({describe(others[0]['params'])}) "
              f"{others[0]['best_valid_ndcg10']:.4f}" if others else "")  # fmt: skip
    return (
        f"highest validation NDCG@10 ({best['best_valid_ndcg10']:.4f}) of {len(complete)} complete trials "
        f"({sum(t['state'] == 'pruned' for t in trials)} pruned, {sum(t['state'] == 'failed' for t in trials)} failed)"
        f"{runner}"
    )


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Automatic configuration: {r['dataset']}, budget {r['budget_s'] / 60:.1f} min (ran {r['wall_s'] / 60:.1f})",
        "",
        "Search space from the data:",
        "",
        *[f"- {x}" for x in r["reasons"]],
        "",
        "| trial | setting | state | stop | valid NDCG@10 | best epoch | epochs | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in r["trials"]:
        v = f"{t['best_valid_ndcg10']:.4f}" if "best_valid_ndcg10" in t else "-"
        lines.append(
            f"| {t['number']} | {describe(t['params'])} | {t['state']} | {t['stop']} | {v} | "
            f"{t.get('best_epoch', '-')} | {t.get('epochs', 0)} | {t.get('seconds', 0)} |"
        )
    c, f = r["chosen"], r["final"]
    lines += ["", f"Chosen: trial {c['trial']}, {c['setting']}: {c['why']}.", ""]
    final_valid = r["ensemble"].get("candidates", {}).get("final", f["valid"].get("NDCG@10", float("nan")))
    lines += [
        f"Final run ({_final_kind(f)}): best epoch {f['best_epoch']}, valid NDCG@10 {final_valid:.4f}.",
        "",
        f"Shipped: {shipped(r)}; test (scored once) " + ", ".join(f"{k} {v:.4f}" for k, v in f["test"].items()),
    ]
    return "\n".join(lines) + "\n"


def shipped(r: dict[str, Any]) -> str:
    """What the bundle holds and why, from the ensemble step's record."""
    e = r["ensemble"]
    if "skipped" in e:
        return f"the final run's best epoch (no ensemble tried: {e['skipped']})"
    others = ", ".join(f"{n} {v:.4f}" for n, v in e["candidates"].items() if n != "final")
    if "members" not in e:
        return (f"the final run's best epoch: no mix with other trials ({others}) raised its validation "
                f"NDCG@10 ({e['candidates']['final']:.4f})")  # fmt: skip
    mix = " + ".join(f"{m['weight']:.2f} x {m['name']} ({m['setting']})" for m in e["members"])
    return (f"an ensemble, {mix}: validation NDCG@10 {e['valid']['NDCG@10']:.4f} against the final run's "
            f"{e['candidates']['final']:.4f} (members chosen greedily on validation among: final, {others})")  # fmt: skip


def plot_tuning(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for t in r["trials"]:
        if t.get("curve"):
            x, y = zip(*t["curve"], strict=True)
            ax.plot(x, y, marker="o", ms=2, ls="--" if t["state"] == "pruned" else "-", lw=1,
                    label=f"{t['number']}: {describe(t['params'])}")  # fmt: skip
    if r["final"]["curve"]:
        x, y = zip(*r["final"]["curve"], strict=True)
        ax.plot(x, y, color="black", lw=2, marker="o", ms=3, label=f"final (trial {r['chosen']['trial']})")
    ax.axvline(r["budget_s"], color="grey", ls=":", label="budget")
    ax.set(xlabel="seconds since start", ylabel="validation NDCG@10", title=f"auto on {r['dataset']}")
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_report(r: dict[str, Any], console: Console) -> None:
    table = Table(title=f"auto: trials on {r['dataset']} (validation only)")
    for col in ("trial", "setting", "state", "valid NDCG@10", "epochs", "s"):
        table.add_column(col, justify="left" if col in ("setting", "state") else "right")
    for t in r["trials"]:
        v = f"{t['best_valid_ndcg10']:.4f}" if "best_valid_ndcg10" in t else "-"
        state = t["state"] + (f" ({t['stop']})" if t["stop"] != t["state"] else "")
        table.add_row(str(t["number"]), describe(t["params"]), state, v,
                      str(t.get("epochs", 0)), str(t.get("seconds", 0)))  # fmt: skip
    console.print(table)
    c = r["chosen"]
    console.print(f"[bold]chosen[/]: trial {c['trial']}, {c['setting']}: {c['why']}")
    console.print(f"[bold]shipped[/]: {shipped(r)}")
    console.print(f"whole call {r['wall_s'] / 60:.2f} min of a {r['budget_s'] / 60:.2f} min budget")
