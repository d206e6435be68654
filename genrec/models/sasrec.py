"""SASRec (Kang & McAuley 2018): causal softmax self-attention over the history.

Pre-norm blocks on a padded (B, n, D) layout:
    X <- X + MHA(LayerNorm(X))   causal, padded keys masked
    X <- X + FFN(LayerNorm(X))   D -> D -> D with ReLU and dropout
then a final LayerNorm; states are L2-normalised like HSTU's so both share one loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.sequential import SequentialConfig, SequentialModel
from genrec.ops.dropout import Dropout
from genrec.ops.jagged import lengths_from_offsets, padded_index, positions, to_jagged, to_padded


class SASRecConfig(SequentialConfig):
    pass


class SASRecBlock(nn.Module):
    def __init__(self, c: SequentialConfig) -> None:
        super().__init__()
        self.heads = c.num_heads
        self.norm1 = nn.LayerNorm(c.dim)
        self.qkv = nn.Linear(c.dim, 3 * c.dim)
        self.proj = nn.Linear(c.dim, c.dim)
        self.norm2 = nn.LayerNorm(c.dim)
        self.ffn = nn.Sequential(nn.Linear(c.dim, c.dim), nn.ReLU(), Dropout(c.dropout), nn.Linear(c.dim, c.dim))
        self.dropout = Dropout(c.dropout)
        self.p = c.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, n, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, n, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        x = x + self.dropout(self.proj(a.transpose(1, 2).reshape(B, n, D)))
        return x + self.dropout(self.ffn(self.norm2(x)))


class SASRec(SequentialModel):
    def __init__(self, config: SequentialConfig) -> None:
        super().__init__(config)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.dim)

    def encode(
        self,
        items: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        events: torch.Tensor | None = None,
    ) -> torch.Tensor:
        lengths = lengths_from_offsets(offsets)
        B, n = len(lengths), int(lengths.max())
        idx = padded_index(offsets, n)
        x = to_padded(self.embed(items, positions(offsets), events), idx, B, n)  # (B, n, D)
        i = torch.arange(n, device=items.device)
        # causal and key-not-padding; a padded query row still sees key 0 so softmax stays finite
        mask = (i[None, :] <= i[:, None])[None] & (i[None, None, :] < lengths[:, None, None])
        mask = mask.unsqueeze(1)  # (B, 1, n, n)
        for block in self.blocks:
            x = block(x, mask)
        return F.normalize(to_jagged(self.final_norm(x), idx), dim=-1)
