import math

import numpy as np
import torch

from genrec.evaluation.metrics import metrics_from_ranks, ranks_from_scores


def test_metrics_hand_computed() -> None:
    m = metrics_from_ranks(np.array([1.0, 3.0, 11.0, float("inf")]))
    assert m["HR@10"] == 0.5
    assert math.isclose(m["NDCG@10"], (1.0 + 1 / math.log2(4)) / 4)
    assert m["HR@50"] == 0.75
    assert math.isclose(m["NDCG@50"], (1.0 + 0.5 + 1 / math.log2(12)) / 4)
    assert math.isclose(m["MRR"], (1 + 1 / 3 + 1 / 11 + 0) / 4)


def test_ranks_exclusion_and_ties() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [1.0, 1.0, 1.0, 1.0], [0.0, 0.3, 0.2, 0.1]])
    scores[2, 1] = float("-inf")  # the target was seen and excluded -> a miss
    ranks = ranks_from_scores(scores, torch.tensor([2, 3, 1]))
    assert ranks[0] == 3  # 0.9, 0.7 beat 0.5
    assert ranks[1] == 4  # ties count against the target
    assert ranks[2] == float("inf")


def test_auc_and_logloss_agree_with_torch_references() -> None:
    from torchmetrics.functional.classification import binary_auroc

    from genrec.evaluation.metrics import auc, logloss

    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.3
    p = np.round(1 / (1 + np.exp(-(rng.normal(size=5000) + y))), 2)  # rounded: many ties
    want = float(binary_auroc(torch.from_numpy(p), torch.from_numpy(y).long()))
    assert math.isclose(auc(y, p), want, abs_tol=1e-6) and 0.6 < want < 0.9
    assert auc(y.astype(float), p) == auc(y, p)
    # any monotone score: logits give the probabilities' AUC (a sigmoid in float32 would tie these)
    assert auc(np.array([0, 1, 1, 1, 0, 0]), np.array([20.0, 25, 30, 35, -1, 22])) == 1.0
    assert math.isnan(auc(np.ones(4), np.arange(4.0)))
    bce = torch.nn.functional.binary_cross_entropy(
        torch.from_numpy(p).clamp(1e-7, 1 - 1e-7), torch.from_numpy(y).double()
    )
    assert math.isclose(logloss(y, p), float(bce), rel_tol=1e-9)
