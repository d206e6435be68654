"""Loss choices for next-item training, measured on one dataset with one model and the same budget.

    python benchmarks/losses.py --dataset ml-1m --model hstu --epochs 8

Variants: sampled softmax with 128 uniform negatives shared by the whole batch, 128 per sequence, 512 per
sequence, in-batch negatives with log-Q correction, and the full softmax. Each trains for the same number of
epochs (bf16); the table gives validation NDCG@10 per epoch (the split used for model selection) and the
seconds per epoch. Writes benchmarks/results/losses.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genrec.data.datasets import load_dataset
from genrec.training.trainer import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "sampled-128-per-batch": {"loss": "sampled", "num_negatives": 128, "shared_negatives": True},
    "sampled-128-per-sequence": {"loss": "sampled", "num_negatives": 128},
    "sampled-512-per-sequence": {"loss": "sampled", "num_negatives": 512},
    "in-batch-logq": {"loss": "in-batch"},
    "full-softmax": {"loss": "full"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--model", default="hstu")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs", type=Path, default=Path("runs/losses"))
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    rows = []
    for name, opts in VARIANTS.items():
        cfg = TrainConfig(model=args.model, dataset=args.dataset, out=str(args.runs / name), epochs=args.epochs,
                          lr=args.lr, precision="bf16", threads=args.threads, patience=args.epochs, **opts)  # fmt: skip
        res = train(cfg, dataset=ds, restart=True)
        rows.append({
            "variant": name,
            "valid_ndcg10_by_epoch": [round(h["valid"]["NDCG@10"], 4) for h in res.history],
            "best_valid": res.best_valid,
            "seconds_per_epoch": sum(h["seconds"] for h in res.history) / len(res.history),
        })  # fmt: skip
    command = "python benchmarks/losses.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"dataset": args.dataset, "model": args.model, "split": "valid", "command": command, "rows": rows}
    (RESULTS / "losses.json").write_text(json.dumps(out, indent=2))
    lines = [f"# Loss choices: {args.model} on {args.dataset}, validation NDCG@10 per epoch (full catalog)", "",
             f"`{command}`", "", "| loss | NDCG@10 by epoch | best | s/epoch |", "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        curve = " ".join(f"{x:.3f}" for x in r["valid_ndcg10_by_epoch"])
        lines.append(f"| {r['variant']} | {curve} | {r['best_valid']['NDCG@10']:.4f} | {r['seconds_per_epoch']:.1f} |")
    (RESULTS / "losses.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
