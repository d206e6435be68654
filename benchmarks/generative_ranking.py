"""Generative ranking head to head: HSTU ranker (summed vs interleaved action tokens) vs DLRM-style baselines.

    GENREC_DATA_DIR=/work/shared/data python benchmarks/generative_ranking.py --quick   # small subsets, ~3 min
    GENREC_DATA_DIR=/work/shared/data python benchmarks/generative_ranking.py           # full (long: an hour+ on CPU)

Writes benchmarks/results/generative_ranking.{json,md,png} (generative_ranking_quick.* with --quick).

Protocol, per dataset (see genrec/generative_ranking/examples.py):
  * each evaluated user's last `window` events are held out; the user's candidate list = the distinct held-out
    items (labels from the highest action on each) + `negatives` popularity-sampled items the user never touched;
    every model scores exactly these candidates; history = the events before the held-out window;
  * training: every position of the remaining events is a cut with its real event (positive) and
    `train_negatives` sampled unseen items, for every model (HSTU gets them as jagged cuts, the feature
    models as flat rows);
  * metrics: per task AUC and logloss over all candidates (missing labels skipped: MovieLens 'liked' exists only
    for rated items), NDCG@10 over each user's list with gain = number of positive task labels and score = sum
    of the task probabilities; training seconds (wall, this machine, 1 thread unless --threads);
  * models: popularity by action, dlrm-style (genrec/generative_ranking/baselines.py), genrec.models' DLRM and
    Wide & Deep one per task ("(per task)"), hstu-summed, hstu-interleaved (with item
    attributes), and the better token mode without attributes (attribute ablation);
  * mfalcon: inference time of scoring each user's list with one shared prefix (one pass, all candidates at the
    same cut) vs each candidate appended to its own copy of the history, same model, same lists.
No hyperparameter was tuned on the test lists (fixed settings below; the same for every dataset).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrec.evaluation.metrics import ranking_report  # noqa: E402
from genrec.generative_ranking import baselines as bl  # noqa: E402
from genrec.generative_ranking.data import load_action_dataset  # noqa: E402
from genrec.generative_ranking.examples import (  # noqa: E402
    Examples,
    eval_examples,
    item_statistics,
    popularity,
    split_train,
    train_examples,
)
from genrec.generative_ranking.train import RankTrainConfig, fit_hstu, predict_hstu  # noqa: E402
from genrec.models.hstu_ranker import HSTURanker, HSTURankerConfig  # noqa: E402

# name -> (max_users quick, max_users full)
DATASETS = {"synthetic:small": (600, None), "ml-100k": (300, None), "ml-1m": (300, None)}
SETTINGS = {
    "quick": {
        "max_len": 50,
        "window": 5,
        "negatives": 50,
        "train_negatives": 2,
        "hstu_epochs": 8,
        "feat_epochs": 3,
        "dim": 48,
        "dropout": 0.2,
        "weight_decay": 0.0,
    },
    "full": {
        "max_len": 200,
        "window": 5,
        "negatives": 100,
        "train_negatives": 2,
        "hstu_epochs": 20,
        "feat_epochs": 5,
        "dim": 64,
        "dropout": 0.2,
        "weight_decay": 0.0,
    },
}


def build_hstu(data, mode: str, s: dict, attributes: bool, stats: np.ndarray | None = None) -> HSTURanker:  # noqa: ANN001
    attrs = data.attribute_sizes() if attributes else {}
    torch.manual_seed(s.get("seed", 0))  # same init whichever models ran before
    model = HSTURanker(
        HSTURankerConfig(
            num_items=data.num_items,
            num_actions=data.num_actions,
            num_tasks=len(data.tasks),
            attributes=attrs,
            num_item_stats=0 if stats is None else stats.shape[1],
            token_mode=mode,
            max_len=s["max_len"],
            dim=s["dim"],
            dropout=s.get("dropout", 0.1),
            use_time=data.timestamps is not None,
        )
    )
    if attributes:
        model.set_item_attributes({k: torch.from_numpy(v) for k, v in data.item_attributes.items()})
    if stats is not None:
        model.set_item_stats(torch.from_numpy(stats))
    return model


def naive_predict(model: HSTURanker, ex: Examples) -> np.ndarray:
    """Each candidate appended to its own copy of the history (no shared prefix), batched 64 copies per pass."""
    out = []
    with torch.no_grad():
        for b in range(ex.num_users):
            one = ex.take(np.array([b]))
            m = one.num_candidates
            for s in range(0, m, 64):
                k = min(64, m - s)
                n = len(one.hist_items)
                rep = Examples(
                    np.tile(one.hist_items, k),
                    np.tile(one.hist_actions, k),
                    np.tile(one.hist_times, k),
                    np.arange(k + 1) * n,
                    one.cand_items[s : s + k],
                    one.cand_cuts[s : s + k],
                    one.cand_times[s : s + k],
                    np.arange(k + 1),
                    one.labels[s : s + k],
                    np.zeros(k, np.int64),
                )
                out.append(torch.sigmoid(model(**rep.tensors())).numpy())
    return np.concatenate(out)


def run_dataset(name: str, mode: str, seed: int, console) -> dict:  # noqa: ANN001
    s = SETTINGS[mode]
    max_users = DATASETS[name][0 if mode == "quick" else 1]
    data = load_action_dataset(name, seed=seed, max_users=max_users)
    train, evaluated = split_train(data, s["window"])
    pop = popularity(train)
    trx = train_examples(train, s["max_len"], s["train_negatives"], pop, seed)
    tex = eval_examples(data, evaluated, s["window"], s["max_len"], s["negatives"], pop, seed + 1)
    groups = tex.cand_user()
    console.print(f"[bold]{name}[/]: {data.summary()} | train rows {trx.num_candidates}, test lists {tex.num_users}")
    rows: dict[str, dict] = {}

    def record(model_name: str, probs: np.ndarray, seconds: float, extra: dict | None = None) -> None:
        rows[model_name] = {
            **ranking_report(data.tasks, tex.labels, probs, groups),
            "train_seconds": seconds,
            **(extra or {}),
        }
        console.print(
            f"  {model_name:22s} "
            + " ".join(f"{k}={v:.4f}" for k, v in rows[model_name].items() if isinstance(v, float))
        )

    counts = bl.task_counts(train)
    t0 = time.perf_counter()
    pm = bl.fit_popularity(counts, trx)
    record("popularity", bl.predict_popularity(pm, counts, tex), time.perf_counter() - t0)

    ftr, fte = bl.featurize(trx, data, counts), bl.featurize(tex, data, counts)
    model, scaler, secs = bl.fit_dlrm_style(data, ftr, trx.labels, epochs=s["feat_epochs"], seed=seed)
    record("dlrm-style", bl.predict_dlrm_style(model, scaler, fte), secs)
    for kind in bl.PER_TASK_KINDS:
        models, scaler, keys, secs = bl.fit_per_task(kind, data, ftr, trx.labels, epochs=s["feat_epochs"], seed=seed)
        record(f"{kind} (per task)", bl.predict_per_task(models, scaler, keys, data, fte), secs)

    cfg = RankTrainConfig(epochs=s["hstu_epochs"], lr=3e-3, batch_users=16, weight_decay=s["weight_decay"], seed=seed)
    trained = {}
    stats = item_statistics(train)  # training data only
    for tok in ("summed", "interleaved"):
        m = build_hstu(data, tok, s, attributes=bool(data.item_attributes), stats=stats)
        hist = fit_hstu(m, trx, cfg, quiet=True)
        record(f"hstu-{tok}", predict_hstu(m, tex), hist[-1]["elapsed"], {"final_train_loss": hist[-1]["loss"]})
        trained[tok] = m
    best = max(("summed", "interleaved"), key=lambda t: np.nanmean([rows[f"hstu-{t}"][f"{k}/auc"] for k in data.tasks]))
    if data.item_attributes:
        m = build_hstu(data, best, s, attributes=False, stats=stats)
        hist = fit_hstu(m, trx, cfg, quiet=True)
        record(f"hstu-{best}-no-attributes", predict_hstu(m, tex), hist[-1]["elapsed"])

    # M-FALCON: shared-prefix scoring vs one appended copy of the history per candidate (same model, same lists)
    sub = tex.take(np.arange(min(30, tex.num_users)))
    m = trained[best]
    t0 = time.perf_counter()
    shared = predict_hstu(m, sub, batch_users=1)
    t_shared = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = naive_predict(m, sub)
    t_naive = time.perf_counter() - t0
    mfalcon = {
        "users": sub.num_users,
        "candidates": sub.num_candidates,
        "shared_prefix_seconds": t_shared,
        "appended_alone_seconds": t_naive,
        "speedup": t_naive / t_shared,
        "max_abs_prob_diff": float(np.abs(shared - naive).max()),
    }
    console.print(f"  mfalcon: {mfalcon}")
    return {
        "data": data.summary(),
        "train_rows": trx.num_candidates,
        "test_users": tex.num_users,
        "test_candidates": tex.num_candidates,
        "positive_rate": {t: float(np.nanmean(tex.labels[:, i])) for i, t in enumerate(data.tasks)},
        "best_token_mode": best,
        "models": rows,
        "mfalcon": mfalcon,
    }


def markdown(result: dict) -> str:
    lines = [
        "# Generative ranking: HSTU over (item, action) tokens vs DLRM-style rankers",
        "",
        f"Mode: {result['mode']}, torch threads: {result['threads']}, device: cpu, settings: `{json.dumps(result['settings'])}`.",
        "Same candidates and labels for every model. AUC / logloss per task over all candidates (missing labels",
        "skipped); NDCG@10 over each user's list (gain = number of positive task labels). Training seconds on this",
        'machine (shared CPU: compare within a table only). "Better token mode" = the higher mean AUC over tasks',
        "on these lists; it only picks which mode the attribute ablation and the candidate-scoring timing use (both",
        "modes are reported in full).",
        f"Command: `{result.get('command', 'python benchmarks/generative_ranking.py')}`",
        "",
    ]
    for name, d in result["datasets"].items():
        tasks = d["data"]["tasks"]
        lines += [
            f"## {name}",
            "",
            f"{d['data']['users']} users, {d['data']['items']} items, {d['data']['tokens']} tokens; "
            f"{d['test_users']} test lists, {d['test_candidates']} candidates; positive rate "
            + ", ".join(f"{t} {v:.3f}" for t, v in d["positive_rate"].items())
            + f". Better token mode: **{d['best_token_mode']}**.",
            "",
            "| model | " + " | ".join(f"{t} AUC | {t} logloss" for t in tasks) + " | NDCG@10 | train s |",
            "|---|" + "---:|" * (2 * len(tasks) + 2),
        ]
        for model, r in d["models"].items():
            cells = [f"{r[f'{t}/auc']:.4f} | {r[f'{t}/logloss']:.4f}" for t in tasks]
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {r['ndcg@10']:.4f} | {r['train_seconds']:.1f} |")
        hstu = {m: r for m, r in d["models"].items() if m.startswith("hstu")}
        feat = {m: r for m, r in d["models"].items() if not m.startswith("hstu") and m != "popularity"}
        if hstu and feat:
            bh, bf = (max(g, key=lambda m, g=g: g[m]["ndcg@10"]) for g in (hstu, feat))
            wins = sum(max(r[f"{t}/auc"] for r in hstu.values()) > max(r[f"{t}/auc"] for r in feat.values())
                       for t in tasks)  # fmt: skip
            lines += ["", f"Head to head: best HSTU ({bh}) NDCG@10 {hstu[bh]['ndcg@10']:.4f} vs best feature model "
                      f"({bf}) {feat[bf]['ndcg@10']:.4f}; HSTU has the best AUC on {wins} of {len(tasks)} tasks."]  # fmt: skip
        mf = d["mfalcon"]
        lines += [
            "",
            f"Candidate scoring ({mf['users']} users, {mf['candidates']} candidates, hstu-{d['best_token_mode']}): "
            f"shared prefix {mf['shared_prefix_seconds']:.3f} s vs each candidate appended alone "
            f"{mf['appended_alone_seconds']:.3f} s = **{mf['speedup']:.1f}x**; max |prob diff| {mf['max_abs_prob_diff']:.1e}.",
            "",
        ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        d = result["datasets"][name]
        tasks, models = d["data"]["tasks"], list(d["models"])
        x = np.arange(len(tasks))
        w = 0.8 / len(models)
        for i, m in enumerate(models):
            ax.bar(x + i * w, [d["models"][m][f"{t}/auc"] for t in tasks], w, label=m)
        ax.set_xticks(x + 0.4 - w / 2, tasks)
        ax.set_ylim(0.4, 1.0)
        ax.set_title(name)
        ax.set_ylabel("AUC")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from rich.console import Console

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="user subsets and short training (minutes)")
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, from {list(DATASETS)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    p.add_argument("--render", action="store_true", help="only rewrite the .md/.png from the stored .json")
    a = p.parse_args()
    if a.render:
        stem = "generative_ranking_quick" if a.quick else "generative_ranking"
        result = json.loads((a.out / f"{stem}.json").read_text())
        (a.out / f"{stem}.md").write_text(markdown(result))
        plot(result, a.out / f"{stem}.png")
        return
    torch.set_num_threads(a.threads)
    mode = "quick" if a.quick else "full"
    console = Console()
    stem = "generative_ranking_quick" if a.quick else "generative_ranking"
    out_json = a.out / f"{stem}.json"
    result = {"mode": mode, "threads": a.threads, "settings": SETTINGS[mode], "datasets": {},
              "command": "python benchmarks/generative_ranking.py " + " ".join(sys.argv[1:])}  # fmt: skip
    if out_json.exists():  # keep datasets from earlier runs of the same mode (--datasets runs one at a time)
        old = json.loads(out_json.read_text())
        if old.get("mode") == mode:
            result["datasets"] = old.get("datasets", {})
    for name in a.datasets.split(","):
        if name not in DATASETS:
            raise SystemExit(f"unknown dataset {name!r}; choose from {list(DATASETS)}")
        result["datasets"][name] = run_dataset(name, mode, a.seed, console)
        a.out.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2))
        (a.out / f"{stem}.md").write_text(markdown(result))
        plot(result, a.out / f"{stem}.png")
    console.print(f"wrote {out_json}, {stem}.md, {stem}.png")


if __name__ == "__main__":
    main()
