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
