"""Bundles for the two-tower retriever and the rankers, and `train_ranking_model`, the CLI's entry point.

Two-tower bundle (genrec/bundle.py): one retrieval component "two-tower" whose config holds the model config
    (with feature schemas), the feature config and the training settings; its files are model.pt (best
    validation epoch), tables.npz + tables.json (the encoded feature tables) and index/ (faiss HNSW over the
    item tower). Its metrics: test full-catalog metrics, ANN recall@100 vs exact and latency.
Ranker bundle (dlrm | wide-deep | lr): copies of the retrieval components it was trained on (their scores are
    its features), plus the ranking component (config: model, features, dense scaler, the retrievers' names;
    files: model.pt, tables.npz + tables.json); metrics: AUC / logloss / list HR@10, NDCG@10 on test rows.
Feature tables are built from the dataset once, at training, and loaded from the bundle: a bundle needs no
dataset. history.json and metrics.json are also written beside the bundle's files for people and benchmarks.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from genrec.bundle import (
    Bundle,
    BundleError,
    Component,
    fingerprint,
    json_bytes,
    load_sequential,
    npz_bytes,
    open_bundle,
)
from genrec.data.datasets import Dataset, load_dataset
from genrec.data.sequences import SequenceData, Split, leave_one_out
from genrec.features.covisit import CoVisitation
from genrec.features.ranking import FeatureConfig, RankingFeaturizer
from genrec.features.tables import EntityTable, FeatureTables, build_feature_tables
from genrec.index.ann import FaissIndex, load_index
from genrec.models.sparse import FeatureSchema
from genrec.models.two_tower import TwoTower, TwoTowerConfig
from genrec.pipeline.retrieval import HSTURetriever, RetrievalStage, Retriever, TwoTowerRetriever
from genrec.pipeline.stages import Ranker, evaluate_pipeline
from genrec.ranking.inference import RANKERS, DenseScaler, build_ranker


class Context:
    """A dataset with its split and feature tables, loaded once and shared by every run that uses it."""

    def __init__(self, dataset: str, seed: int = 42, ds: Dataset | None = None) -> None:
        # seed only matters for the synthetic shop; 42 is genrec's TrainConfig default, so HSTU runs line up
        self.name = dataset
        self.ds = ds or load_dataset(dataset, seed=seed)
        self.split: Split = leave_one_out(self.ds.sequences)
        self.tables: FeatureTables = build_feature_tables(self.ds, self.split)
        self.fingerprint = fingerprint(self.ds.sequences)

    def featurizer(self, cfg: FeatureConfig | None = None) -> RankingFeaturizer:
        return RankingFeaturizer(self.tables, self.ds.sequences, cfg)


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True)


def _check_schema(stored: dict, rebuilt: FeatureSchema, comp: Component) -> None:
    if FeatureSchema.from_dict(stored) != rebuilt:
        raise BundleError(f"{comp.path}: tables.npz does not give the feature schema of components.{comp.name}")


# ---- feature tables inside a component: tables.npz (arrays, allow_pickle=False) + tables.json ---------


def table_files(t: FeatureTables) -> dict[str, bytes]:
    arrays: dict[str, np.ndarray] = {"category": t.category}
    meta: dict[str, Any] = {"num_items": t.num_items, "num_users": t.num_users, "has_time": t.has_time,
                            "num_event_types": t.num_event_types, "covisit": t.covisit is not None}  # fmt: skip
    for side, e in (("users", t.users), ("items", t.items)):
        meta[side] = {"cat": list(e.cat), "multi": list(e.multi), "num": list(e.num), "sizes": e.sizes}
        for i, name in enumerate(e.cat):
            arrays[f"{side}.cat.{i}"] = e.cat[name]
        for i, (values, offsets) in enumerate(e.multi.values()):
            arrays[f"{side}.multi.{i}.values"], arrays[f"{side}.multi.{i}.offsets"] = values, offsets
        for i, name in enumerate(e.num):
            arrays[f"{side}.num.{i}"] = e.num[name]
    if t.covisit is not None:
        arrays["covisit.keys"], arrays["covisit.counts"] = t.covisit.keys, t.covisit.counts
    return {"tables.npz": npz_bytes(arrays), "tables.json": json_bytes(meta)}


def load_tables(bundle: Bundle, comp: Component) -> FeatureTables:
    meta, a = bundle.json(comp, "tables.json"), bundle.arrays(comp, "tables.npz")
    try:
        sides = {}
        for side in ("users", "items"):
            m = meta[side]
            sides[side] = EntityTable(
                cat={n: a[f"{side}.cat.{i}"] for i, n in enumerate(m["cat"])},
                multi={n: (a[f"{side}.multi.{i}.values"], a[f"{side}.multi.{i}.offsets"]) for i, n in enumerate(m["multi"])},
                num={n: a[f"{side}.num.{i}"] for i, n in enumerate(m["num"])},
                sizes=dict(m["sizes"]),
            )  # fmt: skip
        covisit = CoVisitation(a["covisit.keys"], a["covisit.counts"], meta["num_items"]) if meta["covisit"] else None
        return FeatureTables(sides["users"], sides["items"], a["category"], meta["num_items"], meta["num_users"],
                             meta["has_time"], meta["num_event_types"], covisit)  # fmt: skip
    except KeyError as e:
        raise BundleError(f"{comp.path}/tables.npz / tables.json: missing key {e}") from None


# ---- two-tower ---------------------------------------------------------------------------------------


def load_two_tower(
    bundle: Bundle, comp: Component, data: SequenceData | None = None, use_ann: bool = True
) -> TwoTowerRetriever:
    """data: the sequences the queries index into (default: the bundle's own histories)."""
    feat = RankingFeaturizer(
        load_tables(bundle, comp), data or bundle.sequences(), FeatureConfig(**comp.config["features"])
    )
    cfg = dict(comp.config["model"])
    cfg.pop("kind")
    us, its = FeatureSchema.from_dict(cfg.pop("user_schema")), FeatureSchema.from_dict(cfg.pop("item_schema"))
    _check_schema(asdict(us), feat.user_schema(), comp)
    _check_schema(asdict(its), feat.item_schema(), comp)
    model = TwoTower(TwoTowerConfig(us, its, **cfg))
    model.load_state_dict(bundle.state_dict(comp))
    index = load_index(comp.path / "index") if use_ann and "index/index.json" in comp.files else None
    return TwoTowerRetriever(model, feat, index if isinstance(index, FaissIndex) else None, name=comp.name)


def load_retriever(
    bundle: Bundle | str | Path, name: str | None = None, data: SequenceData | None = None, use_ann: bool = True
) -> Retriever:
    """A retrieval component (two-tower, HSTU, SASRec) of a bundle; its first one unless `name` says which.
    data: the sequences its queries index into (default: the bundle's own histories)."""
    b = open_bundle(bundle)
    comp = b.component(name, role="retrieval")
    if comp.kind == "two-tower":
        return load_two_tower(b, comp, data, use_ann)
    return HSTURetriever(load_sequential(b, comp.name), data or b.sequences(), name=comp.name)


def _context_bundle(run: str | Path, ctx: Context) -> Bundle:
    """A bundle trained on ctx's dataset (same data fingerprint), else a ValueError."""
    b = Bundle.open(run)
    if b.data.get("fingerprint") != ctx.fingerprint:
        raise ValueError(f"{run} was trained on {b.data.get('name')!r} ({b.data.get('summary')}), not on {ctx.name!r}")
    return b


def retrieval_stage(runs: list[str], ctx: Context, k: int = 200, use_ann: bool = True) -> RetrievalStage:
    """The first retriever of each bundle in `runs` (trained on ctx's dataset), over ctx's sequences."""
    retrievers = [load_retriever(_context_bundle(r, ctx), data=ctx.ds.sequences, use_ann=use_ann) for r in runs]
    names = [r.name for r in retrievers]
    for i, r in enumerate(retrievers):  # two runs of one kind get distinct feature names
        if names.count(r.name) > 1:
            r.name = f"{r.name}{i}"
    return RetrievalStage(retrievers, k)


def bundle_retrieval_stage(
    bundle: Bundle | str | Path, data: SequenceData | None = None, k: int = 200, use_ann: bool = True
) -> RetrievalStage:
    """The retrievers a ranker bundle's ranking component was trained on, from the same bundle."""
    b = open_bundle(bundle)
    names = b.component(role="ranking").config["retriever_names"]
    return RetrievalStage([load_retriever(b, n, data, use_ann) for n in names], k)


# ---- rankers -----------------------------------------------------------------------------------------


def user_subset(users: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, limit, replace=False))


