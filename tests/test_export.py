"""Batch export (`genrec recommend RUN --all-users`): the same lists as per-user Recommender.recommend."""

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.datasets import load_synthetic
from genrec.export import recommend_all, top_k_batches
from genrec.models import build_model
from genrec.serving.recommender import Recommender


@pytest.fixture(scope="module")
def data():
    return load_synthetic("tiny", seed=3).sequences


@pytest.mark.parametrize("kind", ["hstu", "sasrec"])
def test_export_equals_per_user_recommend(data, kind) -> None:
    torch.manual_seed(0)
    # max_len below the longest histories: the export must read the same last-max_len window as recommend
    model = build_model(kind, data.num_items, max_len=8, dim=16).eval()
    lengths = np.diff(data.offsets)
    assert lengths.max() > 8 and lengths.min() < 8
    k = 20
    df = recommend_all(model, data, k, batch_size=37)  # batches that mix lengths and do not divide the users
    assert df.columns == ["user_id", "rank", "item_id", "score"]
    assert df["user_id"].n_unique() == data.num_users
    rec = Recommender(model, data.item_vocab, data.user_vocab)
    rng = np.random.default_rng(0)
    for u in [*rng.choice(data.num_users, 25, replace=False), int(lengths.argmax()), int(lengths.argmin())]:
        user = data.user_vocab.ids[u]
        history = [data.item_vocab.raw(int(i)) for i in data.user_items(u)]
        ts = data.timestamps[data.offsets[u] : data.offsets[u + 1]].tolist()
        expected = rec.recommend(history, k, ts)
        got = df.filter(pl.col("user_id") == user).sort("rank")
        assert got["rank"].to_list() == list(range(1, k + 1))
        scores = got["score"].to_numpy()
        np.testing.assert_allclose(scores, [r.score for r in expected], rtol=1e-4, atol=1e-4)
        for i, (a, b) in enumerate(zip(got["item_id"].to_list(), [r.item_id for r in expected], strict=True)):
            assert a == b or abs(scores[i] - expected[i].score) < 1e-4  # only (near-)tied items may swap
        assert not set(got["item_id"].to_list()) & set(history)


def test_seen_items_never_appear_even_when_few_are_left(data) -> None:
    model = build_model("hstu", data.num_items, max_len=8, dim=16).eval()
    k = data.num_items  # more than any user has left unseen
    for users, items, scores in top_k_batches(model, data, k, batch_size=64):
        for u, row, sc in zip(users, items.numpy(), scores.numpy(), strict=True):
            seen = set(data.user_items(u).tolist())
            finite = row[np.isfinite(sc)]
            assert not seen & set(finite.tolist()) and 0 not in finite
            assert len(finite) == data.num_items - len(seen)
    df = recommend_all(model, data, k)
    per_user = df.group_by("user_id").len()
    assert per_user["len"].max() < k  # every user has seen something: never k rows


def test_cli_all_users_to_csv_and_parquet(tmp_path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(
        app,
        ["train", "--model", "sasrec", "--dataset", "synthetic:tiny", "--out", str(run), "--epochs", "1",
         "--max-len", "20", "--dim", "16", "--threads", "1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for name in ("recs.csv", "recs.parquet"):
        res = runner.invoke(app, ["recommend", str(run), "--all-users", "-k", "7", "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
    csv = pl.read_csv(tmp_path / "recs.csv", schema_overrides={"user_id": pl.String, "item_id": pl.String})
    parquet = pl.read_parquet(tmp_path / "recs.parquet")
    assert csv["user_id"].n_unique() == load_synthetic("tiny", seed=42).sequences.num_users
    assert csv.shape == parquet.shape and csv["item_id"].to_list() == parquet["item_id"].to_list()
    res = runner.invoke(app, ["recommend", str(run), "--all-users", "--out", str(tmp_path / "recs.xlsx")])
    assert res.exit_code == 2 and ".parquet or .csv" in res.output
    res = runner.invoke(app, ["recommend", str(run), "--all-users"])
    assert res.exit_code == 2 and "--out" in res.output
