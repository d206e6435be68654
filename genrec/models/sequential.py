"""What every next-item model shares: an item table, L2-normalised states and cosine logits.

A sequential model maps a jagged batch of histories to one user state per position:
    items: (sum N,) int64, offsets: (B + 1,), timestamps: (sum N,) | None  ->  states: (sum N, D)
States and item embeddings are L2-normalised, so logit = cos(state, item) / temperature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SequentialConfig:
    num_items: int
    max_len: int = 200
    dim: int = 50
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    temperature: float = 0.05

    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, **asdict(self)}


class SequentialModel(nn.Module):
    """Base: item table (row 0 = padding) and learned absolute positions, counted from the sequence start."""

    config: SequentialConfig

    def __init__(self, config: SequentialConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.num_items + 1, config.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.input_dropout = nn.Dropout(config.dropout)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def embed(self, items: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(sum N,) ids and positions -> (sum N, D): scaled item embedding + position, dropout."""
        x = self.item_emb(items) * self.config.dim**0.5 + self.pos_emb(positions.clamp(max=self.config.max_len - 1))
        return self.input_dropout(x)

    def encode(
        self, items: torch.Tensor, offsets: torch.Tensor, timestamps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(sum N,) items, (B + 1,) offsets -> (sum N, D) L2-normalised states."""
        raise NotImplementedError

    def item_table(self) -> torch.Tensor:
        """(num_items + 1, D) L2-normalised item embeddings (row 0 is padding)."""
        return F.normalize(self.item_emb.weight, dim=-1)

    def user_states(
        self, items: torch.Tensor, offsets: torch.Tensor, timestamps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """State after each sequence's last event: (B, D)."""
        return self.encode(items, offsets, timestamps)[offsets[1:] - 1]

    def score_all(self, states: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, num_items + 1) logits over the whole catalog (column 0 = padding)."""
        return states @ self.item_table().T / self.config.temperature
