"""Scale-out benchmark: a synthetic shop with a 10M-item catalog, HSTU with its item table (10M x 64 fp32,
2.5 GB) trained on 1 rank vs 2 ranks row-wise (torchrun, gloo on CPU / nccl on GPU).

    python benchmarks/scale_out.py            # 10M items (peak ~2 x 3 GB RSS on 2 ranks, ~5 GB on 1)
    python benchmarks/scale_out.py --quick    # 1M items, a few steps

Per world size and rank: table-shard and fused-optimizer bytes, peak RSS, sequences/s over timed steps (after
warm-up; the global batch is the same for both world sizes, so 2 ranks each take half). Also what TorchRec's
planner chooses for this table when one rank's memory budget is smaller than the table, and that it refuses
one rank. Results: benchmarks/results/scale_out[_quick].json / .md.

The item table covers the whole catalog (as in production: items without events still get a row); the event
log's items are catalog rows + 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_data(num_items: int, num_users: int, path: Path) -> dict:
    """Simulate the shop, keep only what training reads: items (catalog row + 1), offsets, timestamps."""
    import polars as pl

    from genrec.data.synthetic import generate_shop, shop_config

    t0 = time.perf_counter()
    cfg = shop_config("xl", num_items=num_items, num_users=num_users, num_categories=200, num_brands=2000)
    shop = generate_shop(cfg)
    ev = shop.events.select(
        pl.col("user_id").str.slice(1).cast(pl.Int64).alias("u"),
        (pl.col("item_id").str.slice(1).cast(pl.Int64) + 1).alias("i"),
        pl.col("timestamp").cast(pl.Int64).alias("t"),
    ).sort(["u", "t"], maintain_order=True)
    del shop
    gc.collect()
    u, items, ts = (ev[c].to_numpy() for c in ("u", "i", "t"))
    keep = np.ones(len(items), bool)  # a view -> cart -> purchase run on one item is one token
    keep[1:] = (items[1:] != items[:-1]) | (u[1:] != u[:-1])
    u, items, ts = u[keep], items[keep], ts[keep]
    offsets = np.zeros(u.max() + 2, np.int64)
    np.cumsum(np.bincount(u, minlength=u.max() + 1), out=offsets[1:])
    np.savez(path, items=items, offsets=offsets, timestamps=ts, num_items=num_items)
    return {"events": int(len(items)), "users": int(len(offsets) - 1), "items_with_events": int(len(np.unique(items))),
            "generate_seconds": time.perf_counter() - t0}  # fmt: skip


def planner_report(num_items: int, dim: int) -> dict:
    """What the planner does with one table bigger than a rank's budget (no process group needed)."""
    from genrec.distributed.sequential import build_shardable
    from genrec.distributed.sharding import describe_plan, make_plan

    module = build_shardable("hstu", num_items, device="meta", max_len=50, dim=dim)
    table = (num_items + 1) * dim * 4
    budget = int(table * 0.75)  # each rank may hold 3/4 of the table (+ its optimizer state + dense)
    out: dict = {"table_bytes": table, "budget_bytes_per_rank": budget}
    for world in (1, 2):
        try:
            plan = describe_plan(make_plan(module, world, None, budget, "cpu"))
            out[f"world_{world}"] = {"plan": plan}
        except ValueError as e:
            out[f"world_{world}"] = {"error": str(e).split("\n")[0][:300]}
    return out


def worker(args: argparse.Namespace) -> None:
    """One rank under torchrun: build, shard row-wise, time training steps, write rank{r}.json."""
    import torch

    from genrec.data.sequences import Split
    from genrec.distributed.sharding import fused_optimizer_bytes, shard_bytes
    from genrec.distributed.train import DistTrainConfig, build, dense_parameters, init_distributed, rank_batches

    d = init_distributed()
    torch.set_num_threads(args.threads)
    rss0 = rss_mib()
    z = np.load(args.data)
    num_items = int(z["num_items"])
    # training only reads the train arrays of a Split; every event is a training event here
    split = Split(data=None, train_offsets=z["offsets"], train_items=z["items"], train_timestamps=z["timestamps"],
                  eval_users=np.zeros(0, np.int64))  # type: ignore[arg-type]  # fmt: skip
    cfg = DistTrainConfig(model="hstu", batch_size=args.batch_size, sharding=args.sharding, max_len=50,
                          dim=args.dim, num_layers=2, num_negatives=128, seed=0, eval=False)  # fmt: skip
    t0 = time.perf_counter()
    dmp, plan = build(cfg, num_items, "scale-out", d)
    build_s = time.perf_counter() - t0
    rss_built = rss_mib()
    opt = torch.optim.AdamW(dense_parameters(dmp), lr=1e-3)
    batches = rank_batches(split, cfg, 50, 1, d)[: args.warmup + args.steps]
    gen = torch.Generator().manual_seed(d.rank)
    n_seq, t_start = 0, 0.0
    for k, batch in enumerate(batches):
        if k == args.warmup:
            dist_barrier()
            t_start, n_seq = time.perf_counter(), 0
        b = batch.to(d.device)
        neg = torch.randint(1, num_items + 1, (b.num_sequences, 128), generator=gen).to(d.device)
        loss = dmp(b.items, b.offsets, b.timestamps, b.targets, neg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n_seq += b.num_sequences
    dist_barrier()
    secs = time.perf_counter() - t_start
    rec = {
        "rank": d.rank,
        "world_size": d.world,
        "table_shard_bytes": shard_bytes(dmp),
        "optimizer_state_bytes": fused_optimizer_bytes(dmp),
        "rss_start_mib": rss0,
        "rss_after_build_mib": rss_built,
        "peak_rss_mib": peak_rss_mib(),
        "build_seconds": build_s,
        "timed_steps": len(batches) - args.warmup,
        "sequences": n_seq,
        "seconds": secs,
        "seq_per_s": n_seq / secs if secs > 0 else float("nan"),
        "last_loss": float(loss.item()),
    }
    Path(args.out_dir, f"rank{d.rank}.json").write_text(json.dumps(rec))


def dist_barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def launch(world: int, args: argparse.Namespace, data: Path, out_dir: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}", __file__,
           "--worker", "--data", str(data), "--out-dir", str(out_dir), "--dim", str(args.dim),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--sharding", "row-wise"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(cmd, env=env, check=True, timeout=args.timeout)
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]


