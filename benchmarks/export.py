"""Batch export throughput: users per second of `genrec recommend RUN --all-users -k 50 --out recs.parquet`.

    GENREC_DATA_DIR=/work/shared/data python benchmarks/export.py --run runs/ml1m-hstu
    GENREC_DATA_DIR=/work/shared/data python benchmarks/export.py     # trains a 1-epoch ML-1M hstu run first

Scoring (batched forward passes, full-catalog matmul, seen items masked, top-k) is timed apart from loading the run
and from writing the file; median of --repeats passes at --threads threads. Target: >= 5,000 users/s for HSTU on
2 cores. Writes benchmarks/results/export.json and export.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a trained run (default: train hstu on ml-1m for 1 epoch)")
    ap.add_argument("-k", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from genrec.export import load_run_data, recommend_all, write_recommendations

    tmp = tempfile.TemporaryDirectory()
    run = args.run
    if run is None:
        run = Path(tmp.name) / "ml1m-hstu"
        subprocess.run([sys.executable, "-m", "genrec", "train", "--model", "hstu", "--dataset", "ml-1m", "--out",
                        str(run), "--epochs", "1", "--threads", str(args.threads)], check=True)  # fmt: skip
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    model, data = load_run_data(run)
    load_s = time.perf_counter() - t
    recommend_all(model, data, args.k, args.batch_size)  # warm-up
    times, cpu, df = [], [], None
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        df = recommend_all(model, data, args.k, args.batch_size)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    out = Path(tmp.name) / "recs.parquet"
    t = time.perf_counter()
    write_recommendations(df, out)
    write_s = time.perf_counter() - t
    score_s = statistics.median(times)
    from genrec.bundle import Bundle

    cfg = Bundle.open(run).component(role="retrieval").config
    result = {
        "benchmark": "export",
        "command": "python benchmarks/export.py " + shlex.join(sys.argv[1:]),
        "run": {
            "model": cfg["train"]["model"],
            "dataset": cfg["train"]["dataset"],
            "max_len": model.config.max_len,
            "dim": model.config.dim,
        },  # fmt: skip
        "users": data.num_users,
        "items": data.num_items,
        "k": args.k,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rows": len(df),
        "score_s_median": score_s,
        "score_s_all": times,
        "users_per_s": data.num_users / score_s,
        # CPU seconds of this process (all its threads, OpenMP spin included) per pass: what `threads` cores would
        # take without other processes competing for them
        "score_cpu_s_median": statistics.median(cpu),
        "users_per_s_if_cores_were_free": data.num_users * args.threads / statistics.median(cpu),
        "load_s": load_s,
        "write_parquet_s": write_s,
        "users_per_s_with_load_and_write": data.num_users / (score_s + load_s + write_s),
        "target_users_per_s": 5000,
        "load_avg_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    r = result
    md = [
        "# Batch export (`genrec recommend RUN --all-users`)",
        "",
        f"Command: `{r['command']}`.",
        f"Run: {r['run']['model']} on {r['run']['dataset']} (max_len {r['run']['max_len']}, d={r['run']['dim']}); "
        f"{r['users']:,} users x {r['items']:,} items, top-{r['k']}, seen items excluded, batches of {r['batch_size']}, "
        f"{r['threads']} threads, 1-minute load average {r['load_avg_1min']:.1f} on {r['cpus']} CPUs (a shared box).",
        "",
        "| what | value |",
        "|---|---|",
        f"| scoring (median of {len(times)}) | {score_s:.2f} s = **{r['users_per_s']:,.0f} users/s** (target 5,000) |",
        f"| scoring, CPU time of this process | {r['score_cpu_s_median']:.2f} CPU s = "
        f"{r['users_per_s_if_cores_were_free']:,.0f} users/s if its {r['threads']} cores were free |",
        f"| loading the run + its data | {load_s:.2f} s |",
        f"| writing {r['rows']:,} rows to Parquet | {write_s:.2f} s |",
        f"| end to end (load + score + write) | {r['users_per_s_with_load_and_write']:,.0f} users/s |",
    ]
    (RESULTS / "export.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    tmp.cleanup()


if __name__ == "__main__":
    main()
