"""Run folders for the two-tower retriever and the rankers, and `train_ranking_model`, the CLI's entry point.

Two-tower run (RUN_DIR):  config.json (kind, model config with feature schemas, feature config, dataset),
    best.pt (weights of the best validation epoch, saved atomically), history.json, metrics.json (test
    full-catalog metrics; ANN recall@100 vs exact and latency), index/ (faiss HNSW over the item tower).
Ranker run (dlrm | wide-deep | lr):  config.json (also the retrieval runs it was trained with and the dense
    scaler), best.pt, history.json, metrics.json (AUC / logloss / list HR@10, NDCG@10 on test rows).
Feature tables are rebuilt from the dataset at load time (deterministic, training statistics only); the
stored schema is compared with the rebuilt one so a changed dataset fails loudly instead of mis-indexing.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from genrec.data.datasets import Dataset, load_dataset
from genrec.data.sequences import Split, leave_one_out
from genrec.evaluation.evaluate import evaluate_scorer
from genrec.features.ranking import FeatureConfig, RankingFeaturizer
from genrec.features.tables import FeatureTables, build_feature_tables
from genrec.index.ann import ExactIndex, FaissIndex, load_index, recall_vs_exact
from genrec.models.sparse import FeatureSchema
from genrec.models.two_tower import TwoTower, TwoTowerConfig
from genrec.pipeline.pipeline import Pipeline, evaluate
from genrec.pipeline.stages import (
    Ranker,
    SequenceRetrieve,
    TwoTowerParts,
    TwoTowerRetrieve,
    retrieval_feature_names,
    training_rows,
)
from genrec.ranking.train import (
    RANKERS,
    CTRConfig,
    DenseScaler,
    TwoTowerTrainConfig,
    build_ranker,
    ctr_metrics,
    fit_ctr,
    fit_two_tower,
    item_vectors,
    predict,
    two_tower_scorer,
    user_vectors,
)
from genrec.runtime import setup
from genrec.training.trainer import atomic_save, load_checkpoint, load_run, write_json

Retriever = SequenceRetrieve | TwoTowerRetrieve


class Context:
    """A dataset with its split and feature tables, loaded once and shared by every run that uses it."""

    def __init__(self, dataset: str, seed: int = 42, ds: Dataset | None = None) -> None:
        # seed only matters for the synthetic shop; 42 is genrec's TrainConfig default, so HSTU runs line up
        self.name = dataset
        self.ds = ds or load_dataset(dataset, seed=seed)
        self.split: Split = leave_one_out(self.ds.sequences)
        self.tables: FeatureTables = build_feature_tables(self.ds, self.split)

    def featurizer(self, cfg: FeatureConfig | None = None) -> RankingFeaturizer:
        return RankingFeaturizer(self.tables, self.ds.sequences, cfg)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True)


def _check_schema(stored: dict, rebuilt: FeatureSchema, run: Path) -> None:
    if FeatureSchema.from_dict(stored) != rebuilt:
        raise ValueError(f"{run}: the dataset's features no longer match the ones this run was trained on")


# ---- two-tower ---------------------------------------------------------------------------------------


def train_two_tower(ctx: Context, out: Path, console: Console, **opts: Any) -> dict[str, Any]:
    fcfg = FeatureConfig(history_len=opts.pop("history_len", 20))
    feat = ctx.featurizer(fcfg)
    mkw = {k: opts.pop(k) for k in ("dim", "emb_dim", "hidden", "temperature") if k in opts}
    tcfg = TwoTowerTrainConfig(**opts)
    torch.manual_seed(tcfg.seed)
    model = TwoTower(TwoTowerConfig(feat.user_schema(), feat.item_schema(), **mkw))
    console.print(f"[bold]two-tower[/] on {ctx.name}: {sum(p.numel() for p in model.parameters()):,} parameters")
    history = fit_two_tower(model, feat, ctx.split, tcfg, console)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"kind": "two-tower", "dataset": ctx.name, "model": model.config.to_dict(), "features": asdict(fcfg),
            "train": asdict(tcfg)}  # fmt: skip
    write_json(meta, out / "config.json")
    atomic_save({"model": model.state_dict()}, out / "best.pt")
    write_json(history, out / "history.json")
    test = evaluate_scorer(two_tower_scorer(model, feat, ctx.split, "test"), ctx.split, "test", fcfg.history_len)
    # ANN over the item tower: build, save, reload, and measure it against exact search on real queries
    table = item_vectors(model, feat)[1:].numpy()
    ids = np.arange(1, len(table) + 1)
    FaissIndex.build(table, ids, kind="hnsw").save(out / "index")
    ann = load_index(out / "index")
    u, e, _ = ctx.split.eval_inputs("test")
    q = user_vectors(model, feat, u[:1000], e[:1000]).numpy()
    ann_m = recall_vs_exact(ann, ExactIndex(table, ids), q, k=min(100, len(ids)))
    best = max(history, key=lambda h: h["valid"]["NDCG@10"])
    metrics = {"dataset": ctx.name, "model": "two-tower", "split": "test", "metrics": test, "ann": ann_m,
               "best_epoch": best["epoch"], "best_valid": best["valid"]}  # fmt: skip
    write_json(metrics, out / "metrics.json")
    console.print(
        f"two-tower test NDCG@10 {test['NDCG@10']:.4f} HR@10 {test['HR@10']:.4f} HR@200 {test['HR@200']:.4f}; "
        f"HNSW recall@100 {ann_m['recall@100']:.3f}, {ann_m['ann_latency_ms_p50']:.2f} ms/query "
        f"(exact {ann_m['exact_latency_ms_p50']:.2f} ms)"
    )
    return metrics


def load_two_tower_parts(run: Path, ctx: Context, use_ann: bool = True) -> TwoTowerParts:
    meta = json.loads((run / "config.json").read_text())
    feat = ctx.featurizer(FeatureConfig(**meta["features"]))
    cfg = dict(meta["model"])
    cfg.pop("kind")
    us, its = FeatureSchema.from_dict(cfg.pop("user_schema")), FeatureSchema.from_dict(cfg.pop("item_schema"))
    _check_schema(asdict(us), feat.user_schema(), run)
    _check_schema(asdict(its), feat.item_schema(), run)
    model = TwoTower(TwoTowerConfig(us, its, **cfg))
    model.load_state_dict(load_checkpoint(run / "best.pt")["model"])
    index = load_index(run / "index") if use_ann and (run / "index/index.json").exists() else None
    return TwoTowerParts(model, feat, index if isinstance(index, FaissIndex) else None)


def load_component(run: str | Path, ctx: Context, use_ann: bool = True) -> tuple[str, object]:
    """A two-tower run folder or any genrec sequential run (HSTU, SASRec) on ctx's dataset -> (name, part)."""
    run = Path(run)
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run} is not a run folder (no config.json)")
    meta = json.loads(cfg_path.read_text())
    dataset = meta.get("dataset") if meta.get("kind") == "two-tower" else meta["train"]["dataset"]
    if dataset != ctx.name:
        raise ValueError(f"{run} was trained on {dataset!r}, not {ctx.name!r}")
    if meta.get("kind") == "two-tower":
        return "two-tower", load_two_tower_parts(run, ctx, use_ann)
    model, _ = load_run(run)
    if meta.get("dataset") != ctx.ds.sequences.summary():
        raise ValueError(f"{run} was trained on {meta.get('dataset')}, this dataset is {ctx.ds.sequences.summary()}")
    return meta["train"]["model"], model


