"""Scaling-law study: validation NDCG@10 against training compute, HSTU vs a DLRM-style model.

    genrec scaling --dataset ml-1m             (full: 6 HSTU sizes, 4 DLRM sizes, 20 epochs each)
    genrec scaling --quick                     (synthetic:small, short: a smoke run of the method)

Both families train on the same next-item task, loss (sampled softmax) and data (training/trainer.train_epoch,
so the DLRM-style model, genrec/distributed/dlrm_next_item.py, runs through the sequential trainer unchanged).
Training FLOPs are counted, not estimated: every step of every epoch runs under
torch.utils.flop_counter.FlopCounterMode (forward + backward matmul-class ops: mm/bmm/addmm/attention;
embedding lookups count 0). After each epoch the model is scored on the validation split (full catalog).
Per family we fit NDCG@10 = A * C^b (least squares in log-log) over each size's best (FLOPs-to-best-epoch,
best NDCG@10) point, and over the compute frontier of all epochs. Results: benchmarks/results/scaling.json,
.md and .png.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode

from genrec.bundle import write_json
from genrec.data.datasets import load_dataset
from genrec.data.sequences import leave_one_out
from genrec.distributed.dlrm_next_item import DLRMNextItem, DLRMNextItemConfig
from genrec.evaluation.evaluate import evaluate_model, evaluate_popularity
from genrec.models import build_model
from genrec.runtime import setup
from genrec.training.loop import Epoch
from genrec.training.trainer import TrainConfig, train_epoch

# (layers, dim) for HSTU; (dim, hidden, mlp_layers) for DLRM
FULL_HSTU = [(1, 16), (1, 32), (2, 32), (2, 64), (4, 64), (8, 128)]
FULL_DLRM = [(16, 64, 2), (32, 128, 2), (64, 256, 3), (128, 512, 3)]
QUICK_HSTU = [(1, 8), (1, 16), (2, 16), (2, 32), (3, 48)]
QUICK_DLRM = [(8, 32, 1), (16, 64, 2), (32, 128, 2)]


@dataclass
class ScalingConfig:
    dataset: str = "ml-1m"
    out: str = "benchmarks/results"
    name: str = "scaling"
    epochs: int = 20
    max_len: int = 200
    batch_size: int = 128
    num_negatives: int = 128
    lr: float = 1e-3
    dropout: float = 0.2
    seed: int = 42
    threads: int | None = None
    hstu_sizes: list[tuple[int, int]] = field(default_factory=lambda: list(FULL_HSTU))
    dlrm_sizes: list[tuple[int, int, int]] = field(default_factory=lambda: list(FULL_DLRM))


def quick_config(**overrides: Any) -> ScalingConfig:
    base = ScalingConfig(dataset="synthetic:small", name="scaling_quick", epochs=3, max_len=30, num_negatives=64,
                         batch_size=64, lr=3e-3, hstu_sizes=list(QUICK_HSTU), dlrm_sizes=list(QUICK_DLRM))  # fmt: skip
    for k, v in overrides.items():
        setattr(base, k, v)
    return base


def power_law_fit(flops: list[float], ndcg: list[float]) -> dict[str, float]:
    """NDCG = A * C^b by least squares on (log C, log NDCG); r2 in log space."""
    x, y = np.log(np.asarray(flops, float)), np.log(np.asarray(ndcg, float))
    if len(x) < 2 or np.ptp(x) == 0:
        return {"A": float("nan"), "b": float("nan"), "r2": float("nan"), "points": len(x)}
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    ss = float(((y - y.mean()) ** 2).sum())
    return {
        "A": float(np.exp(a)),
        "b": float(b),
        "r2": 1 - float((resid**2).sum()) / ss if ss else 1.0,
        "points": len(x),
    }


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by any cheaper point (best NDCG so far in order of compute)."""
    out, best = [], -1.0
    for c, v in sorted(points):
        if v > best:
            out.append((c, v))
            best = v
    return out


def run_one(model: torch.nn.Module, label: str, split, cfg: ScalingConfig, console: Console) -> dict[str, Any]:
    tcfg = TrainConfig(batch_size=cfg.batch_size, num_negatives=cfg.num_negatives, seed=cfg.seed, lr=cfg.lr)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tcfg.betas, weight_decay=0.0)
    params = sum(p.numel() for p in model.parameters())
    table = sum(  # item tables: HSTU's item_emb, the DLRM-style model's EBC tables
        p.numel() for n, p in model.named_parameters() if n.startswith(("item_emb", "user.", "cand."))
    )
    epochs, flops, secs = [], 0, 0.0
    for epoch in range(1, cfg.epochs + 1):
        counter = FlopCounterMode(display=False)
        with counter:
            stats = train_epoch(model, opt, split, tcfg, torch.device("cpu"), Epoch(epoch))
        flops += counter.get_total_flops()
        secs += stats["seconds"]
        valid = evaluate_model(model, split, "valid")
        epochs.append({"epoch": epoch, "flops": flops, "loss": stats["loss"], "ndcg10": valid["NDCG@10"],
                       "hr10": valid["HR@10"], "seconds": secs})  # fmt: skip
    best = max(epochs, key=lambda e: e["ndcg10"])
    console.print(
        f"{label:28s} {params:>10,} params ({params - table:>9,} non-table)  {flops:.2e} FLOPs  "
        f"best NDCG@10 {best['ndcg10']:.4f} (epoch {best['epoch']})  {secs:.0f}s"
    )
    return {"label": label, "params": params, "non_table_params": params - table, "epochs": epochs,
            "best": best, "flops_to_best": best["flops"], "train_flops": flops}  # fmt: skip


