"""DLRM (Naumov et al. 2019): bottom MLP over dense features, one embedding bag per sparse feature,
pairwise dot-product interaction, top MLP, sigmoid.

    z_0 = bottom_mlp(x_dense)                        (B, d)
    z_j = EmbeddingBag_j(ids of sparse feature j)    (B, d)   j = 1..F
    p   = [<z_a, z_b> for a < b over z_0..z_F]       (B, (F+1)F/2)
    logit = top_mlp([z_0, p])                        (B,)
dot_interaction / pairwise_dots and genrec.models.sparse.mlp are the pieces every DLRM in genrec is built from
(genrec.distributed.dlrm_next_item's next-item tower, genrec.generative_ranking.baselines' multi-task DLRM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from genrec.models.sparse import FeatureSchema, make_ebc, mlp, pooled_columns


@dataclass
class DLRMConfig:
    schema: FeatureSchema
    dim: int = 16
    bottom: list[int] = field(default_factory=lambda: [64, 32])  # hidden widths; a final layer maps to dim
    top: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return {"kind": "dlrm", **asdict(self)}


def pairwise_dots(z: torch.Tensor) -> torch.Tensor:
    """z: (B, F, d) -> (B, F(F-1)/2): <z_a, z_b> for a < b, row-major."""
    gram = torch.bmm(z, z.transpose(1, 2))  # (B, F, F)
    a, b = torch.triu_indices(z.shape[1], z.shape[1], offset=1, device=z.device)
    return gram[:, a, b]


def dot_interaction(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """dense: (B, d), sparse: (B, F, d) -> (B, d + (F+1)F/2): z_0 then <z_a, z_b> for a < b, row-major."""
    return torch.cat([dense, pairwise_dots(torch.cat([dense[:, None, :], sparse], dim=1))], dim=1)


class DLRM(nn.Module):
    def __init__(self, config: DLRMConfig) -> None:
        super().__init__()
        self.config = config
        s = config.schema
        self.keys = s.sparse_keys(include_wide_only=False)  # crossed features are for the wide part only
        self.ebc = make_ebc([t for t in s.tables if not t.wide_only], config.dim, init_std=0.05)
        self.bottom = mlp([len(s.dense), *config.bottom, config.dim], final_activation=True)
        n = len(self.keys) + 1
        self.top = mlp([config.dim + n * (n - 1) // 2, *config.top, 1], final_activation=False, dropout=config.dropout)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """dense: (B, num_dense) float, sparse: KJT over B rows -> (B,) logits."""
        pooled = self.ebc(sparse)  # KeyedTensor; read by key (a sharded collection may order them otherwise)
        emb = pooled_columns(pooled, self.keys).view(len(dense), len(self.keys), -1)  # (B, F, d)
        return self.top(dot_interaction(self.bottom(dense), emb)).squeeze(-1)
