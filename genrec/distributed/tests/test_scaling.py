"""Scaling-study helpers: the power-law fit recovers a known exponent; FLOPs are counted for both families."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from genrec.distributed.dlrm_next_item import DLRMNextItem, DLRMNextItemConfig
from genrec.distributed.scaling import frontier, power_law_fit
from genrec.models import build_model


def test_power_law_fit_recovers_exponent() -> None:
    c = np.geomspace(1e9, 1e13, 6)
    fit = power_law_fit(list(c), list(0.02 * c**0.07))
    assert fit["b"] == pytest.approx(0.07, abs=1e-9) and fit["A"] == pytest.approx(0.02, rel=1e-6)
    assert fit["r2"] == pytest.approx(1.0)


def test_frontier_keeps_only_improvements() -> None:
    assert frontier([(3, 0.2), (1, 0.1), (2, 0.05), (4, 0.15)]) == [(1, 0.1), (3, 0.2)]


@pytest.mark.parametrize("kind", ["hstu", "dlrm"])
def test_flops_grow_with_size(kind: str) -> None:
    items, offsets = torch.randint(1, 50, (40,)), torch.tensor([0, 15, 40])

    def flops(size: int) -> int:
        torch.manual_seed(0)
        if kind == "hstu":
            m = build_model("hstu", 50, max_len=30, dim=size, num_layers=1, dropout=0.0)
        else:
            m = DLRMNextItem(DLRMNextItemConfig(num_items=50, dim=size, hidden=2 * size, hist_len=30, max_len=30))
        with FlopCounterMode(display=False) as counter:
            m.encode(items, offsets).sum().backward()
        return counter.get_total_flops()

    small, large = flops(8), flops(32)
    assert 0 < small < large
