"""Efficiency benchmark: jagged HSTU attention vs padded SDPA, and M-FALCON candidate scoring.

    GENREC_DATA_DIR=/work/shared/data python benchmarks/efficiency.py            # full (minutes)
    GENREC_DATA_DIR=/work/shared/data python benchmarks/efficiency.py --quick    # reduced sizes, ~1-2 min

Writes benchmarks/results/efficiency.json, efficiency.md and efficiency.png (or efficiency_quick.* with --quick;
efficiency_cuda.* on a GPU, `--device cuda`, the default where one is visible). On a machine without the dataset:
    python benchmarks/efficiency.py --write-ml1m-lengths lengths.txt      # here, with the data
    python benchmarks/efficiency.py --ml1m-lengths lengths.txt            # there

attention: one HSTU layer (jagged backend, position + time rab) vs one pre-norm softmax transformer layer of the
  same width and heads (SDPA with is_causal=True on right-padded input - padded keys sit after every real query,
  so the causal mask already hides them and SDPA may use its fused causal kernel - plus SASRec's D -> D FFN),
  forward + backward of sum(output), median of the timed repetitions after one warm-up.
  Peak memory: each measurement runs in a fresh child process; CPU: ru_maxrss at the end minus the resident set
  just before the first forward (so the peak of forward + backward temporaries, allocator slack included);
  CUDA: torch.cuda.max_memory_allocated minus memory allocated before the first forward.
  (a) ml-1m: 128 users drawn at random from ML-1M (SASRec file), lengths = events - 2, capped at 200;
  (b) long-tail: 32 lengths ~ Pareto(alpha = 1, minimum 32) capped at max_len (Zipf-like user activity), the
      longest set to max_len (a batch that holds one user at the cap, so padding goes to max_len).
mfalcon: hstu-large (8 layers, d = 50, 2 heads) for one user with n = 199 history events, with timestamps;
  every entry is a time (or FLOP count, for floor) relative to one prefix encoding (model.encode of the history).
  mfalcon_m: prefix encoding with K/V cache + m candidates in micro-batches of 1024 + the target head;
  naive_1024: appending each of 1024 candidates to the history and running the model (micro-batches of 64);
  floor_1024: counted FLOPs (matmuls) of one prefix encoding (causal pairs only) plus 1024 candidate rows, each
  attending to n prefix tokens and itself, over the FLOPs of the prefix encoding.
training: not measured here; rows already in the output JSON (from the training-throughput benchmark) are kept.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import genrec.ops.hstu_attention as attention_ops  # noqa: E402
from genrec.models import build_model  # noqa: E402
from genrec.models.hstu import HSTUConfig, HSTULayer  # noqa: E402
from genrec.models.mfalcon import candidate_states, encode_with_cache, naive_score_candidates  # noqa: E402

DIM, HEADS, HEAD_DIM = 50, 2, 25  # hstu-large's layer width and heads (ML-1M reference settings)


# ----------------------------------------------------------------------------------------------- length samples
ML1M_EVENTS: Path | None = None  # --ml1m-lengths: per-user event counts from a file instead of the dataset


def ml1m_lengths(batch: int, seed: int, cap: int = 200) -> list[int]:
    if ML1M_EVENTS is not None:
        events = np.loadtxt(ML1M_EVENTS, dtype=np.int64, ndmin=1)
    else:
        from genrec.data.datasets import load_dataset

        events = np.diff(np.asarray(load_dataset("ml-1m").sequences.offsets))
    lengths = np.minimum(events - 2, cap)
    return np.random.default_rng(seed).choice(lengths, batch).tolist()


def longtail_lengths(batch: int, max_len: int, seed: int, minimum: int = 32, alpha: float = 1.0) -> list[int]:
    u = np.random.default_rng(seed).random(batch)
    lengths = np.minimum(np.ceil(minimum * u ** (-1.0 / alpha)).astype(np.int64), max_len)
    lengths[np.argmax(lengths)] = max_len
    return lengths.tolist()


# --------------------------------------------------------------------------------------------- the two layers
class SDPALayer(nn.Module):
    """Pre-norm softmax transformer layer on (B, n, D), right-padded: causal SDPA + SASRec's D -> D FFN."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, n, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, n, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, n, D/H)
        x = x + self.proj(a.transpose(1, 2).reshape(B, n, D))
        return x + self.ffn(self.norm2(x))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure_layer(spec: dict) -> dict:
    """Child process: time and peak memory of forward + backward for one layer on one batch of lengths."""
    torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    torch.manual_seed(0)
    lengths, max_len = spec["lengths"], max(spec["lengths"])
    B, total = len(lengths), int(sum(lengths))
    if spec["model"] == "sdpa":
        layer = SDPALayer(DIM, HEADS).to(dev)
        x = torch.randn(B, max_len, DIM, device=dev, requires_grad=True)

        def step() -> None:
            layer(x).sum().backward()
    else:
        backend = "padded" if spec["model"] == "hstu-padded" else "jagged"
        if "jagged" in spec:  # (tile, bucket overhead) for this device type: the GPU sweep
            attention_ops.JAGGED_SETTINGS[dev.type] = tuple(spec["jagged"])
        cfg = HSTUConfig(
            num_items=1,
            max_len=spec["cap"],
            dim=DIM,
            num_heads=HEADS,
            qk_dim=HEAD_DIM,
            v_dim=HEAD_DIM,
            dropout=0.0,
            attention_backend=backend,
        )
        layer = HSTULayer(cfg).to(dev)
        with torch.no_grad():
            layer.pos_bias.normal_(0, 0.1)
            layer.time_bias.normal_(0, 0.1)
        x = torch.randn(total, DIM, device=dev, requires_grad=True)
        offsets = torch.tensor([0, *lengths], device=dev).cumsum(0)
        gaps = torch.randint(1, 10**5, (total,), device=dev)  # seconds between events; restarts don't matter
        ts = gaps.cumsum(0)

        def step() -> None:
            layer(x, offsets, ts).sum().backward()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    times = []
    for _ in range(1 + spec["reps"]):
        x.grad = None
        layer.zero_grad(set_to_none=True)
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    peak = (
        torch.cuda.max_memory_allocated() - base
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    )
    return {"ms": 1e3 * float(np.median(times[1:])), "peak_mb": peak / 2**20}


