"""Wide & Deep (Cheng et al. 2016): a linear model over sparse features and their crosses, plus an MLP
over embeddings and dense features; the two logits are summed before the sigmoid and trained jointly.

    wide  = b + w_d . x_dense + sum_j w_j[id_j]          (ids incl. crossed features; one weight per id)
    deep  = MLP([x_dense, e_1, ..., e_F])                 (e_j: 32-d embedding bags, crosses excluded)
    logit = wide + deep
`LinearModel` alone (deep_layers=[]) is logistic regression on the same features: the CTR baseline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from genrec.models.sparse import FeatureSchema, make_ebc, mlp, pooled_columns


class LinearModel(nn.Module):
    """Logistic regression: one learned weight per sparse id (1-d embedding bags, sum-pooled) + dense weights."""

    def __init__(self, schema: FeatureSchema) -> None:
        super().__init__()
        self.keys = schema.sparse_keys(include_wide_only=True)
        self.ebc = make_ebc(schema.tables, 1, init_std=0.0)
        self.dense = nn.Linear(len(schema.dense), 1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.ebc(sparse)
        wide = pooled_columns(pooled, self.keys).sum(1, keepdim=True) if self.keys else 0.0  # 1-d bags
        return (self.dense(dense) + wide).squeeze(-1)


@dataclass
class WideDeepConfig:
    schema: FeatureSchema
    dim: int = 32  # deep embedding width (32 in the paper)
    deep_layers: list[int] = field(default_factory=lambda: [256, 128, 64])  # 3 ReLU layers; [] = wide only
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return {"kind": "wide-deep", **asdict(self)}


class WideDeep(nn.Module):
    def __init__(self, config: WideDeepConfig) -> None:
        super().__init__()
        self.config = config
        s = config.schema
        self.wide = LinearModel(s)
        self.deep_keys = s.sparse_keys(include_wide_only=False)
        self.deep = None
        if config.deep_layers:
            self.deep_ebc = make_ebc([t for t in s.tables if not t.wide_only], config.dim, init_std=0.05)
            width = len(s.dense) + config.dim * len(self.deep_keys)
            self.deep = mlp([width, *config.deep_layers, 1], final_activation=False, dropout=config.dropout)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """dense: (B, num_dense), sparse: KJT over B rows -> (B,) logits."""
        logit = self.wide(dense, sparse)
        if self.deep is not None:
            pooled = self.deep_ebc(sparse)
            x = torch.cat([dense, pooled_columns(pooled, self.deep_keys)], dim=1)
            logit = logit + self.deep(x).squeeze(-1)
        return logit
