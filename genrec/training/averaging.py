"""Exponential moving average of a model's weights (Polyak averaging), for evaluation and the saved model.

    shadow <- d_t * shadow + (1 - d_t) * weights,   d_t = min(decay, (1 + t) / (10 + t))   after step t
The warm-up (d_t small at first) keeps the random initial weights from lingering in the average.

With a constant learning rate the weights keep moving around a plateau; their average is a steadier model, and
choosing the best epoch on validation then depends less on one lucky epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v, 1.0 - d)

    def state(self) -> dict:
        return {"steps": self.steps, "shadow": self.shadow}

    def load(self, state: dict) -> None:
        self.steps, self.shadow = state["steps"], state["shadow"]

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; the trained ones come back after it."""
        trained = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(trained, strict=False)
