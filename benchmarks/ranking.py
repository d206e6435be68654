"""Multi-stage pipeline benchmark (retrieval -> ranker -> re-rank, measured after each stage) + Criteo CTR check.

Per dataset (ML-1M, Amazon Beauty by default):
  1. HSTU retrieval run: --hstu-run DATASET=DIR (e.g. from benchmarks/sequential.py: runs/bench/ml-1m-hstu);
     without one, runs/bench/DATASET-hstu is used if it exists, else a short HSTU is trained here (and the
     records say so).
  2. two-tower run (item tower indexed with faiss HNSW; recall@100 vs exact search and latency recorded).
  3. rankers (DLRM, Wide & Deep) trained on the validation targets with hard negatives from the fused
     retrieval candidates + random items (retrieval scores as features).
  4. pipeline evaluation on the test split, full catalog, seen items excluded: records for the stages
     hstu-only, two-tower-only, retrieval (fused top-K, recall@K), ranking and rerank (one pair per ranker).
CTR check (--ctr-data frappe, the default; criteo for the 8,000-row Criteo sample): logistic regression, Wide &
Deep and DLRM. Per model a small grid of settings (CTR_GRIDS) is trained at seed 0 with early stopping on the
dev split; the setting with the best dev AUC is kept, trained at --ctr-seeds seeds (seed 0 = its selection run)
and each run is scored once on test: mean and std of test AUC / logloss. Test never picks anything.

    python benchmarks/ranking.py --quick                    # minutes: ml-100k, few epochs, 300 test users
    python benchmarks/ranking.py --hstu-run ml-1m=runs/bench/ml-1m-hstu --hstu-run amazon-beauty=runs/bench/amazon-beauty-hstu
    python benchmarks/ranking.py --ctr-only                 # the Frappe CTR check alone (< 10 min at 1 thread)

Writes benchmarks/results/ranking.json (records {"dataset", "stage", "model", "metrics", "command"}), ranking.md
and ranking.png; the CTR check writes ctr_<data>.json (records {"dataset", "model", "split", "protocol",
"metrics": {"AUC", "logloss", ...}, "settings", "grid", "command"}) and ctr_<data>.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from genrec.data.datasets import data_dir
from genrec.features.criteo import load_criteo
from genrec.features.ctr import CTRData
from genrec.features.frappe import load_frappe
from genrec.pipeline.runs import Context, pipeline_evaluate
from genrec.ranking.inference import build_ranker, ctr_metrics, predict
from genrec.ranking.train import CTRConfig, fit_ctr
from genrec.runtime import setup
from genrec.stack.train import train_ranking_model
from genrec.training.trainer import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()

# Settings per CTR dataset and model: the grid model selection runs over (dev AUC, seed 0); 20 epochs at most,
# early stopping on dev AUC. Criteo (7,200 training rows): one setting each, picked earlier on dev.tsv from a
# small grid (lr, weight decay, embedding width, dropout). Frappe (46k training rows): LR needs a large step
# (zero-initialised weights); the deep models overfit the repeated (user, app) pairs within a few epochs without
# dropout / weight decay, and Wide & Deep's MLP needs width to learn the user x app interaction DLRM's dot
# products give directly (the grid rows were narrowed from a wider search on dev only).
CTR_GRIDS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "frappe": {
        "logistic-regression": [{"kind": "lr", "model": {}, "train": {"lr": 1e-2}},
                                {"kind": "lr", "model": {}, "train": {"lr": 3e-3}}],
        "wide-deep": [{"kind": "wide-deep", "model": {"dim": 32, "deep_layers": [128, 64], "dropout": 0.3},
                       "train": {"lr": 1e-3, "weight_decay": 1e-4}},
                      {"kind": "wide-deep", "model": {"dim": 64, "deep_layers": [256, 128], "dropout": 0.5},
                       "train": {"lr": 2e-3}}],
        "dlrm": [{"kind": "dlrm", "model": {"dim": 32, "dropout": 0.3}, "train": {"lr": 2e-3}},
                 {"kind": "dlrm", "model": {"dim": 32}, "train": {"lr": 1e-3, "weight_decay": 1e-4}}],
    },
    "criteo": {
        "logistic-regression": [{"kind": "lr", "model": {}, "train": {"lr": 3e-3}}],
        "wide-deep": [{"kind": "wide-deep", "model": {"dim": 8, "deep_layers": [64, 32], "dropout": 0.3},
                       "train": {"lr": 1e-3, "weight_decay": 1e-5}}],
        "dlrm": [{"kind": "dlrm", "model": {"dim": 8, "dropout": 0.3}, "train": {"lr": 1e-3, "weight_decay": 1e-5}}],
    },
}  # fmt: skip
CTR_LOADERS = {"frappe": load_frappe, "criteo": load_criteo}
CTR_EPOCHS = {"frappe": (20, 512), "criteo": (40, 256)}  # (max epochs, batch size)

FULL = {
    "hstu": {"epochs": 200, "patience": 20, "time_budget_s": 40 * 60, "loss": "full"},
    "two_tower": {"epochs": 30, "max_pairs_per_epoch": 1_000_000, "patience": 3},
    "ranker": {"epochs": 20, "patience": 3, "max_users": None, "test_users": 3000},
    "eval_users": None,
}
QUICK = {
    "hstu": {"epochs": 40, "patience": 4, "time_budget_s": 90},
    "two_tower": {"epochs": 6, "max_pairs_per_epoch": 100_000, "patience": 2},
    "ranker": {"epochs": 6, "patience": 2, "max_users": 3000, "test_users": 500},
    "eval_users": 300,
}


def ctr_fit(data: CTRData, spec: dict[str, Any], seed: int, epochs: int, batch: int) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    model = build_ranker(spec["kind"], data.schema, **spec["model"])
    cfg = CTRConfig(epochs=epochs, batch_size=batch, patience=3, seed=seed, **spec["train"])
    return model, fit_ctr(model, data.train, data.dev, cfg, Console(quiet=True))


def ctr_records(name: str, seeds: int, command: str) -> list[dict[str, Any]]:
    """Model selection on dev at seed 0, then the chosen setting at `seeds` seeds, each scored once on test."""
    data = CTR_LOADERS[name](data_dir())
    epochs, batch = CTR_EPOCHS[name]
    sizes = {s: len(getattr(data, s)) for s in ("train", "dev", "test")}
    protocol = {**data.protocol, "rows": sizes, "selection": "best dev AUC over the grid at seed 0, epochs by early "
                "stopping on dev AUC (patience 3); test scored once per seed of the chosen setting"}  # fmt: skip
    records = []
    for model_name, grid in CTR_GRIDS[name].items():
        t0 = time.perf_counter()
        tried = []
        for spec in grid:
            model, res = ctr_fit(data, spec, 0, epochs, batch)
            tried.append((spec, model, res))
            console.print(f"{name} {model_name} {spec}: dev AUC {res.best_valid['AUC']:.4f} (epoch {res.best_epoch})")
        spec, model, res = max(tried, key=lambda t: t[2].best_valid["AUC"])
        runs = [(model, res)] + [ctr_fit(data, spec, seed, epochs, batch) for seed in range(1, seeds)]
        tests = [ctr_metrics(data.test, predict(m, data.test)) for m, _ in runs]
        aucs, losses = [t["AUC"] for t in tests], [t["logloss"] for t in tests]
        metrics = {"AUC": float(np.mean(aucs)), "logloss": float(np.mean(losses)), "AUC_std": float(np.std(aucs)),
                   "logloss_std": float(np.std(losses)), "seeds": seeds, "best_epochs": [r.best_epoch for _, r in runs],
                   "dev_AUC": float(np.mean([r.best_valid["AUC"] for _, r in runs])),
                   "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        console.print(f"{name} {model_name}: test AUC {metrics['AUC']:.4f} ± {metrics['AUC_std']:.4f}, "
                      f"logloss {metrics['logloss']:.4f}")  # fmt: skip
        grid_rows = [{"settings": s_, "dev_AUC": r.best_valid["AUC"], "dev_logloss": r.best_valid["logloss"],
                      "best_epoch": r.best_epoch} for s_, _, r in tried]  # fmt: skip
        records.append({"dataset": name, "model": model_name, "split": "test", "protocol": protocol,
                        "metrics": metrics, "settings": spec, "grid": grid_rows, "command": command})  # fmt: skip
    return records


def write_ctr(records: list[dict[str, Any]], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ctr_{name}.json").write_text(json.dumps(records, indent=2))
    p = records[0]["protocol"]
    rows = p["rows"]
    lines = [f"# CTR check: {name}", "", f"Command: `{records[0]['command']}`", "",
             f"- train ({rows['train']:,} rows): {p['train']}", f"- dev ({rows['dev']:,} rows): {p['dev']}",
             f"- test ({rows['test']:,} rows): {p['test']}", f"- selection: {p['selection']}", "",
             f"Test split, mean ± std over {records[0]['metrics']['seeds']} seeds of the setting chosen on dev:", "",
             "| model | test AUC | test logloss | dev AUC | setting |", "|---|---|---|---|---|"]  # fmt: skip
    for r in records:
        m = r["metrics"]
        lines.append(f"| {r['model']} | {m['AUC']:.4f} ± {m['AUC_std']:.4f} | {m['logloss']:.4f} ± "
                     f"{m['logloss_std']:.4f} | {m['dev_AUC']:.4f} | `{json.dumps(r['settings'])}` |")  # fmt: skip
    lines += ["", "Every setting tried (seed 0, dev split):", "", "| model | dev AUC | dev logloss | epoch | setting |",
              "|---|---|---|---|---|"]  # fmt: skip
    for r in records:
        for g in r["grid"]:
            lines.append(f"| {r['model']} | {g['dev_AUC']:.4f} | {g['dev_logloss']:.4f} | {g['best_epoch']} | "
                         f"`{json.dumps(g['settings'])}` |")  # fmt: skip
    (RESULTS / f"ctr_{name}.md").write_text("\n".join(lines) + "\n")


def hstu_run(dataset: str, given: dict[str, str], runs: Path, mode: dict, ctx: Context) -> tuple[Path, str]:
    if dataset in given:
        return Path(given[dataset]), "given"
    default = Path("runs/bench") / f"{dataset}-hstu"
    if (default / "manifest.json").exists():
        return default, "runs/bench"
    out = runs / dataset / "hstu"
    if not (out / "manifest.json").exists():
        train(TrainConfig(model="hstu", dataset=dataset, out=str(out), threads=1, **mode["hstu"]), dataset=ctx.ds,
              console=console)  # fmt: skip
    return out, f"trained here: {mode['hstu']}"


def dataset_records(dataset: str, args: argparse.Namespace, mode: dict) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    ctx = Context(dataset)
    runs = args.runs
    hstu, hstu_origin = hstu_run(dataset, dict(x.split("=", 1) for x in args.hstu_run), runs, mode, ctx)
    tt = runs / dataset / "two-tower"
    if not (tt / "metrics.json").exists():
        train_ranking_model("two-tower", dataset, tt, context=ctx, console=console, threads=1, **mode["two_tower"])
    tt_metrics = json.loads((tt / "metrics.json").read_text())
    retrieval = [str(hstu), str(tt)]
    cmd = " ".join(shlex.quote(a) for a in sys.argv)
    records: list[dict[str, Any]] = [
        {"dataset": dataset, "stage": "two-tower-ann", "model": "hnsw", "metrics": tt_metrics["ann"], "command": cmd}
    ]
    base_done = False
    for kind in args.rankers:
        run = runs / dataset / kind
        if not (run / "metrics.json").exists():
            train_ranking_model(kind, dataset, run, context=ctx, console=console, threads=1, retrieval=retrieval,
                                **mode["ranker"])  # fmt: skip
        rm = json.loads((run / "metrics.json").read_text())
        res = pipeline_evaluate(ctx, retrieval, str(run), console, k=args.k, cap=args.cap,
                                max_users=mode["eval_users"])  # fmt: skip
        for rec in res:  # after hstu, after hstu + two-tower (fused), ranking, rerank
            stage, m = rec["stage"], rec["metrics"]
            if stage in ("ranking", "rerank"):
                extra = {"ranker_test_rows": rm["test_rows"]} if stage == "ranking" else {"cap": args.cap}
                records.append(
                    {"dataset": dataset, "stage": stage, "model": kind, "metrics": m, "command": cmd, **extra}
                )
            elif not base_done:
                fused = len(rec["components"]) > 1
                model = f"hstu + two-tower, RRF top-{args.k}" if fused else f"hstu ({hstu_origin})"
                records.append({"dataset": dataset, "stage": "retrieval" if fused else "hstu-only", "model": model,
                                "metrics": m, "command": cmd})  # fmt: skip
        base_done = True
    console.print(f"{dataset} done in {(time.perf_counter() - t0) / 60:.1f} min")
    return records


def write(records: list[dict[str, Any]], quick: bool, name: str | None = None) -> None:
    """Merge with the existing results: records of the datasets measured now replace the old ones."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = name or ("ranking_quick" if quick else "ranking")
    old_path = RESULTS / f"{name}.json"
    if old_path.exists():
        fresh = {r["dataset"] for r in records}
        records = [r for r in json.loads(old_path.read_text()) if r["dataset"] not in fresh] + records
    (RESULTS / f"{name}.json").write_text(json.dumps(records, indent=2))
    lines = [f"# Multi-stage pipeline{' (quick mode: small runs, subset of test users)' if quick else ''}", ""]
    pipe = [r for r in records if r["stage"] != "two-tower-ann"]
    if pipe:
        lines += ["Test split, full catalog, seen items excluded; the same users for every stage.", "",
                  "| dataset | stage | model | HR@10 | NDCG@10 | recall@K | users |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in pipe:
            m = r["metrics"]
            rec = next((f"{v:.4f}" for k, v in m.items() if k.startswith("recall@")), "")
            lines.append(f"| {r['dataset']} | {r['stage']} | {r['model']} | {m['HR@10']:.4f} | {m['NDCG@10']:.4f} | "
                         f"{rec} | {m['users']} |")  # fmt: skip
        lines += stage_gains(pipe)
    ann = [r for r in records if r.get("stage") == "two-tower-ann"]
    if ann:
        lines += ["", "Two-tower item index (faiss HNSW) against exact search, one query at a time:", "",
                  "| dataset | recall@100 | HNSW p50 ms | exact p50 ms |", "|---|---|---|---|"]  # fmt: skip
        for r in ann:
            m = r["metrics"]
            lines.append(f"| {r['dataset']} | {m['recall@100']:.4f} | {m['ann_latency_ms_p50']:.3f} | "
                         f"{m['exact_latency_ms_p50']:.3f} |")  # fmt: skip
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    if pipe:
        plot(pipe, RESULTS / f"{name}.png")


def stage_gains(pipe: list[dict[str, Any]]) -> list[str]:
    """What the ranker and the re-rank add over the fused retrieval order, per dataset, with a noise scale.

    2 SE is for the difference of two independent proportions over the same number of users,
    2 * sqrt(2 p (1 - p) / users): conservative, since every stage is scored on the same users (paired)."""
    lines = ["", "What each stage adds over the fused retrieval order (test HR@10; 2 SE: conservative noise scale):", "",
             "| dataset | stage | model | HR@10 change | NDCG@10 change | 2 SE of HR@10 change | measurable? |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for d in dict.fromkeys(r["dataset"] for r in pipe):
        base = next((r for r in pipe if r["dataset"] == d and r["stage"] == "retrieval"), None)
        if base is None:
            continue
        hr, nd, users = base["metrics"]["HR@10"], base["metrics"]["NDCG@10"], base["metrics"]["users"]
        se2 = 2 * (2 * hr * (1 - hr) / max(users, 1)) ** 0.5
        for r in pipe:
            if r["dataset"] != d or r["stage"] not in ("ranking", "rerank"):
                continue
            dh, dn = r["metrics"]["HR@10"] - hr, r["metrics"]["NDCG@10"] - nd
            verdict = "yes, better" if dh > se2 else "yes, worse" if dh < -se2 else "no (within noise)"
            lines.append(f"| {d} | {r['stage']} | {r['model']} | {dh:+.4f} ({dh / hr:+.1%}) | {dn:+.4f} ({dn / nd:+.1%}) "
                         f"| {se2:.4f} | {verdict} |")  # fmt: skip
    return lines


def plot(pipe: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in pipe))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False)
    for ax, d in zip(axes[0], datasets, strict=True):
        rows = [r for r in pipe if r["dataset"] == d]
        labels = [r["stage"] + (f"\n{r['model']}" if r["stage"] in ("ranking", "rerank") else "") for r in rows]
        ax.bar(range(len(rows)), [r["metrics"]["NDCG@10"] for r in rows], color="tab:blue")
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
        ax.set(title=d, ylabel="test NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=None, help="default: ml-1m amazon-beauty (quick: ml-100k)")
    ap.add_argument("--hstu-run", action="append", default=[], metavar="DATASET=DIR")
    ap.add_argument("--rankers", nargs="+", default=["dlrm", "wide-deep"])
    ap.add_argument("--runs", type=Path, default=Path("runs/ranking"))
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--cap", type=int, default=3)
    ap.add_argument("--ctr-data", choices=sorted(CTR_GRIDS), default="frappe", help="the CTR check's data")
    ap.add_argument("--ctr-seeds", type=int, default=3)
    ap.add_argument("--ctr-only", action="store_true", help="only the CTR check (ctr_<data>.json / .md)")
    ap.add_argument("--skip-ctr", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small runs and 300 test users: a check, not a result")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md/.png from the stored .json")
    ap.add_argument("--name", help="results file stem (default ranking / ranking_quick), e.g. for another HSTU run")
    args = ap.parse_args()
    if args.render:
        stem = args.name or ("ranking_quick" if args.quick else "ranking")
        write(json.loads((RESULTS / f"{stem}.json").read_text()), args.quick, stem)
        return
    setup(1)
    mode = QUICK if args.quick else FULL
    datasets = args.datasets or (["ml-100k"] if args.quick else ["ml-1m", "amazon-beauty"])
    if args.quick:
        args.runs = args.runs.with_name(args.runs.name + "-quick")
    if not args.skip_ctr:
        command = "python benchmarks/ranking.py " + shlex.join(sys.argv[1:])
        write_ctr(ctr_records(args.ctr_data, args.ctr_seeds, command.strip()), args.ctr_data)
        console.print((RESULTS / f"ctr_{args.ctr_data}.md").read_text())
    if args.ctr_only:
        return
    records: list[dict[str, Any]] = []
    for d in datasets:
        records += dataset_records(d, args, mode)
        write(records, args.quick, args.name)
    write(records, args.quick, args.name)
    console.print((RESULTS / f"{args.name or ('ranking_quick' if args.quick else 'ranking')}.md").read_text())


if __name__ == "__main__":
    main()
