import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from genrec.bundle import Bundle
from genrec.data.datasets import load_synthetic
from genrec.data.sequences import leave_one_out
from genrec.pipeline.core import Candidates, RequestContext, RerankRules
from genrec.pipeline.runs import Context, pipeline_evaluate, runs_pipeline
from genrec.pipeline.stages import capped_order
from genrec.stack.train import train_ranking_model
from genrec.training.trainer import TrainConfig, train


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_cap_pages_are_full_and_capped_while_other_items_remain(data):
    n = data.draw(st.integers(1, 60))
    category = np.array(data.draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)), np.int64)
    k, cap = data.draw(st.integers(1, 10)), data.draw(st.integers(1, 3))
    order = np.arange(n)
    page = capped_order(order, category, k, cap)
    assert len(page) == min(k, n) and len(set(page.tolist())) == len(page)  # never short: back-filled
    capped_out = sum(max(0, int(np.sum(category == c)) - cap) for c in (0, 1, 2, 3))
    if n - capped_out >= k:  # enough items under the cap: the cap holds
        assert np.bincount(category[page][category[page] >= 0], minlength=4).max(initial=0) <= cap
    # the back-filled items come after every item under the cap, in score order
    counts: dict[int, int] = {}
    within = []
    for i in page.tolist():
        c = int(category[i])
        counts[c] = counts.get(c, 0) + 1
        within.append(c < 0 or counts[c] <= cap)
    assert within == sorted(within, reverse=True)


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
    assert [(r["stage"], r["name"]) for r in res] == [
        ("retrieval", "hstu"),
        ("retrieval", "two-tower"),
        ("ranking", "dlrm"),
        ("rerank", "rerank"),
    ]
    assert res[-1]["components"] == ["hstu", "two-tower", "dlrm"]
    assert all(r["metrics"]["users"] == 80 for r in res)
    fused = res[1]["metrics"]
    assert "recall@50" in fused and 0 < fused["recall@50"] <= 1
    assert fused["HR@10"] <= fused["recall@50"]

    # final pages: k unique items, none seen, at most `cap` per category; the ranker only reorders retrieval
    pipe = runs_pipeline(ctx, runs, str(tmp_path / "dlrm"), k=50, cap=2)
    u, e, _ = ctx.split.eval_inputs("test")
    ctxs = pipe.offline_contexts(ctx.split.data, u[:30], e[:30])
    after = pipe.run_batch(ctxs)
    data = ctx.split.data
    for j, (user, end) in enumerate(zip(u[:30], e[:30], strict=True)):
        page = after[-1][j].items.numpy()
        assert set(after[2][j].items.tolist()) == set(after[1][j].items.tolist())
        assert len(page) == 10 and len(set(page.tolist())) == 10
        assert not set(page.tolist()) & set(data.items[data.offsets[user] : end].tolist())
        assert np.bincount(ctx.tables.category[page])[1:].max() <= 2
    # batched (offline) and one-request-at-a-time (served) runs of the same stage objects agree
    for j in range(5):
        one = pipe.run(pipe.offline_contexts(ctx.split.data, u[j : j + 1], e[j : j + 1])[0])
        assert one.items.tolist() == after[-1][j].items.tolist()
        torch.testing.assert_close(one.scores, after[-1][j].scores)


def test_rerank_back_fills_the_capped_page():
    from genrec.data.sequences import Vocab
    from genrec.pipeline.core import Catalog, History
    from genrec.pipeline.stages import Rerank

    vocab = Vocab([f"i{j}" for j in range(1, 9)])
    category = np.array([-1, 0, 0, 0, 0, 0, 1, 2, -1])  # 5 items of category 0
    rr = Rerank(RerankRules(max_per_category=2), Catalog(None, vocab, category), vocab)
    allowed = torch.ones(9, dtype=torch.bool)
    allowed[0] = False
    hist = History(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64), 0)
    ctx = RequestContext("u", -1, 6, hist, allowed)
    items = torch.arange(1, 9)
    cands = Candidates(items, -items.float(), ["r"] * 8, [0] * 8)  # best first: 1, 2, ..., 8
    page = rr(ctx, cands).items.tolist()
    assert page == [1, 2, 6, 7, 8, 3]  # two of category 0, then the others, then the best capped-out one


