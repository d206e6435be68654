"""Retrieval at scale: top-200 from a 1M-item table with faiss (genrec.index), against exact search.

    python benchmarks/retrieval_scale.py                 # 1M items, d=64: ~5-8 min on 2 cores
    python benchmarks/retrieval_scale.py --quick         # 50k items: a smoke run in seconds

The item table has synthetic:xl's catalog (the 1M items, 200 categories and 2,000 brands that
`generate_shop(shop_config("xl"))` draws first, same seed) with trained-like vectors: an item's vector is its
category's centre + its brand's offset + item noise, L2-normalised (genrec's retrievers score by cosine),
so items cluster by category and, inside, by brand, with a spread that does not separate them cleanly.
Training HSTU on the 10M-event xl log is out of reach on this box; the index never sees how vectors were made.
Queries are user-like: a Dirichlet mix of 1-3 category centres (drawn by category popularity) plus a recent
item's vector plus noise, normalised.

Protocol: exact search (genrec.index.ExactIndex, one matmul + top-k in torch) gives the truth. Each index
setting (IVF nprobe, HNSW efSearch) is scored on a held-out TUNE query set; per index kind the smallest
setting with tune recall@200 >= the target is selected, and every setting is then measured on FRESH queries
(recall@200, latency one query at a time on 1 thread: p50/p95/p99 ms). The exact baseline's latency is
measured the same way in the same run. Build time (on --build-threads), index bytes (faiss serialised size)
and the process's peak RSS are recorded.

Writes benchmarks/results/retrieval_scale.json (with the command) and retrieval_scale.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from genrec.data.synthetic import _make_catalog, shop_config
from genrec.index import ExactIndex, FaissIndex

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def item_table(num_items: int, dim: int, seed: int) -> tuple[np.ndarray, dict]:
    """(num_items, dim) float32 unit vectors over synthetic:xl's catalog structure, and the structure."""
    cfg = shop_config("xl", seed=seed)
    if num_items != cfg.num_items:  # --quick: the same recipe, fewer items
        cfg = shop_config("xl", seed=seed, num_items=num_items, num_categories=40, num_brands=200)
    cat = _make_catalog(cfg, np.random.default_rng(cfg.seed))  # what generate_shop draws first
    rng = np.random.default_rng(seed + 1)
    scale = 1 / np.sqrt(dim)  # each part has norm ~1 before the weights below
    centres = rng.normal(0, scale, (cfg.num_categories, dim))
    brands = rng.normal(0, scale, (cfg.num_brands, dim))
    x = np.empty((num_items, dim), np.float32)
    for p in range(0, num_items, 100_000):  # in chunks: float64 temporaries stay small
        s = slice(p, p + 100_000)
        n = len(cat.category[s])
        x[s] = _normalise(centres[cat.category[s]] + 0.6 * brands[cat.brand[s]] + 0.7 * rng.normal(0, scale, (n, dim)))
    cat_weight = np.diff(np.concatenate([[0.0], cat.cat_cdf]))
    return x, {"centres": centres, "category": cat.category, "cat_weight": cat_weight / cat_weight.sum(), "config": cfg}


def user_queries(n: int, items: np.ndarray, structure: dict, rng: np.random.Generator) -> np.ndarray:
    """(n, dim) unit query vectors: a taste mix of 1-3 categories + a recent item from one of them + noise."""
    centres, category, w = structure["centres"], structure["category"], structure["cat_weight"]
    dim = items.shape[1]
    by_cat = {}
    q = np.empty((n, dim), np.float32)
    for i in range(n):
        favs = rng.choice(len(centres), rng.integers(1, 4), replace=False, p=w)
        mix = rng.dirichlet(np.full(len(favs), 0.7)) @ centres[favs]
        c = favs[0]
        if c not in by_cat:
            by_cat[c] = np.flatnonzero(category == c)
        recent = items[rng.choice(by_cat[c])]
        q[i] = mix + 0.7 * recent + 0.5 * rng.normal(0, 1 / np.sqrt(dim), dim)
    return _normalise(q)


# ---------------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------------


def recall(truth: np.ndarray, got: np.ndarray) -> float:
    """Share of the exact top-k ids that the index returned (per query, averaged over all slots)."""
    hits = sum(len(np.intersect1d(a, b[b >= 0], assume_unique=True)) for a, b in zip(truth, got, strict=True))
    return float(hits / truth.size)