def run_study(cfg: ScalingConfig, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    setup(cfg.threads)
    ds = load_dataset(cfg.dataset, seed=cfg.seed)
    split = leave_one_out(ds.sequences)
    V = ds.sequences.num_items
    console.print(f"scaling study on {ds.sequences.name}: {ds.sequences.num_users:,} users, {V:,} items, "
                  f"{cfg.epochs} epochs per size")  # fmt: skip
    t0 = time.perf_counter()
    popularity = evaluate_popularity(split, "valid")["NDCG@10"]
    families: dict[str, list[dict[str, Any]]] = {"hstu": [], "dlrm": []}
    for layers, dim in cfg.hstu_sizes:
        torch.manual_seed(cfg.seed)
        m = build_model("hstu", V, max_len=cfg.max_len, dim=dim, num_layers=layers, num_heads=1, dropout=cfg.dropout)
        families["hstu"].append(
            {"layers": layers, "dim": dim, **run_one(m, f"hstu L{layers} d{dim}", split, cfg, console)}
        )
    for dim, hidden, mlp in cfg.dlrm_sizes:
        torch.manual_seed(cfg.seed)
        c = DLRMNextItemConfig(num_items=V, dim=dim, hidden=hidden, mlp_layers=mlp, hist_len=cfg.max_len,
                               max_len=cfg.max_len, dropout=cfg.dropout)  # fmt: skip
        families["dlrm"].append(
            {
                "dim": dim,
                "hidden": hidden,
                "mlp_layers": mlp,
                **run_one(DLRMNextItem(c), f"dlrm d{dim} h{hidden}x{mlp}", split, cfg, console),
            }  # fmt: skip
        )
    fits = {}
    for fam, runs in families.items():
        fits[fam] = {
            "best_per_size": power_law_fit([r["flops_to_best"] for r in runs], [r["best"]["ndcg10"] for r in runs]),
            "frontier": power_law_fit(
                *zip(*frontier([(e["flops"], e["ndcg10"]) for r in runs for e in r["epochs"]]), strict=True)
            ),  # fmt: skip
        }
    result = {
        "config": asdict(cfg),
        "dataset": ds.sequences.summary(),
        "flops_counted_by": "torch.utils.flop_counter.FlopCounterMode over every training step (fwd+bwd)",
        "popularity_ndcg10": popularity,
        "families": families,
        "fits": fits,
        "verdict": verdict(families, fits),
        "wall_seconds": time.perf_counter() - t0,
        "command": "genrec scaling " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["scaling"] else sys.argv[1:]),
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / f"{cfg.name}.json")
    (out / f"{cfg.name}.md").write_text(markdown(result))
    plot(result, out / f"{cfg.name}.png")
    console.print(result["verdict"])
    console.print(f"results: {out / cfg.name}.json / .md / .png")
    return result


def verdict(families: dict[str, list[dict]], fits: dict[str, dict]) -> str:
    """Plain words from the numbers: exponent per family and whether the largest size still improved."""
    parts = []
    for fam, runs in families.items():
        rs = sorted(runs, key=lambda r: r["train_flops"])
        gain = rs[-1]["best"]["ndcg10"] - rs[-2]["best"]["ndcg10"] if len(rs) > 1 else float("nan")
        b = fits[fam]["best_per_size"]["b"]
        parts.append(f"{fam}: NDCG@10 ~ C^{b:.3f} over its sizes; largest vs next size {gain:+.4f}")
    h, d = (max(r["best"]["ndcg10"] for r in families[f]) for f in ("hstu", "dlrm"))
    parts.append(f"best NDCG@10 hstu {h:.4f} vs dlrm {d:.4f}")
    runs = [r for rs in families.values() for r in rs]
    unconverged = sum(r["best"]["epoch"] == len(r["epochs"]) for r in runs)
    if unconverged:
        parts.append(
            f"{unconverged} of {len(runs)} sizes peaked at their last epoch (still improving): the fits describe "
            "this training budget, not converged models; plateaus cannot be judged from them"
        )
    return "; ".join(parts)


