"""The multi-stage pipeline of a bundle, measured after each stage by the code path that serves it.

For each bundle (trained here from a pipeline config when it does not exist yet), `genrec.pipeline.evaluate`
runs the bundle's own stage objects (the ones `genrec serve` runs) for every test user: leave-one-out, input =
the events before the user's last one, full catalog, seen items excluded. Records per stage:
{dataset, stage (retrieval | ranking | rerank), name, components, metrics (HR@10, NDCG@10, recall@K for
retrieval, users), bundle, split, eval_seconds, command}.

    python benchmarks/pipeline.py                          # quick: a shortened examples/pipeline-quick.toml
                                                           # (synthetic:small), 1000 test users
    python benchmarks/pipeline.py --config examples/pipeline-ml1m.toml --config examples/pipeline-beauty.toml
    python benchmarks/pipeline.py --bundle runs/shop-stack # bundles that exist already

Bundles trained here go to runs/bench/pipeline-<config name> (reused when present). Writes
benchmarks/results/pipeline.json, pipeline.md and pipeline.png (the quick default: pipeline_quick.*).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console

from genrec.bundle import Bundle
from genrec.pipeline.pipeline import Pipeline, evaluate
from genrec.stack.config import dump_toml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
QUICK = ROOT / "examples" / "pipeline-quick.toml"
# the quick default: the shipped quick config with shorter training, so the benchmark itself runs in minutes
QUICK_OVERRIDES = {
    "retrieval": [{"epochs": 4, "time_budget": 0.75}, {"epochs": 1}],
    "ranking": {"epochs": 1, "max_users": 500, "test_users": 200},
}


def quick_config(out: Path) -> Path:
    cfg = tomllib.loads(QUICK.read_text())
    for table, over in zip(cfg["retrieval"], QUICK_OVERRIDES["retrieval"], strict=True):
        table.update(over)
    cfg["ranking"].update(QUICK_OVERRIDES["ranking"])
    cfg["data"]["threads"] = 1  # a shared machine: one core
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_toml(cfg))
    return out


def ensure_bundle(config: Path, runs: Path, console: Console) -> Path:
    from genrec.stack.config import train_pipeline

    out = runs / f"pipeline-{config.stem}"
    if not (out / "manifest.json").exists():
        console.rule(f"training {out} from {config}")
        train_pipeline(config, out, console)
    return out


def measure(bundle: Path, max_users: int | None, cmd: str, console: Console) -> list[dict[str, Any]]:
    pipe = Pipeline.from_bundle(Bundle.open(bundle))
    t0 = time.perf_counter()
    records = evaluate(pipe, "test", max_users)
    secs = time.perf_counter() - t0
    console.print(f"{bundle}: {records[0]['metrics']['users']} users through {len(pipe.stages)} stages in {secs:.1f} s")
    argv = Bundle.open(bundle).manifest.get("command") or []
    made = " ".join(["genrec", *map(shlex.quote, argv[1:])]) if argv else None
    return [{**r, "bundle": str(bundle), "eval_seconds": round(secs, 2), "command": cmd, "trained_by": made}
            for r in records]  # fmt: skip


def write_md(records: list[dict[str, Any]], path: Path) -> None:
    lines = ["# Pipeline: metrics after each stage (test split, full catalog, seen items excluded)", ""]
    lines += ["Every number comes from the bundle's own stage objects, the ones `genrec serve` runs.", ""]
    lines += ["| dataset | stage | name | components | HR@10 | NDCG@10 | recall@K | users |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in records:
        m = r["metrics"]
        recall = next((f"{v:.4f} (@{k.split('@')[1]})" for k, v in m.items() if k.startswith("recall@")), "")
        lines.append(f"| {r['dataset']} | {r['stage']} | {r['name']} | {' + '.join(r['components'])} | "
                     f"{m['HR@10']:.4f} | {m['NDCG@10']:.4f} | {recall} | {m['users']} |")  # fmt: skip
    lines += ["", "Commands (per dataset: the bundle's training command, then the measurement):", ""]
    for ds in dict.fromkeys(r["dataset"] for r in records):
        r = next(x for x in records if x["dataset"] == ds)
        made = f"`{r['trained_by']}`, then " if r.get("trained_by") else ""
        lines.append(f"- {ds}: {made}`{r['command']}`")
    lines.append("")
    path.write_text("\n".join(lines))


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        rs = [r for r in records if r["dataset"] == ds]
        names = [f"{r['stage']}\n{r['name']}" for r in rs]
        ax.bar(names, [r["metrics"]["NDCG@10"] for r in rs], color="tab:blue")
        ax.set_title(f"{ds}: NDCG@10 after each stage")
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", type=Path, default=[], help="pipeline config (.toml) to train")
    ap.add_argument("--bundle", action="append", type=Path, default=[], help="an existing bundle to measure")
    ap.add_argument("--max-users", type=int, default=None, help="test users per bundle (default: all; quick 1000)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench", help="where bundles are trained")
    ap.add_argument(
        "--out", type=Path, default=None, help="default: results/pipeline.json (quick: pipeline_quick.json)"
    )
    args = ap.parse_args()
    console = Console()
    cmd = " ".join(shlex.quote(a) for a in ["python", "benchmarks/pipeline.py", *sys.argv[1:]])
    configs, max_users = list(args.config), args.max_users
    if not configs and not args.bundle:  # the quick default
        configs = [quick_config(args.runs / "quick-short.toml")]
        max_users = max_users or 1000
    out = args.out or RESULTS / ("pipeline.json" if args.config or args.bundle else "pipeline_quick.json")
    bundles = [ensure_bundle(c, args.runs, console) for c in configs] + list(args.bundle)
    records = [r for b in bundles for r in measure(b, max_users, cmd, console)]
    if out.exists():  # other datasets' records stay (each dataset is measured by its own, long, run)
        done = {r["dataset"] for r in records}
        records = [r for r in json.loads(out.read_text()) if r["dataset"] not in done] + records
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=2))
    write_md(records, out.with_suffix(".md"))
    plot(records, out.with_suffix(".png"))
    console.print(f"wrote {out} (+ .md, .png)")


if __name__ == "__main__":
    main()
