"""Full-catalog evaluation paths that must agree with the scored reference."""

import numpy as np
import pytest


@pytest.mark.parametrize("targets", [None, ["purchase"]])
def test_popularity_ranks_without_scoring_the_catalog_equal_the_scored_ones(targets) -> None:
    """The O(seen) popularity ranks are evaluation_ranks of popularity_scorer, excluded targets included."""
    from genrec.data.datasets import load_synthetic
    from genrec.data.sequences import leave_one_out
    from genrec.evaluation.evaluate import evaluation_ranks, popularity_ranks, popularity_scorer

    split = leave_one_out(load_synthetic("tiny", 0).sequences, target_events=targets)
    for which in ("valid", "test"):
        scored = evaluation_ranks(popularity_scorer(split), split, which, 1)
        assert np.isinf(scored).any() and np.array_equal(scored, popularity_ranks(split, which))
