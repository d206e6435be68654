"""The HSTU ranking stage plugs into the pipeline by configuration and orders candidates by its head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genrec.bundle import load_hstu_ranker
from genrec.generative_ranking.run import RankerRunConfig, train_ranker
from genrec.serving.config import load_config
from genrec.serving.pipeline import ServingModel
from genrec.serving.store import StoredEvent


@pytest.fixture(scope="module")
def ranker_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("genrank") / "shop"
    cfg = RankerRunConfig(dataset="synthetic:tiny", max_len=20, dim=16, epochs=1, negatives=20, seed=42)
    train_ranker(cfg, out, quiet=True)
    torch.set_num_threads(1)
    return out


def bundle_with(tiny_run: Path, tmp_path: Path, ranker_run: Path, **opts) -> ServingModel:
    stages = [
        {"name": "retrieval", "num_candidates": 40},
        {
            "name": "hstu_rank",
            "factory": "genrec.serving.hstu_rank_stage:make_stage",
            "run_dir": str(ranker_run),
            **opts,
        },
        {"name": "rerank"},
    ]
    path = tmp_path / "serving.json"
    path.write_text(json.dumps({"stages": stages}))
    return ServingModel.load(tiny_run, load_config(path))


def test_hstu_rank_stage_reorders_by_its_head(tiny_run: Path, tmp_path: Path, ranker_run: Path) -> None:
    b = bundle_with(tiny_run, tmp_path, ranker_run, weights={"purchase": 1.0})
    assert [s.name for s in b.stages] == ["retrieval", "hstu_rank", "rerank"]
    user = b.users.ids[4]
    live = [StoredEvent("e1", user, b.vocab.raw(3), "purchase", 1_900_000_000, 1)]
    ctx = b.context(user, 10, live)
    out = b.run(ctx)
    assert len(out) == 10 and set(out.stages) == {"hstu_rank"}
    # the stage's scores are the ranker's purchase probabilities for the same history, best first
    stage = b.stages[1]
    items, actions, times = stage.history_tokens(ctx)
    assert int(actions[-1]) == 3  # the live purchase became a purchase token
    model, meta = load_hstu_ranker(ranker_run)
    cand = torch.from_numpy(stage.to_ranker[out.items.numpy()])
    expected = model.score(items, actions, times, cand)[:, meta["tasks"].index("purchase")]
    torch.testing.assert_close(out.scores, expected)
    assert torch.all(out.scores[:-1] >= out.scores[1:])


def test_hstu_rank_stage_rejects_unknown_task(tiny_run: Path, tmp_path: Path, ranker_run: Path) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        bundle_with(tiny_run, tmp_path, ranker_run, weights={"click": 1.0})
