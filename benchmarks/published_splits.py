"""`genrec train --model auto` on public splits as they are published: the file given as it ships, no flags.

The external checks of genrec run the README's own-data command on public e-commerce sets that are not in
../shared; this runs that command on files in their published layouts (S3-Rec's `user item item ...` lines with
NAME_item2attributes.json beside them, SASRec's `user item` pairs, Amazon Reviews 2023's CSVs, ...) and records
what the read report recognised, what the search chose and the test scores (scored once).

    python benchmarks/published_splits.py FILE [FILE ...] [--budget 20] [--threads 1] [--note TEXT]
    python benchmarks/published_splits.py FILE --collect RUN [--wall-s S] [--note TEXT]   # a run made so

Runs go to runs/bench/<name>-file-auto-<budget>. Writes benchmarks/results/published_splits.json (a list of
records {file, data, budget_s, wall_s, chosen, valid, test, popularity, command, note}, one per file and budget,
replaced when rerun) and published_splits.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def record_of(file: Path, run: Path, cmd: list[str], wall: float | None, note: str) -> dict:
    report = json.loads((run / "tuning.json").read_text())
    st, f = report["stats"], report["final"]
    return {
        "file": file.name, "data": {k: st[k] for k in ("users", "items", "events", "median_len", "has_timestamps",
                                                       "has_event_types", "has_attributes")},
        "budget_s": report["budget_s"], "wall_s": round(wall, 1) if wall is not None else report["wall_s"],
        "chosen": report["chosen"]["setting"], "best_epoch": f["best_epoch"], "valid": f["valid"], "test": f["test"],
        "popularity": f["popularity"], "split": "test", "fit": "train", "command": " ".join(cmd), "note": note,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--budget", type=float, default=20.0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--collect", type=Path, help="record this finished run (of the one FILE) instead of running")
    ap.add_argument("--wall-s", type=float, help="with --collect: the command's wall seconds as timed")
    ap.add_argument("--note", default="", help="recorded with the run (e.g. what else shared the machine)")
    args = ap.parse_args()
    if args.collect and len(args.files) != 1:
        ap.error("--collect records one run: give its one FILE")
    path = RESULTS / "published_splits.json"
    records = json.loads(path.read_text()) if path.exists() else []
    for file in args.files:
        out = args.collect or Path(f"runs/bench/{file.name.split('.')[0]}-file-auto-{args.budget:g}")
        cmd = ["genrec", "train", "--model", "auto", "--dataset", str(file), "--out", str(out),
               "--time-budget", f"{args.budget:g}"] + (["--threads", str(args.threads)] if args.threads else [])  # fmt: skip
        wall = args.wall_s
        if args.collect is None:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "genrec.cli", *cmd[1:], "--restart"], check=True)
            wall = time.perf_counter() - t0
        rec = record_of(file, out, cmd, wall, args.note)
        records = [r for r in records if (r["file"], r["budget_s"]) != (rec["file"], rec["budget_s"])] + [rec]
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(records, indent=2) + "\n")
    md = [
        "# `genrec train --model auto` on public splits as published",
        "",
        "Each file given to `--dataset` as it ships, with no reading flags; test split scored once, full catalog,",
        "seen items excluded; fit: train (the search and the epoch chosen on validation).",
        "",
        "| file | users / items / events | budget (ran) min | chosen | valid NDCG@10 | test HR@10 / NDCG@10 "
        "| popularity | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        d, t, p = r["data"], r["test"], r["popularity"]
        md.append(
            f"| {r['file']} | {d['users']:,} / {d['items']:,} / {d['events']:,} | {r['budget_s'] / 60:g} "
            f"({r['wall_s'] / 60:.1f}) | {r['chosen']} | {r['valid']['NDCG@10']:.4f} | {t['HR@10']:.4f} / "
            f"{t['NDCG@10']:.4f} | {p['HR@10']:.4f} / {p['NDCG@10']:.4f} | {r['note']} |"
        )
    md += ["", "Commands:", "", *[f"- `{r['command']}`" for r in records]]
    (RESULTS / "published_splits.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
