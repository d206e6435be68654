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
    load_hstu_ranker,
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
from genrec.pipeline.pipeline import Pipeline, evaluate
from genrec.pipeline.stages import (
    Ranker,
    SequenceRetrieve,
    TwoTowerParts,
    TwoTowerRetrieve,
    retrieval_feature_names,
)
from genrec.ranking.inference import RANKERS, DenseScaler, build_ranker

Retriever = SequenceRetrieve | TwoTowerRetrieve


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
) -> TwoTowerParts:
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
    return TwoTowerParts(model, feat, index if isinstance(index, FaissIndex) else None)


def load_retriever(
    bundle: Bundle | str | Path, name: str | None = None, data: SequenceData | None = None, use_ann: bool = True,
    k: int = 200,
) -> Retriever:  # fmt: skip
    """A retrieval component (two-tower, HSTU, SASRec) of a bundle as a retrieval stage; its first one unless
    `name` says which. data: the sequences its featurizer reads (default: the bundle's own histories)."""
    b = open_bundle(bundle)
    comp = b.component(name, role="retrieval")
    if comp.kind == "two-tower":
        return TwoTowerRetrieve(load_two_tower(b, comp, data, use_ann), k, comp.name, "faiss" if use_ann else "exact")
    seq = data or b.sequences()
    return SequenceRetrieve(load_sequential(b, comp.name), k, comp.name, uses_timestamps=seq.timestamps is not None)


def load_component(bundle: Bundle, name: str, data: SequenceData | None = None) -> Any:
    """A bundle component as the pipeline's stage factories take it: a SequentialModel (sasrec, hstu), a
    TwoTowerParts, a Ranker (dlrm, wide-deep, lr) or (HSTURanker, its config) for an hstu-ranker."""
    comp = bundle.component(name)
    if comp.kind == "two-tower":
        return load_two_tower(bundle, comp, data)
    if comp.kind in RANKERS:
        return load_ranker(bundle, comp.config["retriever_names"], data, name)
    if comp.kind == "hstu-ranker":
        return load_hstu_ranker(bundle, name)
    if comp.role == "retrieval":
        return load_sequential(bundle, name)
    raise BundleError(f"{bundle.path}/manifest.json: components.{name}.kind {comp.kind!r} has no pipeline loader")


def bundle_pipeline(bundle: Bundle | str | Path, specs: list[dict] | None = None) -> Pipeline:
    """The Pipeline a bundle declares (manifest["pipeline"], or `specs`), its components loaded from it."""
    b = open_bundle(bundle)
    seq = b.sequences()
    specs = specs if specs is not None else b.pipeline
    used = list(dict.fromkeys(s["component"] for s in specs if "component" in s))
    comps = {n: load_component(b, n, seq) for n in used}
    catalog = b.catalog()
    return Pipeline(b.item_vocab, seq, comps, specs, catalog=catalog, users=b.users(),
                    category=feature_category(catalog, comps), name=str(b.path))  # fmt: skip


def feature_category(catalog: Any, components: dict[str, Any]) -> np.ndarray | None:
    """The re-rank's category when the catalog has none (ML-1M: the first genre): the feature tables' category
    of a loaded ranker / two-tower component (-1 = none), else None (the catalog's own column)."""
    if catalog is not None and "category" in catalog.columns:
        return None
    for c in components.values():
        feat = getattr(c, "feat", None)
        if feat is not None and feat.t.category.max() > 0:
            return feat.t.category - 1
    return None


def _context_bundle(run: str | Path, ctx: Context) -> Bundle:
    """A bundle trained on ctx's dataset (same data fingerprint), else a ValueError."""
    b = Bundle.open(run)
    if b.data.get("fingerprint") != ctx.fingerprint:
        raise ValueError(f"{run} was trained on {b.data.get('name')!r} ({b.data.get('summary')}), not on {ctx.name!r}")
    return b


def retrieval_stage(runs: list[str], ctx: Context, k: int = 200, use_ann: bool = True) -> list[Retriever]:
    """The first retriever of each bundle in `runs` (trained on ctx's dataset) as retrieval stage objects."""
    retrievers = [load_retriever(_context_bundle(r, ctx), data=ctx.ds.sequences, use_ann=use_ann, k=k) for r in runs]
    names = [r.name for r in retrievers]
    for i, r in enumerate(retrievers):  # two runs of one kind get distinct feature names
        if names.count(r.name) > 1:
            r.name = f"{r.name}{i}"
    return retrievers


def context_pipeline(ctx: Context, components: dict[str, Any], specs: list[dict]) -> Pipeline:
    """A Pipeline over ctx's dataset (its catalog, user attributes, and the feature tables' category)."""
    return Pipeline.from_parts(ctx.ds.sequences, components, specs, catalog=ctx.ds.catalog,
                               users=getattr(ctx.ds, "users", None), category=ctx.tables.category - 1,
                               name=ctx.name)  # fmt: skip