def markdown(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = [f"# Scaling study: {res['dataset']['name']}", "",
             f"{c['epochs']} epochs per size, max_len {c['max_len']}, batch {c['batch_size']}, sampled softmax with "
             f"{c['num_negatives']} negatives, AdamW lr {c['lr']}. FLOPs: {res['flops_counted_by']}. Validation "
             f"NDCG@10, full catalog (popularity: {res['popularity_ndcg10']:.4f}). Validation split = each user's "
             f"second-to-last item. Command: `{res.get('command', 'genrec scaling')}`", "",
             "| family | size | params (non-table) | training FLOPs | FLOPs to best | best NDCG@10 | best epoch |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for fam, runs in res["families"].items():
        for r in runs:
            lines.append(f"| {fam} | {r['label']} | {r['params']:,} ({r['non_table_params']:,}) | {r['train_flops']:.3g} "
                         f"| {r['flops_to_best']:.3g} | {r['best']['ndcg10']:.4f} | {r['best']['epoch']} |")  # fmt: skip
    lines += ["", "| family | fit | A | b (exponent) | R^2 | points |", "|---|---|---:|---:|---:|---:|"]
    for fam, f in res["fits"].items():
        for kind, v in f.items():
            lines.append(f"| {fam} | {kind} | {v['A']:.3g} | {v['b']:.4f} | {v['r2']:.3f} | {v['points']} |")
    lines += ["", f"**Verdict:** {res['verdict']}", ""]
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {"hstu": "tab:blue", "dlrm": "tab:orange"}
    for fam, runs in res["families"].items():
        for r in runs:
            ax.plot([e["flops"] for e in r["epochs"]], [e["ndcg10"] for e in r["epochs"]], color=colors[fam],
                    alpha=0.25, lw=1)  # fmt: skip
            ax.scatter(r["flops_to_best"], r["best"]["ndcg10"], color=colors[fam], s=30, zorder=3)
            ax.annotate(r["label"].split(" ", 1)[1], (r["flops_to_best"], r["best"]["ndcg10"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        f = res["fits"][fam]["best_per_size"]
        xs = np.geomspace(min(r["flops_to_best"] for r in runs), max(r["flops_to_best"] for r in runs), 50)
        if np.isfinite(f["b"]):
            ax.plot(xs, f["A"] * xs ** f["b"], color=colors[fam], ls="--", label=f"{fam}: NDCG ~ C^{f['b']:.3f}")
    ax.axhline(res["popularity_ndcg10"], color="gray", ls=":", label="popularity")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="training FLOPs (counted)", ylabel="validation NDCG@10",
           title=f"Scaling on {res['dataset']['name']}: dots = best epoch per size, lines = per-epoch")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _size(text: str, parts: int, option: str) -> tuple[int, ...]:
    vals = text.strip().lower().split("x")
    if len(vals) != parts or not all(v.isdigit() and int(v) > 0 for v in vals):
        raise ValueError(f"{option}: {text!r} is not {parts} positive integers joined by 'x'")
    return tuple(int(v) for v in vals)


def scaling(
    dataset: str = typer.Option("ml-1m", help="ml-1m | ml-100k | amazon-beauty | synthetic[:SIZE] | PATH"),
    quick: bool = typer.Option(False, help="synthetic:small, 3 epochs, small sizes (a few minutes on CPU)"),
    epochs: int | None = typer.Option(None, help="epochs per size (default 20; quick 3)"),
    max_len: int | None = typer.Option(None),
    lr: float | None = typer.Option(None, help="AdamW learning rate (default 1e-3; quick 3e-3)"),
    out: Path = typer.Option(Path("benchmarks/results")),
    threads: int | None = typer.Option(None),
    hstu_sizes: str | None = typer.Option(None, help="LAYERSxDIM,... e.g. 1x16,2x32 (default: 6 sizes to 8x128)"),
    dlrm_sizes: str | None = typer.Option(None, help="DIMxHIDDENxMLP_LAYERS,... e.g. 16x64x2,32x128x2"),
) -> None:
    """Scaling-law study: HSTU vs DLRM-style, validation NDCG@10 against counted training FLOPs."""
    cfg = quick_config() if quick else ScalingConfig(dataset=dataset)
    if not quick and dataset.startswith("synthetic"):
        cfg.name = "scaling_" + dataset.replace(":", "_")
    if quick and dataset != "ml-1m":
        cfg.dataset = dataset
    cfg.out, cfg.threads = str(out), threads
    if epochs:
        cfg.epochs = epochs
    if max_len:
        cfg.max_len = max_len
    if lr:
        cfg.lr = lr
    try:
        if hstu_sizes:
            cfg.hstu_sizes = [_size(x, 2, "--hstu-sizes") for x in hstu_sizes.split(",")]  # type: ignore[misc]
        if dlrm_sizes:
            cfg.dlrm_sizes = [_size(x, 3, "--dlrm-sizes") for x in dlrm_sizes.split(",")]  # type: ignore[misc]
        run_study(cfg)
    except (ValueError, FileNotFoundError) as e:
        Console(stderr=True).print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


if __name__ == "__main__":
    typer.run(scaling)
