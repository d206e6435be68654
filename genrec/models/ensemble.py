"""A weighted ensemble of sequence models over one catalog, as one sequence model.

Each member scores the catalog with cosine logits, cos(state_i, item_i) / t_i. The ensemble's logit is their
weighted sum, which ranks the catalog as the weighted sum of the members' log-probabilities does (a member's
log-softmax differs from its logits by a per-user constant). The sum is one inner product of concatenations:
    state = [w_1 / t_1 * state_1, ..., w_M / t_M * state_M]     (B, D_1 + ... + D_M)
    item  = [item_1, ..., item_M]                                 (num_items + 1, D_1 + ... + D_M)
so everything that scores a sequence model (evaluation, the exact and faiss retrievers, serving, export) scores
an ensemble unchanged, at temperature 1. Every member reads its own window of the history (its max_len).
The weights are chosen on validation by genrec.training.ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from genrec.models.sequential import SequentialModel


@dataclass
class EnsembleConfig:
    members: list[dict[str, Any]]  # each member's model config (SequentialConfig.to_dict())
    weights: list[float]  # one per member, summing to 1
    num_items: int = field(init=False)
    max_len: int = field(init=False)  # the longest member window: what a caller keeps of a history
    dim: int = field(init=False)
    temperature: float = field(init=False, default=1.0)  # the members' temperatures are inside the states

    def __post_init__(self) -> None:
        if not self.members or len(self.members) != len(self.weights):
            raise ValueError(f"an ensemble needs one weight per member ({len(self.members)} members, "
                             f"{len(self.weights)} weights)")  # fmt: skip
        items = {m["num_items"] for m in self.members}
        if len(items) != 1:
            raise ValueError(f"ensemble members score different catalogs ({sorted(items)} items)")
        self.num_items = items.pop()
        self.max_len = max(m["max_len"] for m in self.members)
        self.dim = sum(m["dim"] for m in self.members)
        self.temperature = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "members": self.members, "weights": self.weights}


def last_events(offsets: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B + 1,) offsets of a jagged batch -> (index of each kept token, new offsets): each sequence's last n."""
    lengths = offsets[1:] - offsets[:-1]
    kept = lengths.clamp(max=n)
    new = torch.zeros_like(offsets)
    torch.cumsum(kept, 0, out=new[1:])
    start = offsets[1:] - kept  # (B,) first kept token of each sequence
    index = torch.repeat_interleave(start - new[:-1], kept) + torch.arange(int(new[-1]), device=offsets.device)
    return index, new


def window_states(
    model: SequentialModel,
    items: torch.Tensor,
    offsets: torch.Tensor,
    timestamps: torch.Tensor | None = None,
    events: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, D) model.user_states over each sequence's last model.config.max_len events (a member's own window)."""
    index, off = last_events(offsets, model.config.max_len)
    ts = timestamps[index] if timestamps is not None else None
    ev = events[index] if events is not None else None
    return model.user_states(items[index], off, ts, ev)


class Ensemble(SequentialModel):
    """Members' states concatenated (each scaled by weight / temperature) against their concatenated tables.
    Scored, never trained: encode and the training-only item_rows stay the base class's."""

    config: EnsembleConfig  # type: ignore[assignment]

    def __init__(self, config: EnsembleConfig) -> None:
        nn.Module.__init__(self)  # no tables of its own: the members hold them
        from genrec.models import model_from_config

        self.config = config  # type: ignore[assignment]
        self.members = nn.ModuleList(model_from_config(m) for m in config.members)
        self.attr_emb = self.event_emb = None  # an ensemble adds no inputs; uses_events asks the members

    @property
    def uses_events(self) -> bool:
        return any(m.uses_events for m in self.members)

    def _scales(self) -> list[float]:
        return [w / m.config.temperature for w, m in zip(self.config.weights, self.members, strict=True)]

    def item_table(self) -> torch.Tensor:
        return torch.cat([m.item_table() for m in self.members], -1)

    def user_states(
        self,
        items: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        events: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(sum N,) items, (B + 1,) offsets -> (B, sum D) weighted member states after each sequence's last event."""
        return torch.cat([window_states(m, items, offsets, timestamps, events) * scale
                          for m, scale in zip(self.members, self._scales(), strict=True)], -1)  # fmt: skip

    def with_item_attributes(self, tokens: torch.Tensor) -> SequentialModel:
        raise ValueError("an ensemble's catalog cannot grow: add items to its members' bundles and re-ensemble")
