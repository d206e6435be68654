import json
import shutil

import pytest
import torch

from genrec.bundle import Bundle, BundleError, load_sequential
from genrec.data.datasets import load_synthetic
from genrec.data.sequences import leave_one_out
from genrec.evaluation.evaluate import evaluate_model
from genrec.models.ensemble import Ensemble
from genrec.serving.recommender import Recommender
from genrec.training.ensemble import ensemble_runs
from genrec.training.trainer import TrainConfig, refit_config, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short runs of different models on the same shop, and one on another shop."""
    shop = load_synthetic("small", seed=1)
    root = tmp_path_factory.mktemp("ens")
    base = dict(dataset="synthetic:small", epochs=4, dim=32, batch_size=128, seed=3, threads=2, patience=100,
                loss="full")  # fmt: skip
    a = train(TrainConfig(model="hstu", out=str(root / "a"), max_len=30, **base), dataset=shop).run_dir
    b = train(TrainConfig(model="sasrec", out=str(root / "b"), max_len=12, temperature=0.1, **base), dataset=shop)
    other = load_synthetic("tiny", seed=1)
    c = train(TrainConfig(**{**base, "model": "hstu", "out": str(root / "c"), "max_len": 20,
                             "dataset": "synthetic:tiny"}), dataset=other)  # fmt: skip
    return root, a, b.run_dir, c.run_dir


def test_an_ensemble_of_runs_is_chosen_on_validation_and_ships_as_one_bundle(runs, tmp_path) -> None:
    root, a, b, _ = runs
    out = tmp_path / "ens"
    res = ensemble_runs([a, b], out)
    bundle = Bundle.open(out)
    comp = bundle.component("ensemble")
    record = comp.config["ensemble"]
    steps = record["steps"]
    assert all(x["NDCG@10"] < y["NDCG@10"] for x, y in zip(steps, steps[1:], strict=False))  # each step raised it
    assert steps[0]["NDCG@10"] == pytest.approx(max(record["candidates"].values()), abs=1e-5)  # the best single run
    model = load_sequential(out)
    if len(record["members"]) == 1:  # no mix beat the best run on validation: the bundle holds that run alone
        pytest.skip("the shop's two runs did not ensemble")
    assert isinstance(model, Ensemble) and abs(sum(model.config.weights) - 1) < 1e-9
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "ensemble" and metrics["fit"] == "train" and metrics["metrics"] == res.test
    # the ensemble's own validation is at least its best member's (the selection only adds what raises it)
    split = leave_one_out(bundle.sequences())
    singles = [evaluate_model(load_sequential(r), split, "valid")["NDCG@10"] for r in (a, b)]
    assert res.best_valid["NDCG@10"] >= max(singles) - 2e-3  # the search ranks fp16 scores
    # self-contained: a copy elsewhere, the member runs gone, recommends like the original
    moved = tmp_path / "copy"
    shutil.copytree(out, moved)
    rec = Recommender.from_bundle(moved)
    hist = bundle.sequences().user_items(0)
    top = rec.recommend([rec.item_vocab.raw(int(i)) for i in hist], k=5)
    scores = model.score_all(model.user_states(torch.from_numpy(hist[-model.config.max_len :]),
                                               torch.tensor([0, min(len(hist), model.config.max_len)])))[0]  # fmt: skip
    scores[0] = float("-inf")
    scores[torch.from_numpy(hist)] = float("-inf")
    assert [r.item_id for r in top] == [rec.item_vocab.raw(int(i)) for i in torch.topk(scores, 5).indices]
    with pytest.raises(ValueError, match="ensemble"):
        refit_config(moved, tmp_path / "refit")


def test_ensemble_runs_refuses_runs_it_cannot_mix(runs, tmp_path) -> None:
    root, a, b, c = runs
    with pytest.raises(ValueError, match="other data"):
        ensemble_runs([a, c], tmp_path / "x")
    with pytest.raises(ValueError, match="at least two"):
        ensemble_runs([a], tmp_path / "y")
    with pytest.raises(BundleError, match="no such bundle"):
        ensemble_runs([a, root / "missing"], tmp_path / "z")
    refit = train(refit_config(b, tmp_path / "b-refit", threads=2), dataset=load_synthetic("small", seed=1))
    with pytest.raises(ValueError, match="refit"):
        ensemble_runs([a, refit.run_dir], tmp_path / "w")


def test_a_served_ensemble_answers_the_offline_pipelines_top_k(runs, tmp_path) -> None:
    """`genrec serve BUNDLE` and `genrec pipeline evaluate BUNDLE` run the same stages on an ensemble bundle."""
    from genrec.serving.tests.test_served_pipeline import assert_served_equals_offline

    _, a, b, _ = runs
    ensemble_runs([a, b], tmp_path / "ens", max_members=2)
    assert isinstance(load_sequential(tmp_path / "ens"), Ensemble)
    assert_served_equals_offline(tmp_path / "ens", tmp_path, users=15)


def test_an_ensemble_bundle_whose_members_disagree_is_a_clear_error(runs, tmp_path) -> None:
    _, a, b, _ = runs
    out = tmp_path / "ens"
    ensemble_runs([a, b], out, max_members=2)
    manifest = json.loads((out / "manifest.json").read_text())
    model_cfg = manifest["components"]["ensemble"]["config"]["model"]
    if len(model_cfg["members"]) < 2:
        pytest.skip("one member chosen")
    model_cfg["members"][1]["num_items"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"components/ensemble.*different catalogs"):
        load_sequential(out)
