"""`genrec train --model auto` on a big own log, as a user runs it: does the budget hold, and what does it pick?

Writes the synthetic shop `large` (100,000 users, 200,000 catalog items, 4.1M rows with view / cart / purchase
events, category / brand / price attributes) as events.csv + catalog.csv, runs the README's own-data command on
it with a budget, and records the whole command's wall time, the trials and the test scores (scored once).

    python benchmarks/own_log_scale.py [--budget 20] [--threads 1] [--out runs/bench/own-log-large]
    python benchmarks/own_log_scale.py --collect RUN --wall-s SECONDS   # record a run made by that command

Writes benchmarks/results/own_log_scale.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_log(folder: Path) -> Path:
    from genrec.data.synthetic import generate_shop, shop_config

    folder.mkdir(parents=True, exist_ok=True)
    events = folder / "events.csv"
    if not events.exists():
        shop = generate_shop(shop_config("large", seed=0))
        shop.events.write_csv(events)
        shop.catalog.write_csv(folder / "catalog.csv")
    return events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=Path("runs/bench/own-log-large-data"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench/own-log-large"))
    ap.add_argument("--collect", type=Path, help="record this finished run instead of running one")
    ap.add_argument("--wall-s", type=float, help="with --collect: the command's wall seconds as timed")
    ap.add_argument("--note", default="", help="recorded with the run (e.g. what else shared the machine)")
    args = ap.parse_args()
    cmd = ["genrec", "train", "--model", "auto", "--dataset", str(args.data / "events.csv"), "--out", str(args.out),
           "--time-budget", f"{args.budget:g}", "--threads", str(args.threads)]  # fmt: skip
    run = args.collect
    wall = args.wall_s
    if run is None:
        write_log(args.data)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "genrec.cli", *cmd[1:]], check=True)
        wall, run = time.perf_counter() - t0, args.out
    report = json.loads((run / "tuning.json").read_text())
    record = {
        "data": "synthetic:large as events.csv + catalog.csv", "stats": report["stats"], "budget_s": report["budget_s"],
        "wall_s": round(wall, 1) if wall is not None else None, "tuning_wall_s": report["wall_s"],
        "chosen": report["chosen"]["setting"], "trials": [
            {"setting": t.get("setting") or t["params"], "state": t["state"], "stop": t["stop"],
             "valid_ndcg10": t.get("best_valid_ndcg10"), "epochs": t.get("epochs", 0)} for t in report["trials"]],
        "final": {k: report["final"][k] for k in ("best_epoch", "epochs", "valid", "test", "popularity")},
        "command": " ".join(cmd), "note": args.note,
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "own_log_scale.json").write_text(json.dumps(record, indent=2) + "\n")
    f = record["final"]
    md = [
        "# `genrec train --model auto` on a big own log",
        "",
        f"{record['data']}: {record['stats']['users']:,} users, {record['stats']['items']:,} items, "
        f"{record['stats']['events']:,} events. Command: `{record['command']}`. {record['note']}",
        "",
        f"Budget {record['budget_s'] / 60:.0f} min; the whole command ran {record['wall_s'] / 60:.1f} min "
        f"(the tuner's own count: {record['tuning_wall_s'] / 60:.1f} min).",
        f"Chosen on validation: {record['chosen']}; best epoch {f['best_epoch']} of {f['epochs']}.",
        f"Test (scored once, every user): HR@10 {f['test']['HR@10']:.4f}, NDCG@10 {f['test']['NDCG@10']:.4f}; "
        f"popularity {f['popularity']['HR@10']:.4f} / {f['popularity']['NDCG@10']:.4f}.",
    ]
    (RESULTS / "own_log_scale.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
