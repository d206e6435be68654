"""Training on a large catalog: a sampled-softmax step over only the rows it uses vs over the whole item table.

The synthetic shop `large` (100,000 users; 200,000 catalog items, 147,385 with events; category, brand and
price attributes; event types) is the kind of log `genrec train --model auto` sends to the sampled loss.
Before, each training step built the whole (147,386, D) item table (id + attribute embeddings, normalised) and its gradient to look up
the batch's targets and 128 negatives per sequence; now the loss asks the model for those rows only
(SequentialModel.item_rows). Both variants train the same model on the same batches; the steps are timed in
interleaved rounds (the machine is shared and noisy) and each variant keeps its best round.

    python benchmarks/large_catalog.py [--steps 10] [--rounds 3] [--threads 1]

Writes benchmarks/results/large_catalog.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from genrec.data.batches import train_batches
from genrec.data.datasets import load_synthetic
from genrec.data.sequences import leave_one_out
from genrec.runtime import setup
from genrec.training.losses import next_item_loss
from genrec.training.trainer import TrainConfig, prepare

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("whole table", "rows used")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="large")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    setup(args.threads)
    ds = load_synthetic(args.size, seed=0)
    cfg = TrainConfig(model="hstu", dataset=f"synthetic:{args.size}", dim=96, num_layers=2, max_len=60,
                      loss="sampled", item_attributes=True, precision="bf16")  # fmt: skip
    _, split, model = prepare(cfg, ds)
    split = leave_one_out(ds.sequences)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    batches = [b for _, b in zip(range(args.steps + 2), train_batches(split, 128, 60, 0, "last"), strict=False)]
    c = model.config
    model.train()

    def step(batch, variant: str) -> None:  # noqa: ANN001
        with torch.autocast("cpu", dtype=torch.bfloat16):
            states = model.encode(batch.items, batch.offsets, batch.timestamps, batch.events)
            table = model.item_table() if variant == "whole table" else model.item_rows
            loss = next_item_loss(states, batch.targets, table, c.temperature, "sampled", 128,
                                  generator=torch.Generator().manual_seed(0), offsets=batch.offsets,
                                  num_items=c.num_items)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    best = {v: float("inf") for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS:
            for b in batches[:2]:  # warm-up
                step(b, v)
            t0 = time.perf_counter()
            for b in batches[2:]:
                step(b, v)
            best[v] = min(best[v], (time.perf_counter() - t0) / args.steps)
            print(f"round {r + 1}  {v:12s} {best[v] * 1000:8.1f} ms/step (best so far)")
    seqs = sum(b.num_sequences for b in batches[2:]) / args.steps
    record = {
        "data": f"synthetic:{args.size}", "users": ds.sequences.num_users, "items": ds.sequences.num_items,
        "model": "hstu + attributes + event types, d96 x2, window 60, sampled softmax (128 negatives per sequence)",
        "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
        "ms_per_step": {v: round(best[v] * 1000, 1) for v in VARIANTS},
        "seq_per_s": {v: round(seqs / best[v], 1) for v in VARIANTS},
        "speedup": round(best["whole table"] / best["rows used"], 2),
        "command": "python benchmarks/large_catalog.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items()),
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "large_catalog.json").write_text(json.dumps(record, indent=2) + "\n")
    md = [
        "# Training on a large catalog: the rows a sampled loss uses vs the whole item table",
        "",
        f"{record['data']}: {record['users']:,} users, {record['items']:,} items; {record['model']}; "
        f"{args.threads} thread(s), best of {args.rounds} interleaved rounds of {args.steps} steps.",
        "",
        "| variant | ms / step | sequences / s |",
        "|---|---|---|",
        *[f"| {v} | {record['ms_per_step'][v]} | {record['seq_per_s'][v]} |" for v in VARIANTS],
        "",
        f"Speed-up: **{record['speedup']}x**. Command: `{record['command']}`",
    ]
    (RESULTS / "large_catalog.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
