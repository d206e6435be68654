"""A 2-process run reaches the validation NDCG@10 of a 1-process run (same global batch, same epochs)."""

from __future__ import annotations

import math

import numpy as np

from genrec.distributed.tests.test_train import history, torchrun

ARGS = ["--dataset", "synthetic:small", "--max-len", "30", "--dim", "32", "--layers", "1", "--threads", "1",
        "--batch-size", "128", "--num-negatives", "64", "--epochs", "3", "--sharding", "row-wise"]  # fmt: skip


def test_two_processes_match_one_process(tmp_path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    torchrun(1, one, *ARGS)
    torchrun(2, two, *ARGS)
    a, b = history(one)[-1]["valid"], history(two)[-1]["valid"]
    # noise: the standard error of NDCG@10 over the evaluated users (a per-user NDCG is in [0, 1]; its spread
    # is bounded by sqrt(m (1 - m)) for mean m), for the difference of two independent runs
    users = 2000
    m = (a["NDCG@10"] + b["NDCG@10"]) / 2
    se_diff = math.sqrt(2 * m * (1 - m) / users)
    assert abs(a["NDCG@10"] - b["NDCG@10"]) < 3 * se_diff, (a, b, se_diff)
    # and both learned: far above popularity's NDCG@10 on this shop (~0.05)
    assert min(a["NDCG@10"], b["NDCG@10"]) > 0.1
    assert np.isfinite([a["HR@10"], b["HR@10"]]).all()
