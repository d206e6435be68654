"""Two-tower retrieval: a user tower and an item tower map to one d-dim space; score = dot product.

    u = normalize(MLP_u([user feature bags, mean of recent-item bag, last-item bag, user dense]))   (B, d)
    v = normalize(MLP_v([item id bag, item attribute bags, item dense]))                             (M, d)
    logit(u, v) = <u, v> / temperature
Training: in-batch sampled softmax; each in-batch candidate's logit is corrected by - log q(item), q the
item's share of training events (the rate at which it appears as an in-batch negative), so popular items are
not over-penalised (Yi et al. 2019).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import KeyedJaggedTensor

from genrec.models.sparse import FeatureSchema, make_ebc, mlp, pooled_columns, pooled_from_columns


@dataclass
class TwoTowerConfig:
    user_schema: FeatureSchema  # user-side sparse tables (user attributes, recent items) + dense columns
    item_schema: FeatureSchema  # item-side sparse tables (item id, attributes) + dense columns
    dim: int = 64
    emb_dim: int = 64
    hidden: list[int] = field(default_factory=lambda: [128])
    temperature: float = 0.05

    def to_dict(self) -> dict:
        return {"kind": "two-tower", **asdict(self)}


class Tower(nn.Module):
    def __init__(self, schema: FeatureSchema, emb_dim: int, hidden: list[int], dim: int) -> None:
        super().__init__()
        self.keys = schema.sparse_keys()
        self.ebc = make_ebc(schema.tables, emb_dim, init_std=0.05)
        width = emb_dim * len(self.keys) + len(schema.dense)
        self.mlp = mlp([width, *hidden, dim], final_activation=False)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """dense: (B, num_dense), sparse: KJT over B rows -> (B, dim) L2-normalised."""
        pooled = self.ebc(sparse)
        x = torch.cat([dense, pooled_columns(pooled, self.keys)], dim=1)
        return F.normalize(self.mlp(x), dim=-1)

    def forward_columns(
        self, dense: torch.Tensor, values: dict[str, torch.Tensor], offsets: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """forward() from per-key jagged ids instead of a KJT (inference on a few rows; equal, tested)."""
        x = torch.cat([dense, pooled_from_columns(self.ebc, values, offsets, self.keys)], dim=1)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, config: TwoTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.user_tower = Tower(config.user_schema, config.emb_dim, config.hidden, config.dim)
        self.item_tower = Tower(config.item_schema, config.emb_dim, config.hidden, config.dim)

    def in_batch_loss(
        self, users: torch.Tensor, pos_items: torch.Tensor, item_ids: torch.Tensor, log_q: torch.Tensor
    ) -> torch.Tensor:
        """users: (B, d), pos_items: (B, d) towers' outputs for B (user, next item) pairs; item_ids: (B,)
        their ids; log_q: (B,) log sampling probability of each item. Softmax over the batch's items with
        the log-Q correction; a row's other copies of its own positive are masked (not negatives)."""
        logits = users @ pos_items.T / self.config.temperature - log_q[None, :]  # (B, B)
        dup = (item_ids[:, None] == item_ids[None, :]) & ~torch.eye(len(item_ids), dtype=torch.bool)
        logits = logits.masked_fill(dup, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(item_ids)))