def markdown(res: dict) -> str:
    gib = 2**30
    lines = [f"# Scale-out: {res['num_items']:,} items x {res['dim']} fp32 ({res['table_bytes'] / gib:.2f} GiB table)",
             "", f"Data: {res['data']['users']:,} users, {res['data']['events']:,} events "
             f"({res['data']['items_with_events']:,} items with events). HSTU 2 layers, max_len 50, global batch "
             f"{res['batch_size']}, row-wise sharding, fused row-wise Adagrad on the table. "
             f"Device: {res['device']}. Command: `{res.get('command', 'python benchmarks/scale_out.py')}`.", "",
             "| ranks | rank | table shard | optimizer state | RSS after build | peak RSS | seq/s (this rank) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for w, ranks in res["runs"].items():
        for r in ranks:
            lines.append(f"| {w} | {r['rank']} | {r['table_shard_bytes'] / gib:.3f} GiB | "
                         f"{r['optimizer_state_bytes'] / 2**20:.1f} MiB | {r['rss_after_build_mib']:,.0f} MiB | "
                         f"{r['peak_rss_mib']:,.0f} MiB | {r['seq_per_s']:.1f} |")  # fmt: skip
    lines += ["", "| ranks | sequences/s (all ranks) | vs 1 rank | max table shard per rank | max peak RSS per rank |",
              "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for w, s in res["summary"].items():
        lines.append(f"| {w} | {s['seq_per_s']:.1f} | {s['speedup']:.2f}x | {s['max_shard_bytes'] / gib:.3f} GiB "
                     f"| {s['max_peak_rss_mib']:,.0f} MiB |")  # fmt: skip
    p = res["planner"]
    lines += ["", f"## Planner, table {p['table_bytes'] / gib:.2f} GiB, budget {p['budget_bytes_per_rank'] / gib:.2f} "
              "GiB per rank", ""]  # fmt: skip
    for w in (1, 2):
        r = p[f"world_{w}"]
        if "error" in r:
            lines.append(f"- {w} rank: refused ({r['error']})")
        else:
            for t in r["plan"]:
                shards = ", ".join(f"rank {s['rank']}: rows {s['offsets'][0]:,}+{s['sizes'][0]:,} cols "
                                   f"{s['offsets'][1]}+{s['sizes'][1]}" for s in t["shards"])  # fmt: skip
                lines.append(f"- {w} ranks: {t['table']} -> {t['sharding_type']} ({t['compute_kernel']}): {shards}")
    lines += ["", res["note"], ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1M items, 5 timed steps")
    ap.add_argument("--items", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    # worker (under torchrun)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument("--sharding", default="row-wise", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.items, args.users, args.steps = 1_000_000, 4_000, 5
    import torch

    from genrec.runtime import setup

    setup(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "shop.npz")
        print(f"generating a shop with {args.items:,} items, {args.users:,} users ...", flush=True)
        info = make_data(args.items, args.users, data)
        print(json.dumps(info), flush=True)
        planner = planner_report(args.items, args.dim)
        runs, summary = {}, {}
        for world in (1, 2):
            out_dir = Path(tmp, f"w{world}")
            out_dir.mkdir()
            print(f"training on {world} rank(s) ...", flush=True)
            runs[world] = launch(world, args, data, out_dir)
        base = sum(r["sequences"] for r in runs[1]) / max(r["seconds"] for r in runs[1])
        for world, ranks in runs.items():
            rate = sum(r["sequences"] for r in ranks) / max(r["seconds"] for r in ranks)
            summary[world] = {"seq_per_s": rate, "speedup": rate / base,
                              "max_shard_bytes": max(r["table_shard_bytes"] for r in ranks),
                              "max_peak_rss_mib": max(r["peak_rss_mib"] for r in ranks)}  # fmt: skip
    res = {
        "quick": args.quick,
        "num_items": args.items,
        "dim": args.dim,
        "table_bytes": (args.items + 1) * args.dim * 4,
        "batch_size": args.batch_size,
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores, {args.threads} thread/rank)",
        "data": info,
        "runs": runs,
        "summary": summary,
        "planner": planner,
        "note": "Throughput on a shared CPU box is a ratio measured in this run, not an absolute; the point of "
        "row-wise sharding is the per-rank table memory (each rank holds 1/N of the rows).",
        "command": "python benchmarks/scale_out.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "scale_out_quick" if args.quick else "scale_out"
    (out / f"{name}.json").write_text(json.dumps(res, indent=2))
    (out / f"{name}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