def retrieval_components(runs: list[str], ctx: Context, use_ann: bool = True) -> dict[str, object]:
    """Retrieval run folders -> {name: loaded part}; two runs of one kind get distinct names."""
    loaded = [load_component(r, ctx, use_ann) for r in runs]
    names = [n for n, _ in loaded]
    return {(f"{n}{i}" if names.count(n) > 1 else n): c for i, (n, c) in enumerate(loaded)}


def retrieval_specs(components: dict[str, object], k: int = 200) -> list[dict]:
    return [{"stage": "retrieve", "component": n, "k": k} for n in components]


def retrieval_stage(runs: list[str], ctx: Context, k: int = 200, use_ann: bool = True) -> list[Retriever]:
    """The retrieval stage objects of a pipeline over these runs (the same ones the pipeline runs)."""
    comps = retrieval_components(runs, ctx, use_ann)
    return context_pipeline(ctx, comps, retrieval_specs(comps, k)).stages  # type: ignore[return-value]


def context_pipeline(ctx: Context, components: dict[str, object], specs: list[dict]) -> Pipeline:
    """A Pipeline over ctx's dataset (its catalog, user attributes, and the feature tables' category)."""
    return Pipeline.from_parts(ctx.ds.sequences, components, specs, catalog=ctx.ds.catalog,
                               users=getattr(ctx.ds, "users", None), category=ctx.tables.category - 1,
                               name=ctx.name)  # fmt: skip


