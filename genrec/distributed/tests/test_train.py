"""torchrun end to end on CPU/gloo: resume of a sharded checkpoint on the same world size replays the
uninterrupted run; a 2-rank checkpoint loads into one process for evaluation and serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
ARGS = ["--dataset", "synthetic:tiny", "--max-len", "20", "--dim", "16", "--layers", "1", "--threads", "1",
        "--batch-size", "64", "--num-negatives", "32"]  # fmt: skip


def torchrun(nproc: int, out: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m genrec.distributed.train ...` with a hard timeout (generous:
    a hang guard; on an idle 2-core box each launch takes ~10 s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "genrec.distributed.train", "--out", str(out), *args]  # fmt: skip
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]
    return p


def history(run: Path) -> list[dict]:
    return json.loads((run / "history.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("dist")
    full, resumed = tmp / "full", tmp / "resumed"
    torchrun(2, full, *ARGS, "--epochs", "3")
    torchrun(2, resumed, *ARGS, "--epochs", "2")
    torchrun(2, resumed, *ARGS, "--epochs", "3")  # resumes after epoch 2
    return {"full": full, "resumed": resumed}


def test_resume_replays_uninterrupted_run(runs: dict[str, Path]) -> None:
    a, b = history(runs["full"]), history(runs["resumed"])
    assert [h["epoch"] for h in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
        assert x["valid"]["NDCG@10"] == pytest.approx(y["valid"]["NDCG@10"], abs=1e-6)
    assert a[-1]["loss"] < a[0]["loss"]  # it trained


def test_two_rank_checkpoint_loads_in_one_process(runs: dict[str, Path]) -> None:
    """Reassembled from the 2 ranks' shards, the model scores validation exactly as the ranks did together."""
    from genrec.data.datasets import load_dataset
    from genrec.data.sequences import leave_one_out
    from genrec.distributed.train import load_distributed_run
    from genrec.evaluation.evaluate import evaluate_model

    assert not torch.distributed.is_initialized()
    run = runs["resumed"]
    model, meta = load_distributed_run(run, "last")
    assert meta["world_size"] == 2 and {r["sharding_type"] for r in meta["plan"]} <= {"row_wise", "table_wise",
                                                                                      "column_wise"}  # fmt: skip
    split = leave_one_out(load_dataset(meta["train"]["dataset"], seed=meta["train"]["seed"]).sequences)
    valid = evaluate_model(model, split, "valid")
    assert valid["NDCG@10"] == pytest.approx(history(run)[-1]["valid"]["NDCG@10"], abs=1e-6)
    # the padding row stayed zero-initialised and the table is not the N(0, 0.02) it started from
    table = model.item_emb.weight.detach()
    assert table.shape == (split.data.num_items + 1, 16) and float(table[1:].std()) > 0.021


def test_distributed_run_serves(runs: dict[str, Path]) -> None:
    """The bundle written at the end holds a plain model: Recommender.from_bundle and `genrec evaluate` accept it."""
    from genrec.distributed.train import load_distributed_run
    from genrec.serving.recommender import Recommender

    run = runs["resumed"]
    rec = Recommender.from_bundle(run)
    best, _ = load_distributed_run(run, "best")
    served = rec.model.item_emb.weight.detach()
    np.testing.assert_allclose(served.numpy(), best.item_emb.weight.detach().numpy())
    raw_items = json.loads((run / "vocab.json").read_text())["items"]
    recs = rec.recommend(raw_items[:3], 5)
    assert len(recs) == 5 and all(r.item_id in raw_items for r in recs)


def test_launch_train_maps_cli_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """`genrec train --nproc-per-node N` hands its options to this module's flags (None / False dropped)."""
    import genrec.distributed.train as t

    seen: dict = {}
    monkeypatch.setattr(t, "launch", lambda n, argv: seen.update(n=n, argv=argv) or 0)
    assert t.launch_train(2, model="hstu", batch_size=64, max_len=None, sharding="row-wise", out=Path("r")) == 0
    assert seen == {"n": 2, "argv": ["--model", "hstu", "--batch-size", "64", "--sharding", "row-wise", "--out", "r"]}
    # every mapped flag exists on the entry point
    import typer.main

    names = {o for p in typer.main.get_command(t.app).params for o in p.opts}
    assert {"--model", "--batch-size", "--sharding", "--out", "--time-budget", "--layers"} <= names
