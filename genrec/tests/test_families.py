"""Every trainer family writes a bundle that loads with the dataset gone (its loaders never read the data)."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

from genrec.bundle import Bundle, load_hstu_ranker, load_sequential
from genrec.data.datasets import load_synthetic
from genrec.data.sequences import leave_one_out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from genrec.generative_ranking.run import RankerRunConfig, train_ranker
    from genrec.pipeline.runs import Context
    from genrec.stack.train import train_ranking_model
    from genrec.training.trainer import TrainConfig, train

    root, quiet = tmp_path_factory.mktemp("families"), Console(quiet=True)
    ds = load_synthetic("tiny", seed=0)
    train(TrainConfig(model="hstu", dataset="synthetic:tiny", out=str(root / "hstu"), epochs=1, max_len=20, dim=16,
                      threads=1), dataset=ds, console=quiet)  # fmt: skip
    ctx = Context("synthetic:tiny", ds=ds)
    train_ranking_model("two-tower", "synthetic:tiny", root / "tt", context=ctx, console=quiet, epochs=1, threads=1)
    runs = [str(root / "hstu"), str(root / "tt")]
    train_ranking_model("lr", "synthetic:tiny", root / "lr", context=ctx, console=quiet, epochs=1, retrieval=runs,
                        k=30, test_users=50, threads=1)  # fmt: skip
    cfg = RankerRunConfig(dataset="synthetic:tiny", max_len=20, dim=16, epochs=1, negatives=20, seed=42)
    train_ranker(cfg, root / "genrank", quiet=True)
    torch.set_num_threads(1)
    return {"root": root, "ctx": ctx, "runs": runs}


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to read or rebuild training data fails the test."""

    def boom(*_a, **_k):
        raise AssertionError("a bundle loader touched the dataset")

    import genrec.data.datasets
    import genrec.features.tables
    import genrec.generative_ranking.data
    import genrec.pipeline.runs

    for mod, name in ((genrec.data.datasets, "load_dataset"), (genrec.data.datasets, "load_synthetic"),
                      (genrec.features.tables, "build_feature_tables"), (genrec.pipeline.runs, "build_feature_tables"),
                      (genrec.generative_ranking.data, "load_action_dataset")):  # fmt: skip
        monkeypatch.setattr(mod, name, boom)


def test_sequence_model_bundle(bundles, no_data) -> None:
    b = Bundle.open(bundles["root"] / "hstu")
    model = load_sequential(b)
    assert (b.component().kind, b.component().role, model.training) == ("hstu", "retrieval", False)
    assert b.sequences().num_items == model.config.num_items


def test_two_tower_bundle_retrieves_as_with_the_dataset(bundles, no_data) -> None:
    from genrec.pipeline.core import run_batch
    from genrec.pipeline.runs import load_retriever, retrieval_stage
    from genrec.pipeline.stages import Candidates, dataset_contexts

    b = Bundle.open(bundles["root"] / "tt")
    assert "index/index.json" in b.component("two-tower").files and "tables.npz" in b.component("two-tower").files
    alone = load_retriever(b, k=10)
    split = leave_one_out(b.sequences())
    u, e, _ = split.eval_inputs("test")
    got = run_batch(alone, dataset_contexts(split.data, u[:20], e[:20]), [Candidates()] * 20)
    ref = retrieval_stage([bundles["runs"][1]], bundles["ctx"], k=10)[0]
    want = run_batch(ref, dataset_contexts(bundles["ctx"].split.data, u[:20], e[:20]), [Candidates()] * 20)
    for g, w in zip(got, want, strict=True):
        assert len(g) == 10 and g.items.tolist() == w.items.tolist()
    torch.testing.assert_close(alone.table, ref.table)


def test_ranker_bundle_carries_its_retrievers_and_ranks_as_with_the_dataset(bundles, no_data) -> None:
    from genrec.pipeline.runs import bundle_pipeline, runs_pipeline

    b = Bundle.open(bundles["root"] / "lr")
    assert {n: c.role for n, c in b.components.items()} == {"hstu": "retrieval", "two-tower": "retrieval",
                                                             "lr": "ranking"}  # fmt: skip
    specs = [{"stage": "retrieve", "component": "hstu", "k": 30}, {"stage": "retrieve", "component": "two-tower", "k": 30},
             {"stage": "rank", "component": "lr"}, {"stage": "rerank", "exclude_out_of_stock": False}]  # fmt: skip
    pipe = bundle_pipeline(b, specs)
    split = leave_one_out(b.sequences())
    u, e, _ = split.eval_inputs("test")
    pages = pipe.run_batch(pipe.offline_contexts(split.data, u[:15], e[:15]))[-1]
    ctx = bundles["ctx"]
    ref = runs_pipeline(ctx, bundles["runs"], str(bundles["root"] / "lr"), k=30, cap=None)
    want = ref.run_batch(ref.offline_contexts(ctx.split.data, u[:15], e[:15]))[-1]
    for a, w in zip(pages, want, strict=True):
        assert a.items.tolist() == w.items.tolist()
        torch.testing.assert_close(a.scores, w.scores)
    assert all(len(p) == 10 for p in pages)


def test_hstu_ranker_bundle(bundles, no_data) -> None:
    b = Bundle.open(bundles["root"] / "genrank")
    model, meta = load_hstu_ranker(b)
    assert b.component().kind == "hstu-ranker" and b.item_vocab is None  # trained on its own action data
    assert meta["tasks"] and len(meta["item_ids"]) == model.config.num_items and "view/auc" in meta["test"]