# ---- rankers -----------------------------------------------------------------------------------------


def _user_subset(users: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, limit, replace=False))


def train_ranker(ctx: Context, kind: str, out: Path, retrieval: list[str], console: Console, **opts: Any) -> dict:
    setup_opts = {k: opts.pop(k) for k in ("k", "n_hard", "n_random", "max_users", "holdout", "history_len",
                                            "use_ann", "test_users", "only_retrieved", "lists_per_user") if k in opts}  # fmt: skip
    k = setup_opts.get("k", 200)
    retrievers = retrieval_stage(retrieval, ctx, k, setup_opts.get("use_ann", True))
    fcfg = FeatureConfig(history_len=setup_opts.get("history_len", 20),
                         extra_dense=retrieval_feature_names([r.name for r in retrievers]))  # fmt: skip
    feat = ctx.featurizer(fcfg)
    mkw = {k_: opts.pop(k_) for k_ in ("dim", "bottom", "top", "deep_layers", "dropout") if k_ in opts}
    opts.setdefault("select", "NDCG@10")  # what the pipeline needs: the order inside each candidate list
    ccfg = CTRConfig(**opts)
    users = _user_subset(ctx.split.eval_users, setup_opts.get("max_users"), ccfg.seed)
    rng = np.random.default_rng(ccfg.seed)
    hold = rng.random(len(users)) < setup_opts.get("holdout", 0.1)
    sample = {"n_hard": setup_opts.get("n_hard", 20), "n_random": setup_opts.get("n_random", 10)}
    sample["only_retrieved"] = setup_opts.get("only_retrieved", True)
    lists = setup_opts.get("lists_per_user", 1)
    with _progress(console) as prog:
        tr = training_rows(retrievers, feat, ctx.split, "valid", users[~hold], seed=ccfg.seed, progress=prog,
                           lists_per_user=lists, **sample)  # fmt: skip
        va = training_rows(
            retrievers, feat, ctx.split, "valid", users[hold], seed=ccfg.seed + 1, progress=prog, **sample
        )
        test_users = _user_subset(ctx.split.eval_users, setup_opts.get("test_users", 2000), ccfg.seed + 2)
        te = training_rows(retrievers, feat, ctx.split, "test", test_users, seed=ccfg.seed + 2, progress=prog, **sample)
    if min(len(tr), len(va)) == 0:
        raise ValueError("no training lists: retrieval found none of the validation targets; check the retrieval runs")
    scaler = DenseScaler().fit(tr.dense)
    for rows in (tr, va, te):
        rows.dense = scaler.transform(rows.dense)
    torch.manual_seed(ccfg.seed)
    model = build_ranker(kind, feat.schema(), **mkw)
    console.print(f"[bold]{kind}[/] on {ctx.name}: {len(tr):,} training rows ({len(users[~hold]):,} users), "
                  f"{sum(p.numel() for p in model.parameters()):,} parameters")  # fmt: skip
    res = fit_ctr(model, tr, va, ccfg, console)
    test = ctr_metrics(te, predict(model, te))
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = model.config.to_dict() if hasattr(model, "config") else {"kind": "lr", "schema": feat.schema().to_dict()}
    meta = {"kind": kind, "dataset": ctx.name, "model": cfg_dict, "features": asdict(fcfg), "train": asdict(ccfg),
            "setup": setup_opts, "retrieval": [str(r) for r in retrieval],
            "retriever_names": [r.name for r in retrievers], "scaler": asdict(scaler)}  # fmt: skip
    write_json(meta, out / "config.json")
    atomic_save({"model": model.state_dict()}, out / "best.pt")
    write_json(res.history, out / "history.json")
    metrics = {"dataset": ctx.name, "model": kind, "valid": res.best_valid, "best_epoch": res.best_epoch,
               "test_rows": test, "rows": {"train": len(tr), "valid": len(va), "test": len(te)},
               "note": "test rows: each test user's real next item + sampled hard (retrieved) and random negatives"}  # fmt: skip
    write_json(metrics, out / "metrics.json")
    console.print(f"{kind} test rows: AUC {test['AUC']:.4f} logloss {test['logloss']:.4f} "
                  f"list HR@10 {test['HR@10']:.4f} NDCG@10 {test['NDCG@10']:.4f}")  # fmt: skip
    return metrics


