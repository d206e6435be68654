"""Every trainer family writes a bundle that loads with the dataset gone (its loaders never read the data)."""

from __future__ import annotations

import numpy as np
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
    from genrec.pipeline.train import train_ranking_model
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
    from genrec.pipeline.runs import load_retriever, retrieval_stage

    b = Bundle.open(bundles["root"] / "tt")
    assert "index/index.json" in b.component("two-tower").files and "tables.npz" in b.component("two-tower").files
    alone = load_retriever(b)
    split = leave_one_out(b.sequences())
    u, e, _ = split.eval_inputs("test")
    seen = [np.zeros(0, np.int64)] * 20
    got = alone.top(alone.query(u[:20], e[:20]), seen, 10)
    ref = retrieval_stage([bundles["runs"][1]], bundles["ctx"]).retrievers[0]
    np.testing.assert_array_equal(got, ref.top(ref.query(u[:20], e[:20]), seen, 10))
    torch.testing.assert_close(alone.table, ref.table)


def test_ranker_bundle_carries_its_retrievers_and_ranks_as_with_the_dataset(bundles, no_data) -> None:
    from genrec.pipeline.runs import bundle_retrieval_stage, load_ranker, retrieval_stage
    from genrec.pipeline.stages import recommend_pages

    b = Bundle.open(bundles["root"] / "lr")
    assert {n: c.role for n, c in b.components.items()} == {"hstu": "retrieval", "two-tower": "retrieval",
                                                             "lr": "ranking"}  # fmt: skip
    stage = bundle_retrieval_stage(b, k=30)
    ranker = load_ranker(b, stage)
    split = leave_one_out(b.sequences())
    u, e, _ = split.eval_inputs("test")
    pages = recommend_pages(stage, ranker, split, u[:15], e[:15], ranker.feat.t.category, k=10, cap=3)
    ctx = bundles["ctx"]
    ref_stage = retrieval_stage(bundles["runs"], ctx, 30)
    ref = load_ranker(b, ref_stage, ctx.ds.sequences)
    want = recommend_pages(ref_stage, ref, ctx.split, u[:15], e[:15], ctx.tables.category, k=10, cap=3)
    for a, w in zip(pages, want, strict=True):
        np.testing.assert_array_equal(a, w)
    assert all(len(p) == 10 for p in pages)


def test_hstu_ranker_bundle(bundles, no_data) -> None:
    b = Bundle.open(bundles["root"] / "genrank")
    model, meta = load_hstu_ranker(b)
    assert b.component().kind == "hstu-ranker" and b.item_vocab is None  # trained on its own action data
    assert meta["tasks"] and len(meta["item_ids"]) == model.config.num_items and "view/auc" in meta["test"]