def load_ranker(
    bundle: Bundle | str | Path, stage: RetrievalStage, data: SequenceData | None = None, name: str | None = None
) -> Ranker:
    """A ranking component (dlrm | wide-deep | lr) over `stage`'s candidates and retrieval features.
    data: the sequences the rows index into (default: the bundle's own histories)."""
    b = open_bundle(bundle)
    comp = b.component(name, role="ranking")
    if comp.kind not in RANKERS:
        raise BundleError(f"{b.path}/manifest.json: components.{comp.name}.kind {comp.kind!r} is not one of {RANKERS}")
    meta = comp.config
    fcfg = FeatureConfig(**meta["features"])
    if fcfg.extra_dense != stage.feature_names():
        raise ValueError(
            f"{b.path} was trained with retrieval features {fcfg.extra_dense}; the given retrieval runs give "
            f"{stage.feature_names()} (pass the same kinds of runs, in the same order, as {meta['retrieval']})"
        )
    feat = RankingFeaturizer(load_tables(b, comp), data or b.sequences(), fcfg)
    cfg = dict(meta["model"])
    _check_schema(cfg["schema"], feat.schema(), comp)
    kw = {k: v for k, v in cfg.items() if k not in ("kind", "schema")}
    model = build_ranker(comp.kind, feat.schema(), **kw)
    model.load_state_dict(b.state_dict(comp))
    return Ranker(model.eval(), DenseScaler(**meta["scaler"]), feat)


def pipeline_evaluate(
    ctx: Context, retrieval: list[str], ranker_run: str | None, console: Console, k: int = 200,
    cap: int = 3, max_users: int | None = None, seed: int = 0, use_ann: bool = True, which: str = "test",
) -> dict[str, dict[str, float]]:  # fmt: skip
    stage = retrieval_stage(retrieval, ctx, k, use_ann)
    ranker = load_ranker(_context_bundle(ranker_run, ctx), stage, ctx.ds.sequences) if ranker_run else None
    users = user_subset(ctx.split.eval_users, max_users, seed)
    with progress_bar(console) as prog:
        return evaluate_pipeline(stage, ctx.split, which, users, ranker, ctx.tables.category, 10, cap, progress=prog)


__all__ = [
    "Context",
    "bundle_retrieval_stage",
    "load_ranker",
    "load_retriever",
    "load_tables",
    "pipeline_evaluate",
]