def load_ranker(run: str | Path, ctx: Context, retrievers: list[str]) -> Ranker:
    """A ranker run on ctx's dataset; `retrievers`: the names of the pipeline's retrieval stages, in order."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise FileNotFoundError(f"{run} is not a ranker run folder (no config.json)")
    meta = json.loads((run / "config.json").read_text())
    if meta.get("kind") not in RANKERS:
        raise ValueError(f"{run} holds a {meta.get('kind')!r} run, not a ranker ({', '.join(RANKERS)})")
    if meta["dataset"] != ctx.name:
        raise ValueError(f"{run} was trained on {meta['dataset']!r}, not {ctx.name!r}")
    fcfg = FeatureConfig(**meta["features"])
    if fcfg.extra_dense != retrieval_feature_names(retrievers):
        raise ValueError(
            f"{run} was trained with retrieval features {fcfg.extra_dense}; the given retrieval runs give "
            f"{retrieval_feature_names(retrievers)} (pass the same kinds of runs, in the same order, as {meta['retrieval']})"
        )
    feat = ctx.featurizer(fcfg)
    cfg = dict(meta["model"])
    _check_schema(cfg["schema"], feat.schema(), run)
    kw = {k: v for k, v in cfg.items() if k not in ("kind", "schema")}
    model = build_ranker(meta["kind"], feat.schema(), **kw)
    model.load_state_dict(load_checkpoint(run / "best.pt")["model"])
    return Ranker(model.eval(), DenseScaler(**meta["scaler"]), feat)


def runs_pipeline(ctx: Context, retrieval: list[str], ranker_run: str | None, k: int = 200, cap: int = 3,
                  use_ann: bool = True) -> Pipeline:  # fmt: skip
    """Retrieval runs (fused) -> the ranker run -> re-rank (seen excluded, at most `cap` per category)."""
    comps = retrieval_components(retrieval, ctx, use_ann)
    specs = retrieval_specs(comps, k)
    if ranker_run:
        ranker = load_ranker(ranker_run, ctx, list(comps))
        comps["ranker"] = ranker
        specs.append({"stage": "rank", "component": "ranker", "name": type(ranker.model).__name__.lower()})
    specs.append({"stage": "rerank", "exclude_out_of_stock": False, "max_per_category": cap})
    return context_pipeline(ctx, comps, specs)


def pipeline_evaluate(
    ctx: Context, retrieval: list[str], ranker_run: str | None, console: Console, k: int = 200,
    cap: int = 3, max_users: int | None = None, seed: int = 0, use_ann: bool = True, which: str = "test",
) -> list[dict]:  # fmt: skip
    """Records {dataset, stage, name, components, metrics} after each stage of runs_pipeline."""
    pipe = runs_pipeline(ctx, retrieval, ranker_run, k, cap, use_ann)
    with _progress(console) as prog:
        return evaluate(pipe, which, max_users, seed, dataset=ctx.name, progress=prog)


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


__all__ = ["Context", "pipeline_evaluate", "train_ranking_model"]