# ---- rankers -----------------------------------------------------------------------------------------


def ranker_holdout_users(bundle: Bundle) -> np.ndarray | None:
    """Dataset user indices whose validation targets the bundle's CTR ranker never trained on (it learns on
    the other users' validation targets), or None when the bundle has no such ranker. Older bundles without
    the stored list get it rebuilt from the ranker's seed and setup, as train_ranker drew it."""
    try:
        comp = bundle.component(role="ranking")
    except (KeyError, ValueError, BundleError):
        return None
    cfg = comp.config
    if "setup" not in cfg or "train" not in cfg:
        return None
    if "holdout_users" in cfg:
        return np.asarray(cfg["holdout_users"], np.int64)
    from genrec.data.sequences import leave_one_out

    users, hold = ranker_users(leave_one_out(bundle.sequences()).eval_users, cfg["setup"], int(cfg["train"].get("seed", 0)))  # fmt: skip
    return users[hold]


def ranker_users(eval_users: np.ndarray, setup: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The users whose validation targets a CTR ranker learns on (max_users of them) and the held-out mask
    (a `holdout` share, default 0.1) over them: the one draw training and ranker_holdout_users share."""
    users = user_subset(eval_users, setup.get("max_users"), seed)
    return users, np.random.default_rng(seed).random(len(users)) < setup.get("holdout", 0.1)


def user_subset(users: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, limit, replace=False))


def load_ranker(
    bundle: Bundle | str | Path, retrievers: list[str], data: SequenceData | None = None, name: str | None = None
) -> Ranker:
    """A ranking component (dlrm | wide-deep | lr) over the candidates and retrieval features of the
    retrieval stages named `retrievers`, in order. data: the sequences its featurizer reads (default: the
    bundle's own histories)."""
    b = open_bundle(bundle)
    comp = b.component(name, role="ranking")
    if comp.kind not in RANKERS:
        raise BundleError(f"{b.path}/manifest.json: components.{comp.name}.kind {comp.kind!r} is not one of {RANKERS}")
    meta = comp.config
    fcfg = FeatureConfig(**meta["features"])
    if fcfg.extra_dense != retrieval_feature_names(retrievers):
        raise ValueError(
            f"{b.path} was trained with retrieval features {fcfg.extra_dense}; the given retrieval runs give "
            f"{retrieval_feature_names(retrievers)} (pass the same kinds of runs, in the same order, as {meta['retrieval']})"
        )
    feat = RankingFeaturizer(load_tables(b, comp), data or b.sequences(), fcfg)
    cfg = dict(meta["model"])
    _check_schema(cfg["schema"], feat.schema(), comp)
    kw = {k: v for k, v in cfg.items() if k not in ("kind", "schema")}
    model = build_ranker(comp.kind, feat.schema(), **kw)
    model.load_state_dict(b.state_dict(comp))
    return Ranker(model.eval(), DenseScaler(**meta["scaler"]), feat)


def runs_pipeline(ctx: Context, retrieval: list[str], ranker_run: str | None, k: int = 200, cap: int | None = 3,
                  use_ann: bool = True) -> Pipeline:  # fmt: skip
    """Retrieval bundles (fused) -> the ranker bundle -> re-rank (seen excluded, at most `cap` per category)."""
    comps: dict[str, Any] = {}
    for r in retrieval_stage(retrieval, ctx, k, use_ann):
        comps[r.name] = TwoTowerParts(r.model, r.feat, r.index) if isinstance(r, TwoTowerRetrieve) else r.model
    specs: list[dict] = [{"stage": "retrieve", "component": n, "k": k} for n in comps]
    if ranker_run:
        b = _context_bundle(ranker_run, ctx)
        kind = b.component(role="ranking").kind
        comps[kind] = load_ranker(b, list(comps), ctx.ds.sequences)
        specs.append({"stage": "rank", "component": kind})
    specs.append({"stage": "rerank", "exclude_out_of_stock": False, "max_per_category": cap})
    return context_pipeline(ctx, comps, specs)


def pipeline_evaluate(
    ctx: Context, retrieval: list[str], ranker_run: str | None, console: Console, k: int = 200,
    cap: int = 3, max_users: int | None = None, seed: int = 0, use_ann: bool = True, which: str = "test",
) -> list[dict]:  # fmt: skip
    """Records {dataset, stage, name, components, metrics} after each stage of runs_pipeline."""
    pipe = runs_pipeline(ctx, retrieval, ranker_run, k, cap, use_ann)
    with progress_bar(console) as prog:
        return evaluate(pipe, which, max_users, seed, dataset=ctx.name, progress=prog)


__all__ = [
    "Context",
    "bundle_pipeline",
    "feature_category",
    "load_component",
    "load_ranker",
    "load_retriever",
    "load_tables",
    "pipeline_evaluate",
    "runs_pipeline",
]