def latency(search, queries: np.ndarray, k: int) -> dict[str, float]:
    """One query at a time (the online case): wall-clock p50/p95/p99/mean ms, and the same of the thread's
    CPU time (cpu_*: the search's own cost; on a shared box the wall clock also counts time the OS gave to
    other processes, which is most of a 1-thread p99 when 8 users share 2 cores)."""
    for q in queries[:10]:  # warm caches and lazy allocations
        search(q[None, :], k)
    wall, cpu = np.empty(len(queries)), np.empty(len(queries))
    for i, q in enumerate(queries):
        c0, t0 = time.thread_time(), time.perf_counter()
        search(q[None, :], k)
        wall[i], cpu[i] = time.perf_counter() - t0, time.thread_time() - c0
    out: dict[str, float] = {"queries": len(queries)}
    for name, t in (("", wall * 1e3), ("cpu_", cpu * 1e3)):
        out |= {f"{name}p50_ms": float(np.median(t)), f"{name}p95_ms": float(np.percentile(t, 95)),
                f"{name}p99_ms": float(np.percentile(t, 99)), f"{name}mean_ms": float(t.mean())}  # fmt: skip
    return out


def index_bytes(index: FaissIndex) -> int:
    import faiss

    return int(faiss.serialize_index(index.index).size)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    import faiss

    t_start = time.perf_counter()
    torch.set_num_threads(1)
    k = args.k
    log = lambda msg: print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)  # noqa: E731

    items, structure = item_table(args.items, args.dim, args.seed)
    rng = np.random.default_rng(args.seed + 2)
    tune = user_queries(args.tune_queries, items, structure, rng)
    fresh = user_queries(args.test_queries, items, structure, rng)
    log(f"item table {items.shape}, {len(tune)} tune + {len(fresh)} fresh queries")

    exact = ExactIndex(items)
    truth_tune = exact.search(tune, k, batch=128)[1]
    truth_fresh = exact.search(fresh, k, batch=128)[1]
    exact_row = {"index": "exact", "setting": "torch matmul + topk", "build_s": 0.0, "index_bytes": items.nbytes,
                 "recall@200": 1.0, **latency(exact.search, fresh[: args.exact_latency_queries], k)}  # fmt: skip
    log(f"exact: p99 {exact_row['p99_ms']:.2f} ms")

    rows = [exact_row]
    specs = [
        ("ivf", {"nlist": n, "train_size": min(args.train_size, args.items)}, "nprobe", args.nprobe) for n in args.nlist
    ]
    if args.hnsw_m:
        specs.append(("hnsw", {"m": args.hnsw_m, "ef_construction": args.ef_construction}, "ef_search", args.ef_search))
    for kind, build_kw, knob, values in specs:
        faiss.omp_set_num_threads(args.build_threads)
        t0 = time.perf_counter()
        index = FaissIndex.build(items, kind=kind, **build_kw)
        build_s = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        size = index_bytes(index)
        log(f"{kind} {build_kw}: built in {build_s:.1f} s, {size / 2**20:.0f} MiB")
        kind_rows = []
        for v in values:
            if kind == "ivf":
                index.index.nprobe = v
            else:
                index.index.hnsw.efSearch = v
            row = {"index": kind, "setting": f"{', '.join(f'{a}={b}' for a, b in build_kw.items())}, {knob}={v}",
                   "build": build_kw, knob: v, "build_s": build_s, "index_bytes": size,
                   "tune_recall@200": recall(truth_tune, index.search(tune, k)[1]),
                   "recall@200": recall(truth_fresh, index.search(fresh, k)[1]),
                   **latency(index.search, fresh, k)}  # fmt: skip
            kind_rows.append(row)
            log(f"  {row['setting']}: tune recall {row['tune_recall@200']:.4f}, fresh {row['recall@200']:.4f}, p99 {row['p99_ms']:.2f} ms (cpu {row['cpu_p99_ms']:.2f})")  # fmt: skip
            if row["tune_recall@200"] >= args.stop_recall:  # more probes only cost time
                break
        ok = [r for r in kind_rows if r["tune_recall@200"] >= args.target_recall]
        if ok:
            ok[0]["selected"] = True  # the cheapest setting that reaches the target on the tune set
        rows += kind_rows
        del index

    selected = [r for r in rows if r.get("selected")]
    best = min(selected, key=lambda r: r["cpu_p99_ms"]) if selected else None
    reached = best is not None and best["recall@200"] >= args.target_recall
    met = reached and best["p99_ms"] <= args.target_p99_ms
    met_cpu = reached and best["cpu_p99_ms"] <= args.target_p99_ms
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "setup": {
            "items": args.items,
            "dim": args.dim,
            "k": k,
            "tune_queries": len(tune),
            "fresh_queries": len(fresh),
            "item_table": "synthetic:xl catalog (categories, brands) with trained-like unit vectors: category "
            "centre + 0.6 brand offset + 0.7 item noise (see the script's docstring)",
            "search_threads": 1,
            "build_threads": args.build_threads,
            "faiss": faiss.__version__,
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores (shared)",
            "seed": args.seed,
        },  # fmt: skip
        "target": {"recall@200": args.target_recall, "p99_ms": args.target_p99_ms},
        "rows": rows,
        "best": best,
        "met": met,  # wall-clock p99 on this (shared) box
        "met_cpu": met_cpu,  # the search's own CPU time p99
        "peak_rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - t_start,
    }


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    s, t, b = result["setup"], result["target"], result["best"]
    lines = [
        f"# Retrieval at scale: top-{s['k']} of {s['items']:,} items (d={s['dim']})",
        "",
        f"`{result['command']}` ({result['seconds']:.0f} s, peak RSS {result['peak_rss_mb']:.0f} MB; {s['machine']}; "
        f"faiss {s['faiss']}, search on {s['search_threads']} thread, builds on {s['build_threads']})",
        "",
        f"Item table: {s['item_table']}. Settings tuned on {s['tune_queries']} held-out queries (the cheapest with "
        f"tune recall >= {t['recall@200']} is marked), measured on {s['fresh_queries']} fresh ones.",
        "",
        "Latency is per query at 1 thread: wall clock, and (cpu) the thread's CPU time, which leaves out the time "
        "the OS gave to the other processes sharing the box.",
        "",
        "| index | setting | build s | MiB | tune recall@200 | recall@200 | p50 ms | p95 ms | p99 ms | cpu p50 | cpu p99 | |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        tune = f"{r['tune_recall@200']:.4f}" if "tune_recall@200" in r else "-"
        lines.append(
            f"| {r['index']} | {r['setting']} | {r['build_s']:.1f} | {r['index_bytes'] / 2**20:.0f} | {tune} | "
            f"{r['recall@200']:.4f} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | {r['cpu_p50_ms']:.3f} | {r['cpu_p99_ms']:.3f} | {'selected' if r.get('selected') else ''} |"
        )  # fmt: skip
    lines.append("")
    if b:
        exact = result["rows"][0]
        lines.append(
            f"Target (recall@200 >= {t['recall@200']}, p99 <= {t['p99_ms']} ms), best selected setting {b['index']} "
            f"{b['setting']} on fresh queries: recall@200 {b['recall@200']:.4f}; CPU-time p99 {b['cpu_p99_ms']:.2f} ms "
            f"(**{'met' if result['met_cpu'] else 'NOT met'}**; exact search {exact['cpu_p99_ms']:.1f} ms); wall-clock p99 "
            f"{b['p99_ms']:.2f} ms on this shared box (**{'met' if result['met'] else 'NOT met'}**; exact {exact['p99_ms']:.1f} ms)."
        )  # fmt: skip
    else:
        lines.append(f"Target NOT met: no setting reached tune recall@200 >= {t['recall@200']}.")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--tune-queries", type=int, default=1000)
    p.add_argument("--test-queries", type=int, default=1000)
    p.add_argument("--exact-latency-queries", type=int, default=200, help="exact search is slow: fewer timed")
    p.add_argument("--nlist", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128, 256])
    p.add_argument("--train-size", type=int, default=100_000, help="IVF k-means sample")
    p.add_argument(
        "--hnsw-m", type=int, default=0, help="HNSW with M neighbours; 0: none (its 1M build is ~5 min here)"
    )
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--ef-search", type=int, nargs="+", default=[200, 300, 400, 600, 800])
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--stop-recall", type=float, default=0.995, help="a sweep stops once tune recall reaches this")
    p.add_argument("--target-p99-ms", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="50k items, 200 queries: a smoke run")
    p.add_argument("--out", type=Path, default=None, help="default benchmarks/results/retrieval_scale[_quick]")
    args = p.parse_args()
    if args.quick:
        args.items, args.tune_queries, args.test_queries, args.exact_latency_queries = 50_000, 200, 200, 50
        args.nlist, args.hnsw_m = [256], args.hnsw_m or 16
    out = args.out or RESULTS / ("retrieval_scale_quick" if args.quick else "retrieval_scale")
    result = run(args)
    write(result, out)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