def run_child(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"measurement {spec['model']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- M-FALCON
def layer_flops(rows: int, keys_per_row: float, c: HSTUConfig) -> float:
    """Matmul FLOPs of one HSTU layer for `rows` tokens, each attending to `keys_per_row` keys on average."""
    h = c.num_heads
    proj = 2 * rows * c.dim * h * (2 * c.v_dim + 2 * c.qk_dim) + 2 * rows * h * c.v_dim * c.dim
    attn = 2 * rows * keys_per_row * h * (c.qk_dim + c.v_dim)  # Q K^T and A V
    return proj + attn


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _median_time(fn, reps: int, dev: torch.device) -> float:
    times = []
    for _ in range(reps):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_mfalcon(ms: list[int], reps: int, naive_m: int, dev: torch.device, seed: int = 0) -> tuple[dict, dict]:
    torch.manual_seed(seed)
    model = build_model("hstu-large", num_items=3416, max_len=200, dropout=0.0).eval().to(dev)
    c, n = model.config, 199
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(1, 3417, (n,), generator=g).to(dev)
    ts = torch.randint(1, 10**5, (n,), generator=g).cumsum(0).to(dev)
    offsets = torch.tensor([0, n], device=dev)
    cands = torch.randint(1, 3417, (max(ms + [naive_m]),), generator=g).to(dev)
    table = model.item_table()

    def prefix() -> None:
        with torch.no_grad():
            model.encode(hist, offsets, ts)

    def mfalcon(m: int) -> None:
        cache = encode_with_cache(model, hist, ts)
        states = candidate_states(model, cache, cands[:m], micro_batch=1024)
        (states * table[cands[:m]]).sum(-1)  # the target head

    prefix()
    mfalcon(64)  # warm-up
    mfalcon(max(ms))
    t_prefix = _median_time(prefix, 5 * reps, dev)
    out, raw = {}, {"prefix_ms": 1e3 * t_prefix}
    for m in ms:
        t = _median_time(lambda m=m: mfalcon(m), reps if m > 1024 else 3 * reps, dev)
        out[f"mfalcon_{m}"] = t / t_prefix
        raw[f"mfalcon_{m}_ms"] = 1e3 * t
    t_naive = _median_time(
        lambda: naive_score_candidates(model, hist, ts, cands[:naive_m], 64), 1 if dev.type == "cpu" else 3, dev
    )
    t_naive *= 1024 / naive_m  # naive cost is linear in m (independent full encodings)
    out["naive_1024"] = t_naive / t_prefix
    raw["naive_1024_ms"] = 1e3 * t_naive
    raw["naive_measured_m"] = naive_m
    f_prefix = sum(layer_flops(n, (n + 1) / 2, c) for _ in range(c.num_layers))
    f_rows = sum(layer_flops(1024, n + 1, c) for _ in range(c.num_layers))
    out["floor_1024"] = (f_prefix + f_rows) / f_prefix
    raw["prefix_mflops"] = f_prefix / 1e6
    return out, raw


# ------------------------------------------------------------------------------------------------------ report
def write_report(result: dict, extra: dict, path: Path) -> None:
    lines = [
        "# Efficiency benchmark",
        "",
        f"Device: {extra['device']}, torch threads: {extra['threads']}, mode: {extra['mode']}. "
        "Times: forward + backward of one layer (median). Peak: "
        + (
            "CUDA max_memory_allocated delta."
            if extra["device"].startswith("cuda")
            else "ru_maxrss delta in a fresh process."
        ),
        "",
        "## One HSTU layer (jagged) vs one padded softmax (SDPA, causal) transformer layer, d=50, 2 heads",
        "",
        "| distribution | max_len | batch | tokens | HSTU ms | SDPA ms | speedup | HSTU peak MB | SDPA peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, meta in zip(result["attention"], extra["attention_meta"], strict=True):
        lines.append(
            f"| {r['distribution']} | {r['max_len']} | {meta['batch']} | {meta['tokens']} | {r['hstu_ms']:.1f} | "
            f"{r['sdpa_ms']:.1f} | {r['speedup']:.2f}x | {r['hstu_peak_mb']:.0f} | {r['sdpa_peak_mb']:.0f} |"
        )
    if extra.get("backends"):
        lines += [
            "",
            "## HSTU attention backends (one HSTU layer, forward + backward)",
            "",
            "| batch | padded ms | jagged ms | jagged speedup |",
            "|---|---:|---:|---:|",
        ]
        for b in extra["backends"]:
            lines.append(f"| {b['batch']} | {b['padded_ms']:.1f} | {b['jagged_ms']:.1f} | {b['speedup']:.2f}x |")
    if extra.get("jagged_sweep"):
        cols = [k for k in extra["jagged_sweep"][0] if k not in ("tile", "overhead")]
        tile, overhead = extra["jagged_default"]
        lines += [
            "",
            f"## Jagged path settings on this device (one HSTU layer, forward + backward ms; the rows above use the "
            f"fastest: tile {tile}, bucket overhead {overhead:,})",
            "",
            "| tile (query rows per strip) | bucket overhead (elements) | " + " | ".join(cols) + " |",
            "|---:|---:|" + "---:|" * len(cols),
        ]
        for r in extra["jagged_sweep"]:
            lines.append(f"| {r['tile']} | {r['overhead']:,} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |")
    mf, raw = result["mfalcon"], extra["mfalcon_raw"]
    lines += [
        "",
        f"## M-FALCON (hstu-large, n = 199, one prefix encoding = {raw['prefix_ms']:.2f} ms)",
        "",
        "| m | time / prefix encoding | ms |",
        "|---:|---:|---:|",
    ]
    for k in [k for k in mf if k.startswith("mfalcon_")]:
        lines.append(f"| {k.split('_')[1]} | {mf[k]:.1f} | {raw[k + '_ms']:.1f} |")
    lines += [
        f"| naive 1024 | {mf['naive_1024']:.1f} | {raw['naive_1024_ms']:.1f} |",
        f"| FLOP floor 1024 | {mf['floor_1024']:.1f} | |",
        "",
        f"1024 candidates: {mf['naive_1024'] / mf['mfalcon_1024']:.0f}x faster than naive (target >= 50x); "
        f"{mf['mfalcon_1024'] / mf['floor_1024']:.2f}x the FLOP floor (target <= 2x).",
    ]
    if raw["naive_measured_m"] != 1024:
        lines.append(f"(naive measured on {raw['naive_measured_m']} candidates and scaled linearly to 1024.)")
    path.write_text("\n".join(lines) + "\n")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    rows = result["attention"]
    labels = [f"{r['distribution']}\n{r['max_len']}" for r in rows]
    xs = np.arange(len(rows))
    a1.bar(xs - 0.2, [r["hstu_ms"] for r in rows], 0.4, label="HSTU (jagged)")
    a1.bar(xs + 0.2, [r["sdpa_ms"] for r in rows], 0.4, label="SDPA (padded)")
    a1.set_xticks(xs, labels)
    a1.set_yscale("log")
    a1.set_ylabel("fwd + bwd ms (log)")
    a1.legend()
    a1.set_title("one layer")
    mf = result["mfalcon"]
    ms = [int(k.split("_")[1]) for k in mf if k.startswith("mfalcon_")]
    a2.loglog(ms, [mf[f"mfalcon_{m}"] for m in ms], "o-", label="M-FALCON")
    a2.loglog([1024], [mf["naive_1024"]], "s", label="naive 1024")
    a2.loglog([1024], [mf["floor_1024"]], "^", label="FLOP floor 1024")
    a2.set_xlabel("candidates m")
    a2.set_ylabel("time / one prefix encoding")
    a2.legend()
    a2.set_title("M-FALCON, hstu-large, n = 199")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller long-tail lengths and fewer repetitions")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    p.add_argument(
        "--ml1m-lengths",
        type=Path,
        help="file of ML-1M per-user event counts, one per line, for a machine without the dataset "
        "(written here with --write-ml1m-lengths)",
    )
    p.add_argument("--write-ml1m-lengths", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.write_ml1m_lengths:
        from genrec.data.datasets import load_dataset

        events = np.diff(np.asarray(load_dataset("ml-1m").sequences.offsets))
        np.savetxt(a.write_ml1m_lengths, events, fmt="%d")
        return
    if a.child:
        print(json.dumps(measure_layer(json.loads(a.child))))
        return
    from rich.progress import Progress

    global ML1M_EVENTS
    ML1M_EVENTS = a.ml1m_lengths
    dev = torch.device(a.device)
    threads = a.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    reps = (2 if a.quick else 3) * (1 if dev.type == "cpu" else 5)  # GPU steps are short: more repetitions
    long_lens = (1024, 2048) if a.quick else (4096, 8192)
    batches = [("ml-1m", 200, ml1m_lengths(128, seed=0))]
    batches += [("long-tail", n, longtail_lengths(32, n, seed=1)) for n in long_lens]
    attention, meta, backends = [], [], []
    with Progress() as progress:
        task = progress.add_task("attention", total=2 * len(batches) + 2)
        # The jagged path's strip and bucket sizes were tuned on CPU: off CPU, sweep them first and measure
        # the rows below with the fastest (geometric mean over the three batches).
        jagged, sweep = list(attention_ops.jagged_settings(dev)), []
        if dev.type != "cpu":
            grid = [(128, 60_000), (256, 1_000_000), (512, 1_000_000), (1024, 4_000_000), (2048, 16_000_000)]
            sweep_task = progress.add_task("jagged settings", total=len(grid) * len(batches))
            for tile, overhead in grid:
                row = {"tile": tile, "overhead": overhead}
                for dist, cap, lengths in batches:
                    spec = {"lengths": lengths, "cap": cap, "reps": reps, "threads": threads, "device": a.device}
                    row[f"{dist} {cap}"] = run_child({**spec, "model": "hstu", "jagged": [tile, overhead]})["ms"]
                    progress.advance(sweep_task)
                sweep.append(row)
            best = min(sweep, key=lambda r: sum(np.log(v) for k, v in r.items() if k not in ("tile", "overhead")))
            jagged = [best["tile"], best["overhead"]]
        for dist, cap, lengths in batches:
            spec = {"lengths": lengths, "cap": cap, "reps": reps, "threads": threads, "device": a.device}
            spec["jagged"] = jagged
            res = {}
            for model in ("hstu", "sdpa"):
                res[model] = run_child({**spec, "model": model})
                progress.advance(task)
            attention.append(
                {
                    "distribution": dist,
                    "max_len": cap,
                    "hstu_ms": res["hstu"]["ms"],
                    "sdpa_ms": res["sdpa"]["ms"],
                    "speedup": res["sdpa"]["ms"] / res["hstu"]["ms"],
                    "hstu_peak_mb": res["hstu"]["peak_mb"],
                    "sdpa_peak_mb": res["sdpa"]["peak_mb"],
                }
            )
            meta.append({"batch": len(lengths), "tokens": int(sum(lengths))})
            if dist == "ml-1m":  # which HSTU backend to train with: same batch, padded vs jagged
                padded = run_child({**spec, "model": "hstu-padded"})
                progress.advance(task)
                backends.append(
                    {
                        "batch": "ml-1m, 128 random users",
                        "padded_ms": padded["ms"],
                        "jagged_ms": res["hstu"]["ms"],
                        "speedup": padded["ms"] / res["hstu"]["ms"],
                    }
                )
                sorted_lengths = sorted(ml1m_lengths(128 * 32, seed=2))[128 * 16 : 128 * 17]  # a length-sorted pool
                sspec = {**spec, "lengths": sorted_lengths}
                pj, pp = run_child({**sspec, "model": "hstu"}), run_child({**sspec, "model": "hstu-padded"})
                progress.advance(task)
                backends.append(
                    {
                        "batch": "ml-1m, 128 users of similar length (training pool)",
                        "padded_ms": pp["ms"],
                        "jagged_ms": pj["ms"],
                        "speedup": pp["ms"] / pj["ms"],
                    }
                )
        progress.add_task("m-falcon (naive 1024 takes longest)", total=None)
        mfalcon, raw = bench_mfalcon([1, 64, 1024, 16384], reps, naive_m=1024, dev=dev)
    a.out.mkdir(parents=True, exist_ok=True)
    stem = "efficiency" + ("_quick" if a.quick else "") + ("" if dev.type == "cpu" else f"_{dev.type}")
    previous = a.out / f"{stem}.json"  # keep the training rows another benchmark wrote
    training = json.loads(previous.read_text()).get("training", []) if previous.exists() else []
    result = {"attention": attention, "mfalcon": mfalcon, "training": training}
    extra = {
        "device": a.device
        + (f" ({torch.cuda.get_device_name(dev)}, torch {torch.__version__})" if dev.type == "cuda" else ""),
        "threads": threads,
        "mode": "quick" if a.quick else "full",
        "attention_meta": meta,
        "backends": backends,
        "jagged_sweep": sweep,
        "jagged_default": jagged,
        "mfalcon_raw": raw,
    }
    (a.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(result, extra, a.out / f"{stem}.md")
    plot(result, a.out / f"{stem}.png")
    print((a.out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
