"""Cold-start benchmark: can a catalog item nobody has interacted with be recommended through its attributes?

Protocol (one seed): 10% of Amazon Beauty's items are drawn at random ("cold"); every event on them is removed
from the data the model trains on (they stay in the catalog and the item vocabulary: catalog items without
events). A sequence model with item attributes (--item-attributes: brand + category tokens) trains on the rest;
a cold item's vector is its attribute embeddings alone (its id row is never trained). Then, on the full data,
every user whose last event (the leave-one-out test target) is a cold item is scored: the input is the user's
earlier events without cold items (the system has never seen them), the candidates the whole catalog, seen
items excluded. Reported: HR@10 / NDCG@10 against the full catalog, and the target's rank among the cold items
only, beside two baselines that rank only cold items: popularity among the cold items (their counts in the
removed training events: an oracle no shop has for a new product) and random.

Training variants, chosen on the cold validation events (users whose second-to-last event is cold, scored the
same way): id-dropout 0 (untrained ids are zero, trained items use id + attributes) and id-dropout p (training
also drops the id part of a fraction p of items each step, so attribute-only vectors are in distribution;
`genrec train --item-attributes --id-dropout p`). Each variant's warm test metrics (the trainer's own
leave-one-out test on the reduced data) show what id-dropout costs on items with events.

    python benchmarks/cold_start.py                           # amazon-beauty, sasrec, 3 x 150 s at --threads 1
    python benchmarks/cold_start.py --dataset synthetic:tiny --budget 20

Writes benchmarks/results/cold_start.json and cold_start.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from genrec.bundle import load_sequential
from genrec.data.datasets import Dataset, load_dataset
from genrec.data.sequences import SequenceData, Split
from genrec.evaluation.evaluate import evaluation_ranks, model_scorer
from genrec.evaluation.metrics import metrics_from_ranks
from genrec.runtime import setup
from genrec.training.trainer import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ("HR@10", "NDCG@10", "HR@50", "NDCG@50")


def draw_cold(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """(num_items + 1,) bool: the cold items, drawn uniformly (row 0, padding, never)."""
    rng = np.random.default_rng(seed)
    cold = np.zeros(num_items + 1, bool)
    cold[rng.choice(np.arange(1, num_items + 1), size=round(fraction * num_items), replace=False)] = True
    return cold


def without_cold(seq: SequenceData, cold: np.ndarray) -> SequenceData:
    """Every event on a cold item removed; the vocabularies (the full catalog) unchanged."""
    keep = ~cold[seq.items]
    user = np.repeat(np.arange(seq.num_users), seq.lengths)
    offsets = np.zeros_like(seq.offsets)
    np.cumsum(np.bincount(user[keep], minlength=seq.num_users), out=offsets[1:])

    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[keep]

    return replace(seq, items=seq.items[keep], offsets=offsets, timestamps=pick(seq.timestamps),
                   event_types=pick(seq.event_types))  # fmt: skip


def cold_events(seq: SequenceData, cold: np.ndarray, back: int) -> tuple[Split, int]:
    """Users (>= 3 events) whose event `back` from the end (1 = test, 2 = validation) is cold, as a Split whose
    'test' is that target after the user's earlier warm events; also how many had no warm event before it."""
    hists, targets, empty = [], [], 0
    for u in np.flatnonzero(seq.lengths >= 3):
        items = seq.user_items(u)
        if not cold[items[-back]]:
            continue
        hist = items[: len(items) - back]
        hist = hist[~cold[hist]]
        if len(hist) == 0:
            empty += 1
            continue
        hists.append(hist)
        targets.append(items[-back])
    lengths = np.array([len(h) + 1 for h in hists], np.int64)
    offsets = np.zeros(len(hists) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate([np.append(h, t) for h, t in zip(hists, targets, strict=True)]) if hists else np.zeros(0)
    data = replace(seq, items=flat.astype(np.int64), offsets=offsets, timestamps=None, event_types=None,
                   user_vocab=type(seq.user_vocab)([str(i) for i in range(len(hists))]))  # fmt: skip
    ends = offsets[1:] - 1
    split = Split(data, np.zeros(len(hists) + 1, np.int64), np.zeros(0, np.int64), None, np.arange(len(hists)),
                  ends={"valid": ends, "test": ends})  # fmt: skip
    return split, empty


def only(items: np.ndarray, scorer):  # noqa: ANN001, ANN202 - a Scorer restricted to `items` (bool mask)
    banned = torch.from_numpy(~items)

    def score(batch):  # noqa: ANN001, ANN202
        s = scorer(batch).clone()
        s[:, banned] = float("-inf")
        return s

    return score


def report(ranks: np.ndarray) -> dict[str, float]:
    m = metrics_from_ranks(ranks)
    return {**{k: round(m[k], 4) for k in KEYS}, "mean_rank": round(float(np.mean(ranks)), 1),
            "median_rank": float(np.median(ranks))}  # fmt: skip


def score_model(model: torch.nn.Module, split: Split, cold: np.ndarray, max_len: int) -> dict[str, dict]:
    full = evaluation_ranks(model_scorer(model), split, "test", max_len)
    among = evaluation_ranks(only(cold, model_scorer(model)), split, "test", max_len)
    return {"full_catalog": report(full), "among_cold": report(among)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--id-dropout", default="0,0.25,0.5", help="the variants' id-dropout, comma-separated")
    ap.add_argument("--budget", type=float, default=150.0, help="training seconds per variant")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "cold_start")
    args = ap.parse_args()
    setup(args.threads)
    t_start = time.perf_counter()
    ds = load_dataset(args.dataset, seed=args.seed)
    seq = ds.sequences
    cold = draw_cold(seq.num_items, args.fraction, args.seed)
    train_ds = Dataset(without_cold(seq, cold), catalog=ds.catalog, users=ds.users, kind=ds.kind,
                       attributes=ds.attributes)  # fmt: skip
    test, test_empty = cold_events(seq, cold, back=1)
    valid, valid_empty = cold_events(seq, cold, back=2)
    n_cold, n_test = int(cold.sum()), len(test.eval_users)
    print(f"{args.dataset}: {seq.num_items:,} items, {n_cold:,} cold; {len(seq.items) - len(train_ds.sequences.items):,} "
          f"events removed; cold test events {n_test:,} (+{test_empty} without a warm history), valid {len(valid.eval_users):,}")  # fmt: skip

    # baselines over the cold items only: oracle popularity (their removed training events) and random
    train_len = np.where(seq.lengths >= 3, seq.lengths - 2, seq.lengths)  # leave-one-out's training events
    held = np.concatenate([seq.user_items(u)[: train_len[u]] for u in range(seq.num_users)])
    counts = np.bincount(held, minlength=seq.num_items + 1).astype(np.float64)
    pop = torch.from_numpy(counts - np.arange(len(counts)) / (2.0 * len(counts))).float()
    gen = torch.Generator().manual_seed(args.seed)
    baselines = {
        "popularity among cold items (oracle counts)": report(
            evaluation_ranks(only(cold, lambda b: pop.expand(b.num_sequences, -1).clone()), test, "test", args.max_len)
        ),
        "random among cold items": report(
            evaluation_ranks(
                only(cold, lambda b: torch.rand(b.num_sequences, len(counts), generator=gen)),
                test,
                "test",
                args.max_len,
            )
        ),
    }
    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        for p in (float(x) for x in args.id_dropout.split(",")):
            name = f"{args.model} + attributes, id-dropout {p:g}"
            print(name, flush=True)
            cfg = TrainConfig(
                model=args.model, dataset=args.dataset, out=f"{tmp}/run-{p:g}", epochs=args.epochs,
                max_len=args.max_len, dim=args.dim, threads=args.threads, seed=42, item_attributes=True,
                time_budget_s=args.budget, id_dropout=p,
            )  # fmt: skip
            res = train(cfg, dataset=train_ds)
            model = load_sequential(cfg.out)
            v = score_model(model, valid, cold, args.max_len)
            t = score_model(model, test, cold, args.max_len)
            variants[name] = {
                "id_dropout": p,
                "cold_valid": v,
                "cold_test": t,
                "warm_test": {k: round(res.test[k], 4) for k in KEYS},
                "best_epoch": res.best_epoch,
                "epochs": len(res.history),
                "train_seconds": round(res.train_seconds, 1),
            }
            print(f"  cold valid NDCG@10 {v['full_catalog']['NDCG@10']:.4f}; cold test HR@10 "
                  f"{t['full_catalog']['HR@10']:.4f} NDCG@10 {t['full_catalog']['NDCG@10']:.4f}; among cold HR@10 "
                  f"{t['among_cold']['HR@10']:.4f}; warm test NDCG@10 {res.test['NDCG@10']:.4f}", flush=True)  # fmt: skip
    chosen = max(variants, key=lambda k: variants[k]["cold_valid"]["full_catalog"]["NDCG@10"])
    result = {
        "command": " ".join(["python benchmarks/cold_start.py", *sys.argv[1:]]),
        "dataset": args.dataset,
        "split": f"{args.fraction:.0%} of items drawn cold (numpy default_rng({args.seed})); all their events removed "
        "from training; leave-one-out on the full data, test = users whose last event is a cold item",
        "protocol": "input: the user's earlier events without cold items; candidates: the full catalog, seen items "
        "excluded (full_catalog), or the cold items only (among_cold); variant chosen on cold validation NDCG@10 "
        "(users whose second-to-last event is cold)",
        "seed": args.seed,
        "model": args.model,
        "max_len": args.max_len,
        "dim": args.dim,
        "threads": args.threads,
        "budget_s_per_variant": args.budget,
        "items": seq.num_items,
        "cold_items": n_cold,
        "removed_events": int(len(seq.items) - len(train_ds.sequences.items)),
        "cold_test_events": n_test,
        "cold_test_without_warm_history": test_empty,
        "cold_valid_events": len(valid.eval_users),
        "chosen": chosen,
        "variants": variants,
        "baselines": baselines,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = [
        "# Cold start: recommending items that have no events",
        "",
        f"`{r['command']}` ({r['seconds'] / 60:.1f} min, {r['threads']} thread). {r['dataset']}: {r['items']:,} "
        f"items, {r['cold_items']:,} cold ({r['removed_events']:,} events removed from training); "
        f"{r['cold_test_events']:,} test events whose target is cold ({r['cold_test_without_warm_history']} more "
        "had no warm history and are not scored).",
        "",
        f"Split: {r['split']}. Protocol: {r['protocol']}. Chosen variant: **{r['chosen']}**.",
        "",
        "| scorer | full catalog HR@10 | NDCG@10 | among cold HR@10 | NDCG@10 | median rank among cold | "
        "warm test NDCG@10 | cold valid NDCG@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in r["variants"].items():
        f, c = v["cold_test"]["full_catalog"], v["cold_test"]["among_cold"]
        lines.append(f"| {name} | {f['HR@10']:.4f} | {f['NDCG@10']:.4f} | {c['HR@10']:.4f} | {c['NDCG@10']:.4f} | "
                     f"{c['median_rank']:g} | {v['warm_test']['NDCG@10']:.4f} | "
                     f"{v['cold_valid']['full_catalog']['NDCG@10']:.4f} |")  # fmt: skip
    for name, c in r["baselines"].items():
        lines.append(f"| {name} | - | - | {c['HR@10']:.4f} | {c['NDCG@10']:.4f} | {c['median_rank']:g} | - | - |")
    lines += [
        "",
        "Baselines rank the cold items only (they know the target is cold); the model's full-catalog numbers rank "
        "the cold target against every item, warm ones included. Warm test: the trainer's leave-one-out test on "
        "the reduced data (targets with events).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
