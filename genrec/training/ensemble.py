"""Ensemble selection on validation: which trained sequence models to average, and with what weights.

Greedy forward selection with replacement (Caruana et al., "Ensemble selection from libraries of models",
ICML 2004; what auto-sklearn and AutoGluon ship): start from the best single model on validation, then add the
candidate (a new one or one already in) whose inclusion raises validation NDCG@10 most; stop when none raises it
by MIN_GAIN, or at max_members distinct members (each one costs its encoder at serving time). A member's weight
is the number of times it was added over the total. Only the validation split chooses; the test split is scored
once, afterwards, by the caller.

Used by `genrec ensemble RUN RUN ... --out DIR` (finished runs) and by `genrec train --model auto` (its final
model and its trials). Measured on ML-1M (all 6,040 users, validation NDCG@10): HSTU-large d96 0.2022 and
0.1983 (two temperatures) -> 0.2067 averaged; with a 4-layer HSTU +attributes (0.1927) -> 0.2087.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from genrec.data.batches import eval_batches
from genrec.data.sequences import Split
from genrec.evaluation.evaluate import batch_ranks, evaluate_model
from genrec.evaluation.metrics import metrics_from_ranks
from genrec.models.ensemble import Ensemble, EnsembleConfig, window_states
from genrec.models.sequential import SequentialModel
from genrec.training.trainer import RunResult

MIN_GAIN = 1e-4  # validation NDCG@10 an addition must add
MAX_MEMBERS = 3  # distinct members by default: serving encodes a history once per member
MAX_ROUNDS = 3  # additions per allowed member: weights in steps of at least 1 / (3 x members)
CACHE_BYTES = 3 << 30  # fp16 score matrices kept for the search; past this it runs on a user sample that fits


@dataclass
class Candidate:
    name: str  # what the report calls it: "final", "trial 4", a run folder
    model: SequentialModel
    source: dict[str, Any] = field(default_factory=dict)  # where it came from (recorded in the bundle)


@dataclass
class Selection:
    weights: dict[str, float]  # member name -> weight; only the chosen ones
    singles: dict[str, float]  # every candidate's validation NDCG@10 on the selection's users
    steps: list[dict[str, Any]]  # the greedy path: {"members": {name: count}, "NDCG@10": ...}
    users: int  # validation users the selection scored

    @property
    def chosen(self) -> list[str]:
        return list(self.weights)


@torch.no_grad()
def _scores(model: SequentialModel, split: Split, max_len: int, batch_size: int) -> list[torch.Tensor]:
    """(B, num_items + 1) fp16 validation logits of one model, per evaluation batch (its own window of each history)."""
    model.eval()
    table = model.item_table()
    out = []
    for batch, _, _ in eval_batches(split, "valid", batch_size, max_len):
        states = window_states(model, batch.items, batch.offsets, batch.timestamps, batch.events)
        out.append((states @ table.T / model.config.temperature).half())
    return out


def _ndcg(split: Split, max_len: int, batch_size: int, scores: list[torch.Tensor]) -> float:
    batches = eval_batches(split, "valid", batch_size, max_len)
    ranks = [batch_ranks(lambda _, s=s: s, b, t, seen, "cpu") for (b, t, seen), s in zip(batches, scores, strict=True)]
    return metrics_from_ranks(np.concatenate(ranks))["NDCG@10"]


def select(
    candidates: list[Candidate],
    split: Split,
    max_members: int = MAX_MEMBERS,
    batch_size: int = 256,
    seed: int = 0,
    console: Console | None = None,
) -> Selection:
    """Greedy ensemble selection on `split`'s validation users (a sample when the score cache would pass
    CACHE_BYTES). Candidates must score the same catalog."""
    console = console or Console(quiet=True)
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"ensemble candidates need distinct names: {names}")
    n_items = {c.model.config.num_items for c in candidates}
    if len(n_items) != 1:
        raise ValueError(f"ensemble candidates score different catalogs ({sorted(n_items)} items)")
    cols = n_items.pop() + 1
    fit = max(1, CACHE_BYTES // (2 * cols * len(candidates)))
    split = split.sample_users(fit, seed)
    max_len = max(c.model.config.max_len for c in candidates)
    cache = {c.name: _scores(c.model, split, max_len, batch_size) for c in candidates}

    def value(counts: dict[str, int]) -> float:
        total = [sum(cache[n][k].float() * w for n, w in counts.items()) for k in range(len(cache[names[0]]))]
        return _ndcg(split, max_len, batch_size, total)

    singles = {n: value({n: 1}) for n in names}
    best = max(names, key=lambda n: singles[n])
    counts, current = {best: 1}, singles[best]
    steps = [{"members": dict(counts), "NDCG@10": round(current, 5)}]
    console.print(f"  ensemble: start from {best} ({current:.4f})")
    for _ in range(MAX_ROUNDS * max_members):
        tries = {
            n: value({**counts, n: counts.get(n, 0) + 1}) for n in names if n in counts or len(counts) < max_members
        }
        pick = max(tries, key=lambda n: tries[n])
        if tries[pick] < current + MIN_GAIN:
            break
        counts[pick] = counts.get(pick, 0) + 1
        current = tries[pick]
        steps.append({"members": dict(counts), "NDCG@10": round(current, 5)})
        console.print(f"  ensemble: + {pick} -> {current:.4f}")
    total = sum(counts.values())
    weights = {n: counts[n] / total for n in names if n in counts}
    return Selection(weights, singles, steps, len(split.eval_users))


def build(candidates: list[Candidate], weights: dict[str, float]) -> Ensemble:
    """The Ensemble of the chosen candidates (weights from select), in eval mode."""
    chosen = [c for c in candidates if c.name in weights]
    model = Ensemble(EnsembleConfig([c.model.config.to_dict() for c in chosen], [weights[c.name] for c in chosen]))
    for member, c in zip(model.members, chosen, strict=True):
        member.load_state_dict(c.model.state_dict())
    return model.eval()


def ensemble_runs(
    runs: list[Path], out: Path, max_members: int = MAX_MEMBERS, threads: int | None = None,
    console: Console | None = None,
) -> RunResult:  # fmt: skip
    """`genrec ensemble RUN RUN ... --out DIR`: finished runs on the same data (fit: train; an ensemble, e.g. an
    auto run's, counts as one model) -> the ensemble chosen on their validation split, scored once on test,
    written as a one-component bundle."""
    from genrec.bundle import SEQUENTIAL_KINDS, Bundle, load_sequential
    from genrec.data.datasets import Dataset
    from genrec.data.sequences import leave_one_out
    from genrec.runtime import setup
    from genrec.training.trainer import TrainConfig, publish, valid_users

    console = console or Console(quiet=True)
    setup(threads)
    if len(runs) < 2:
        raise ValueError("an ensemble needs at least two runs")
    bundles = [Bundle.open(r) for r in runs]
    first = bundles[0]
    base = dict(first.component(kinds=SEQUENTIAL_KINDS).config["train"])
    for r, b in zip(runs, bundles, strict=True):
        comp = b.component(kinds=SEQUENTIAL_KINDS)
        train_cfg = comp.config.get("train", {})
        if train_cfg.get("fit", "train") != "train":
            raise ValueError(f"{r}: a refit (fit {train_cfg.get('fit')}) trained on the validation events, which "
                             "choose the ensemble; use runs with fit: train")  # fmt: skip
        if b.data.get("fingerprint") != first.data.get("fingerprint"):
            raise ValueError(f"{r} was trained on other data ({b.data.get('name')!r}, {b.data.get('summary')}) "
                             f"than {runs[0]} ({first.data.get('name')!r}, {first.data.get('summary')})")  # fmt: skip
        if train_cfg.get("target_events") != base.get("target_events"):
            raise ValueError(f"{r}: predicts other event types than {runs[0]} (target_events differ)")
    out.mkdir(parents=True, exist_ok=True)
    seq = first.sequences()
    if not first.matches(seq):
        raise ValueError(f"{runs[0]}: its histories.parquet no longer rebuilds the training data (fingerprint)")
    cfg = TrainConfig(**{**base, "model": "ensemble", "out": str(out), "betas": tuple(base["betas"]),
                         "threads": threads or base.get("threads")})  # fmt: skip
    split = leave_one_out(seq, target_events=cfg.target_events)
    valid = split.sample_users(valid_users(cfg, len(split.eval_users), seq.num_items), cfg.seed)
    names = [str(r) for r in runs]
    cands = [Candidate(n, load_sequential(b), {"run": n, "valid": b.metrics.get("best_valid", {}).get("NDCG@10")})
             for n, b in zip(names, bundles, strict=True)]  # fmt: skip
    sel = select(cands, valid, max_members, cfg.eval_batch_size, cfg.seed, console)
    model = build(cands, sel.weights)
    ens_valid = evaluate_model(model, valid, "valid", cfg.eval_batch_size)
    ds = Dataset(seq, catalog=first.catalog(), users=first.users())
    extra = {"ensemble": {"members": [{**c.source, "weight": sel.weights[c.name]} for c in cands if c.name in sel.weights],
                          "candidates": sel.singles, "steps": sel.steps, "valid_users": sel.users}}  # fmt: skip
    elapsed = sum(b.metrics.get("train_seconds", 0.0) for b, n in zip(bundles, names, strict=True) if n in sel.weights)
    return publish(out, ds, split, model, cfg, [], 0, ens_valid, elapsed, torch.device("cpu"), extra)
