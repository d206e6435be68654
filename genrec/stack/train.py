"""Training of the two-tower retriever and the CTR rankers into bundles: `genrec train --model two-tower |
wide-deep | dlrm | lr`. The one pipeline module that is a trainer; loading lives in genrec/pipeline/runs.py.

A ranker learns on retrieval candidates: its training rows come from the retrieval bundles given with
--retrieval (trained on the same data, checked by fingerprint), and its bundle carries copies of them.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from genrec.bundle import Bundle, BundleWriter, write_json
from genrec.evaluation.evaluate import evaluate_scorer
from genrec.features.ranking import FeatureConfig
from genrec.index.ann import ExactIndex, FaissIndex, load_index, recall_vs_exact
from genrec.models.two_tower import TwoTower, TwoTowerConfig
from genrec.pipeline.runs import Context, progress_bar, ranker_users, retrieval_stage, table_files, user_subset
from genrec.pipeline.stages import retrieval_feature_names, training_rows
from genrec.ranking.inference import (
    RANKERS,
    DenseScaler,
    build_ranker,
    ctr_metrics,
    item_vectors,
    predict,
    two_tower_scorer,
    user_vectors,
)
from genrec.ranking.train import CTRConfig, TwoTowerTrainConfig, fit_ctr, fit_two_tower
from genrec.runtime import setup


def train_two_tower(ctx: Context, out: Path, console: Console, **opts: Any) -> dict[str, Any]:
    fcfg = FeatureConfig(history_len=opts.pop("history_len", 20))
    feat = ctx.featurizer(fcfg)
    mkw = {k: opts.pop(k) for k in ("dim", "emb_dim", "hidden", "temperature") if k in opts}
    tcfg = TwoTowerTrainConfig(**opts)
    torch.manual_seed(tcfg.seed)
    model = TwoTower(TwoTowerConfig(feat.user_schema(), feat.item_schema(), **mkw))
    console.print(f"[bold]two-tower[/] on {ctx.name}: {sum(p.numel() for p in model.parameters()):,} parameters")
    history = fit_two_tower(model, feat, ctx.split, tcfg, console)
    test = evaluate_scorer(two_tower_scorer(model, feat, ctx.split, "test"), ctx.split, "test", fcfg.history_len)
    best = max(history, key=lambda h: h["valid"]["NDCG@10"])
    writer = BundleWriter(out, ctx.ds, data_name=ctx.name)
    with tempfile.TemporaryDirectory() as tmp:
        # ANN over the item tower: build, save, reload, and measure it against exact search on real queries
        table = item_vectors(model, feat)[1:].numpy()
        ids = np.arange(1, len(table) + 1)
        FaissIndex.build(table, ids, kind="hnsw").save(Path(tmp) / "index")
        ann = load_index(Path(tmp) / "index")
        u, e, _ = ctx.split.eval_inputs("test")
        q = user_vectors(model, feat, u[:1000], e[:1000]).numpy()
        ann_m = recall_vs_exact(ann, ExactIndex(table, ids), q, k=min(100, len(ids)))
        metrics = {"dataset": ctx.name, "model": "two-tower", "split": "test", "metrics": test, "ann": ann_m,
                   "best_epoch": best["epoch"], "best_valid": best["valid"]}  # fmt: skip
        config = {"model": model.config.to_dict(), "features": asdict(fcfg), "train": asdict(tcfg)}
        files = {**table_files(ctx.tables), "index": Path(tmp) / "index"}
        writer.add_component("two-tower", "two-tower", "retrieval", config, model.state_dict(), metrics, files)
        writer.set_metrics(metrics)
        writer.commit()
    write_json(history, out / "history.json")
    write_json(metrics, out / "metrics.json")
    console.print(
        f"two-tower test NDCG@10 {test['NDCG@10']:.4f} HR@10 {test['HR@10']:.4f} HR@200 {test['HR@200']:.4f}; "
        f"HNSW recall@100 {ann_m['recall@100']:.3f}, {ann_m['ann_latency_ms_p50']:.2f} ms/query "
        f"(exact {ann_m['exact_latency_ms_p50']:.2f} ms)"
    )
    return metrics


def train_ranker(ctx: Context, kind: str, out: Path, retrieval: list[str], console: Console, **opts: Any) -> dict:
    setup_opts = {k: opts.pop(k) for k in ("k", "n_hard", "n_random", "max_users", "holdout", "history_len",
                                            "use_ann", "test_users", "only_retrieved", "lists_per_user") if k in opts}  # fmt: skip
    k = setup_opts.get("k", 200)
    retrievers = retrieval_stage(retrieval, ctx, k, setup_opts.get("use_ann", True))  # the pipeline's stage objects
    names = [r.name for r in retrievers]
    fcfg = FeatureConfig(history_len=setup_opts.get("history_len", 20), extra_dense=retrieval_feature_names(names))
    feat = ctx.featurizer(fcfg)
    mkw = {k_: opts.pop(k_) for k_ in ("dim", "bottom", "top", "deep_layers", "dropout") if k_ in opts}
    opts.setdefault("select", "NDCG@10")  # what the pipeline needs: the order inside each candidate list
    ccfg = CTRConfig(**opts)
    users, hold = ranker_users(ctx.split.eval_users, setup_opts, ccfg.seed)
    sample = {"n_hard": setup_opts.get("n_hard", 20), "n_random": setup_opts.get("n_random", 10)}
    sample["only_retrieved"] = setup_opts.get("only_retrieved", True)
    lists = setup_opts.get("lists_per_user", 1)
    with progress_bar(console) as prog:
        tr = training_rows(retrievers, feat, ctx.split, "valid", users[~hold], seed=ccfg.seed, progress=prog,
                           lists_per_user=lists, **sample)  # fmt: skip
        va = training_rows(
            retrievers, feat, ctx.split, "valid", users[hold], seed=ccfg.seed + 1, progress=prog, **sample
        )
        test_users = user_subset(ctx.split.eval_users, setup_opts.get("test_users", 2000), ccfg.seed + 2)
        te = training_rows(retrievers, feat, ctx.split, "test", test_users, seed=ccfg.seed + 2, progress=prog, **sample)
    scaler = DenseScaler().fit(tr.dense)
    for rows in (tr, va, te):
        rows.dense = scaler.transform(rows.dense)
    torch.manual_seed(ccfg.seed)
    model = build_ranker(kind, feat.schema(), **mkw)
    console.print(f"[bold]{kind}[/] on {ctx.name}: {len(tr):,} training rows ({len(users[~hold]):,} users), "
                  f"{sum(p.numel() for p in model.parameters()):,} parameters")  # fmt: skip
    res = fit_ctr(model, tr, va, ccfg, console)
    test = ctr_metrics(te, predict(model, te))
    cfg_dict = model.config.to_dict() if hasattr(model, "config") else {"kind": "lr", "schema": feat.schema().to_dict()}
    meta = {"model": cfg_dict, "features": asdict(fcfg), "train": asdict(ccfg), "setup": setup_opts,
            "retrieval": [str(r) for r in retrieval], "retriever_names": names,
            "holdout_users": users[hold].tolist(),  # valid targets it never trained on: pipeline validation
            "scaler": asdict(scaler)}  # fmt: skip
    metrics = {"dataset": ctx.name, "model": kind, "valid": res.best_valid, "best_epoch": res.best_epoch,
               "test_rows": test, "rows": {"train": len(tr), "valid": len(va), "test": len(te)},
               "note": "test rows: each test user's real next item + sampled hard (retrieved) and random negatives"}  # fmt: skip
    writer = BundleWriter(out, ctx.ds, data_name=ctx.name)
    for run, r in zip(retrieval, retrievers, strict=True):  # the retrievers whose scores are features
        src = Bundle.open(run)
        writer.copy_component(src, src.component(role="retrieval").name, r.name)
    writer.add_component(kind, kind, "ranking", meta, model.state_dict(), metrics, table_files(ctx.tables))
    writer.set_metrics(metrics)
    writer.commit()
    write_json(res.history, out / "history.json")
    write_json(metrics, out / "metrics.json")
    console.print(f"{kind} test rows: AUC {test['AUC']:.4f} logloss {test['logloss']:.4f} "
                  f"list HR@10 {test['HR@10']:.4f} NDCG@10 {test['NDCG@10']:.4f}")  # fmt: skip
    return metrics


def train_ranking_model(model: str, dataset: str, out: str | Path, **opts: Any) -> dict[str, Any]:
    """Entry point for `genrec train --model {two-tower,wide-deep,dlrm,lr}`. Rankers need
    retrieval=[RUN_DIR, ...] (HSTU and/or two-tower runs on the same dataset)."""
    console = opts.pop("console", None) or Console()
    setup(opts.pop("threads", None))
    if model != "two-tower" and model not in RANKERS:
        raise ValueError(f"unknown model {model!r}: choose from two-tower, {', '.join(RANKERS)}")
    retrieval = opts.pop("retrieval", None)
    if model in RANKERS and not retrieval:
        raise ValueError(f"--model {model} needs --retrieval RUN_DIR[,RUN_DIR] (an HSTU and/or two-tower run)")
    ctx = opts.pop("context", None) or Context(dataset, seed=opts.pop("data_seed", 42))
    out = Path(out)
    try:
        if model == "two-tower":
            return train_two_tower(ctx, out, console, **opts)
        runs = [r for r in retrieval.split(",") if r] if isinstance(retrieval, str) else list(retrieval)
        return train_ranker(ctx, model, out, runs, console, **opts)
    except TypeError as e:  # an option the chosen model's config does not have
        raise ValueError(f"bad option for --model {model}: {e}") from None


__all__ = ["train_ranking_model"]