def test_bundle_pipeline_runs_its_declared_stages(tmp_path):
    """`genrec pipeline evaluate BUNDLE`: the stage list of the manifest, built from the bundle alone."""
    from genrec.pipeline.pipeline import Pipeline, evaluate

    console = Console(quiet=True)
    ds = load_synthetic("tiny", seed=0)
    train(TrainConfig(model="sasrec", dataset="synthetic:tiny", out=str(tmp_path / "sasrec"), epochs=1, max_len=20,
                      threads=1), dataset=ds, console=console)  # fmt: skip
    pipe = Pipeline.from_bundle(Bundle.open(tmp_path / "sasrec"))
    assert [s.name for s in pipe.stages] == ["sasrec", "popular", "rerank"]
    records = evaluate(pipe, "test", max_users=50)
    assert [r["stage"] for r in records] == ["retrieval", "retrieval", "rerank"]
    assert records[0]["metrics"]["users"] == 50 and 0 <= records[-1]["metrics"]["NDCG@10"] <= 1

    # the retrieve stage of a one-model bundle is `genrec evaluate` of that model (full catalog, seen items
    # excluded) once the pipeline's own out-of-stock rule, which `genrec evaluate` does not have, is off
    bundle = Bundle.open(tmp_path / "sasrec")
    specs = [{**s, "exclude_out_of_stock": False} if s["stage"] == "rerank" else s for s in bundle.pipeline]
    full = evaluate(Pipeline.from_bundle(bundle, specs), "test")[0]["metrics"]
    test = bundle.component().metrics["metrics"]
    assert full["users"] == len(leave_one_out(bundle.sequences()).eval_users)
    assert full["HR@10"] == pytest.approx(test["HR@10"]) and full["NDCG@10"] == pytest.approx(test["NDCG@10"])
    assert full["recall@200"] == pytest.approx(test["HR@200"])

    # the command: the same records as JSON, the table on stdout
    import json

    from typer.testing import CliRunner

    from genrec.stack.cli import pipeline_app

    out = tmp_path / "records.json"
    res = CliRunner().invoke(pipeline_app, ["evaluate", str(tmp_path / "sasrec"), "--split", "test",
                                            "--max-users", "50", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text()) == records and "NDCG@10" in res.output
    bad = CliRunner().invoke(pipeline_app, ["evaluate", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "error" in bad.output


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(1, 30), min_size=0, max_size=12, unique=True), min_size=2, max_size=3))
def test_rrf_fusion_matches_its_definition(lists):
    """fuse(): sum of 1 / (60 + rank) over the lists, best first, ties by item index, labelled by the first
    list (in stage order) that has the item, cut to the largest k."""
    from genrec.pipeline.core import History, Retrieved
    from genrec.pipeline.stages import RRF_K, fuse

    e = np.zeros(0, np.int64)
    ctx = RequestContext(
        "u", 0, 10, History(e, e, np.zeros(0, bool), e, num_dataset=0), torch.ones(31, dtype=torch.bool), {}
    )
    for j, items in enumerate(lists):
        ctx.retrieved[f"r{j}"] = Retrieved(torch.zeros(2), torch.zeros(31, 2), np.array(items, np.int64), 8)
    out = fuse(ctx, Candidates(), f"r{len(lists) - 1}", torch.zeros(0))
    ref: dict[int, float] = {}
    label: dict[int, str] = {}
    for j, items in enumerate(lists):
        for rank, item in enumerate(items, 1):
            ref[item] = ref.get(item, 0.0) + 1.0 / (RRF_K + rank)
            label.setdefault(item, f"r{j}")
    want = sorted(ref, key=lambda i: (-ref[i], i))[:8]
    assert out.items.tolist() == want
    assert out.stages == [label[i] for i in want]
    np.testing.assert_allclose(out.scores.numpy(), [ref[i] for i in want], rtol=1e-6)


def test_auto_index_is_exact_for_small_catalogs_and_faiss_for_large():
    from genrec.pipeline.stages import EXACT_MAX_ITEMS, resolve_index

    assert resolve_index("auto", 3416) == "exact"
    assert resolve_index("auto", EXACT_MAX_ITEMS + 1) == "faiss"
    assert resolve_index("faiss", 10) == "faiss" and resolve_index("exact", 10**7) == "exact"
    with pytest.raises(ValueError, match="'exact', 'faiss' or 'auto'"):
        resolve_index("hnsw", 10)
    from genrec.pipeline.stages import INDEX_KINDS
    from genrec.stack import config

    assert config.INDEX_KINDS == INDEX_KINDS  # the config check accepts what the stage takes


def test_ranker_lists_need_a_retrieved_target_or_say_so():
    """Retrievers that find none of the targets (too little training, k too small) leave the ranker nothing
    to learn from: a clear error, not an IndexError from joining no rows."""
    from genrec.pipeline.stages import training_rows

    class FindsNothing:
        k, name = 10, "nothing"

        def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
            return cands

    split = leave_one_out(load_synthetic("tiny").sequences)
    with pytest.raises(ValueError, match="found none of the valid targets of 20 users"):
        training_rows([FindsNothing()], None, split, "valid", split.eval_users[:20])
