"""Epoch selection in memory for the small models (rankers, two-tower): keep the best weights, stop on patience.

The sequential trainer does the same through best.pt on disk, because its runs are long enough to be resumed.
"""

from __future__ import annotations

import copy
import math

from torch import nn


class BestWeights:
    """A copy of the model's weights at its best validation score so far (higher is better)."""

    def __init__(self, model: nn.Module, patience: int) -> None:
        self.model, self.patience = model, patience
        self.score, self.epoch = -math.inf, 0
        self.state = copy.deepcopy(model.state_dict())

    def exhausted(self, epoch: int) -> bool:
        """True when `epoch` would come more than `patience` epochs after the best one."""
        return self.epoch > 0 and epoch - self.epoch > self.patience

    def update(self, epoch: int, score: float) -> bool:
        """Record this epoch's score; True (and the weights copied) if it is the best so far."""
        if score <= self.score:
            return False
        self.score, self.epoch, self.state = score, epoch, copy.deepcopy(self.model.state_dict())
        return True

    def restore(self) -> None:
        self.model.load_state_dict(self.state)
