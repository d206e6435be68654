import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from genrec.bundle import Bundle
from genrec.data.datasets import load_synthetic
from genrec.pipeline.runs import Context, load_ranker, pipeline_evaluate, retrieval_stage
from genrec.pipeline.stages import recommend_pages, rerank
from genrec.pipeline.train import train_ranking_model
from genrec.training.trainer import TrainConfig, train


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rerank_pages_are_unique_unseen_and_capped(data):
    n_items = data.draw(st.integers(5, 40))
    cands = np.array(data.draw(st.lists(st.integers(0, n_items), min_size=1, max_size=60)), np.int64)
    scores = np.array(data.draw(st.lists(st.floats(-5, 5), min_size=len(cands), max_size=len(cands))))
    category = np.array(data.draw(st.lists(st.integers(0, 3), min_size=n_items + 1, max_size=n_items + 1)))
    seen = np.array(data.draw(st.lists(st.integers(1, n_items), max_size=10)), np.int64)
    k, cap = data.draw(st.integers(1, 10)), data.draw(st.integers(1, 3))
    page = rerank(cands, scores, category, seen, k, cap)
    eligible = set(cands.tolist()) - set(seen.tolist()) - {0}
    assert len(page) == min(k, len(eligible)) and len(set(page.tolist())) == len(page)
    assert not set(page.tolist()) & (set(seen.tolist()) | {0})
    # the cap holds unless there were not enough other items to fill the page
    counts = np.bincount(category[page], minlength=4)[1:]
    capped_out = sum(max(0, int(np.sum(category[list(eligible)] == c)) - cap) for c in (1, 2, 3))
    if len(eligible) - capped_out >= k:
        assert counts.max(initial=0) <= cap


def test_pipeline_end_to_end_on_a_tiny_shop(tmp_path):
    console = Console(quiet=True)
    ds = load_synthetic("tiny", seed=0)
    train(TrainConfig(model="hstu", dataset="synthetic:tiny", out=str(tmp_path / "hstu"), epochs=2, max_len=20,
                      threads=1), dataset=ds, console=console)  # fmt: skip
    ctx = Context("synthetic:tiny", ds=ds)
    train_ranking_model("two-tower", "synthetic:tiny", tmp_path / "tt", context=ctx, console=console, epochs=2,
                        threads=1)  # fmt: skip
    runs = [str(tmp_path / "hstu"), str(tmp_path / "tt")]
    m = train_ranking_model("dlrm", "synthetic:tiny", tmp_path / "dlrm", context=ctx, console=console, epochs=2,
                            retrieval=",".join(runs), k=50, dim=8, test_users=100, threads=1)  # fmt: skip
    assert 0.0 <= m["test_rows"]["AUC"] <= 1.0
    assert (tmp_path / "dlrm" / "metrics.json").exists()
    b = Bundle.open(tmp_path / "dlrm")  # the ranker bundle carries the retrievers it was trained on
    assert {n: (c.kind, c.role) for n, c in b.components.items()} == {
        "hstu": ("hstu", "retrieval"), "two-tower": ("two-tower", "retrieval"), "dlrm": ("dlrm", "ranking"),
    }  # fmt: skip
    assert [s["stage"] for s in b.pipeline] == ["retrieve", "retrieve", "popular", "rank", "rerank"]
    res = pipeline_evaluate(ctx, runs, str(tmp_path / "dlrm"), console, k=50, max_users=80)
    assert set(res) == {"hstu-only", "two-tower-only", "retrieval", "ranking", "rerank"}
    assert res["retrieval"]["recall@50"] == res["ranking"]["recall@50"]  # the ranker only reorders
    # final pages: k unique items, none seen, at most `cap` per category
    stage = retrieval_stage(runs, ctx, 50)
    ranker = load_ranker(tmp_path / "dlrm", stage, ctx.ds.sequences)
    u, e, _ = ctx.split.eval_inputs("test")
    pages = recommend_pages(stage, ranker, ctx.split, u[:30], e[:30], ctx.tables.category, k=10, cap=2)
    data = ctx.split.data
    for user, end, page in zip(u[:30], e[:30], pages, strict=True):
        assert len(page) == 10 and len(set(page.tolist())) == 10
        assert not set(page.tolist()) & set(data.items[data.offsets[user] : end].tolist())
        assert np.bincount(ctx.tables.category[page])[1:].max() <= 2
