"""HSTU: Hierarchical Sequential Transduction Units (Zhai et al., ICML 2024), over jagged sequences.

One layer, X: (sum_i N_i, D):
    X' = LayerNorm(X)
    U, V, Q, K = split(SiLU(X' W1 + b1))                 fused projection D -> H * (2 Dv + 2 Dqk)
    A = SiLU(Q K^T + rab) / n   (causal, per user)       pointwise: no softmax
    Y = Dropout(LayerNorm(A V) * U) W2 + b2              norm, gate with U, project
    X <- X + Y
rab = learned bias per relative position (+ per log2 time-gap bucket when timestamps exist).
The projections run on the jagged values directly; only attention sees a (bucket-)padded layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.sequential import SequentialConfig, SequentialModel
from genrec.ops.dropout import Dropout
from genrec.ops.hstu_attention import hstu_attention
from genrec.ops.jagged import positions


@dataclass
class HSTUConfig(SequentialConfig):
    qk_dim: int = 0  # per head; 0 -> dim // num_heads
    v_dim: int = 0  # per head; 0 -> dim // num_heads
    num_time_buckets: int = 128
    attn_scale: str = "max_len"  # divide A by the configured max length (reference) or "length" (user's n)
    attention_backend: str = "padded"

    def __post_init__(self) -> None:
        self.qk_dim = self.qk_dim or self.dim // self.num_heads
        self.v_dim = self.v_dim or self.dim // self.num_heads


class HSTULayer(nn.Module):
    def __init__(self, c: HSTUConfig) -> None:
        super().__init__()
        self.c = c
        h = c.num_heads
        self.norm = nn.LayerNorm(c.dim)
        self.uvqk = nn.Linear(c.dim, h * (2 * c.v_dim + 2 * c.qk_dim))
        self.pos_bias = nn.Parameter(torch.zeros(c.max_len))  # gap i - j in [0, max_len)
        self.time_bias = nn.Parameter(torch.zeros(c.num_time_buckets))
        self.attn_norm = nn.LayerNorm(h * c.v_dim)
        self.dropout = Dropout(c.dropout)
        self.out = nn.Linear(h * c.v_dim, c.dim)

    def forward(
        self, x: torch.Tensor, offsets: torch.Tensor, timestamps: torch.Tensor | None, cache: dict | None = None
    ) -> torch.Tensor:
        c, h = self.c, self.c.num_heads
        uvqk = F.silu(self.uvqk(self.norm(x)))  # (sum N, H*(2Dv+2Dqk))
        u, v, q, k = uvqk.split([h * c.v_dim, h * c.v_dim, h * c.qk_dim, h * c.qk_dim], dim=-1)
        attn = hstu_attention(
            q.reshape(-1, h, c.qk_dim),
            k.reshape(-1, h, c.qk_dim),
            v.reshape(-1, h, c.v_dim),
            offsets,
            pos_bias=self.pos_bias,
            time_bias=self.time_bias if timestamps is not None else None,
            timestamps=timestamps,
            scale=float(c.max_len) if c.attn_scale == "max_len" else None,
            backend=c.attention_backend,
            cache=cache,
        ).reshape(-1, h * c.v_dim)  # (sum N, H*Dv)
        y = self.out(self.dropout(self.attn_norm(attn) * u))
        return x + y


class HSTU(SequentialModel):
    def __init__(self, config: HSTUConfig) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList(HSTULayer(config) for _ in range(config.num_layers))

    def encode(
        self,
        items: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        events: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.embed(items, positions(offsets), events)  # (sum N, D)
        cache: dict = {}  # per-batch attention geometry, built by the first layer and reused by the rest
        for layer in self.layers:
            x = layer(x, offsets, timestamps, cache)
        return F.normalize(x, dim=-1)
