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
from genrec.ops.hstu_attention import hstu_attention, hstu_cached_attention
from genrec.ops.jagged import lengths_from_offsets
from genrec.ops.jagged import positions as jagged_positions


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


@dataclass
class KVCache:
    """One layer's keys and values of encoded (jagged) sequences: what later tokens of those sequences attend to.

    Cached token j of sequence b sits at position j; new tokens come after them."""

    k: torch.Tensor  # (sum N, H, Dqk)
    v: torch.Tensor  # (sum N, H, Dv)
    offsets: torch.Tensor  # (B + 1,)
    timestamps: torch.Tensor | None  # (sum N,) seconds, or None without time bias


def _append(old: torch.Tensor, old_offsets: torch.Tensor, new: torch.Tensor, new_offsets: torch.Tensor):
    """Jagged concatenation per sequence: (sum N, *F) + (sum M, *F) -> (sum N + M, *F), both in sequence order.
    Returns (values, offsets (B + 1,), the new rows' positions inside their sequences (sum M,))."""
    offsets = old_offsets + new_offsets
    n_len, m_len = lengths_from_offsets(old_offsets), lengths_from_offsets(new_offsets)
    old_rows = offsets[:-1].repeat_interleave(n_len) + jagged_positions(old_offsets)
    new_pos = n_len.repeat_interleave(m_len) + jagged_positions(new_offsets)
    new_rows = offsets[:-1].repeat_interleave(m_len) + new_pos
    out = new.new_empty((old.shape[0] + new.shape[0], *new.shape[1:]))
    out = out.index_copy(0, old_rows, old).index_copy(0, new_rows, new)
    return out, offsets, new_pos


class HSTULayer(nn.Module):
    """One HSTU layer with two entry points built from the same three steps (uvqk -> attention -> output), as
    generative-recommenders' STULayer:
      forward:        whole jagged sequences (training, a prefix to cache: return_kv=True);
      cached_forward: new tokens against a KVCache: appended to their sequences (append=True, equal to forward
                      over the concatenation) or as targets that see the cache and themselves only (M-FALCON).
    """

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

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (R, D) -> u (R, H*Dv), v (R, H, Dv), q (R, H, Dqk), k (R, H, Dqk)."""
        c, h = self.c, self.c.num_heads
        uvqk = F.silu(self.uvqk(self.norm(x)))  # (R, H*(2Dv+2Dqk))
        u, v, q, k = uvqk.split([h * c.v_dim, h * c.v_dim, h * c.qk_dim, h * c.qk_dim], dim=-1)
        return u, v.reshape(-1, h, c.v_dim), q.reshape(-1, h, c.qk_dim), k.reshape(-1, h, c.qk_dim)

    def output(self, x: torch.Tensor, attn: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Residual update x + W2(Dropout(LayerNorm(A V) * U)). attn: (R, H, Dv) or (R, H*Dv)."""
        return x + self.out(self.dropout(self.attn_norm(attn.reshape(x.shape[0], -1)) * u))

    def divisor(self) -> float | None:
        """The attention divisor: the configured max length, or None for each sequence's own length."""
        return float(self.c.max_len) if self.c.attn_scale == "max_len" else None

    def forward(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None,
        cache: dict | None = None,
        divisor: float | None = None,
        return_kv: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, KVCache]:
        """x: (sum N, D) -> (sum N, D); with return_kv also this layer's KVCache of the sequences.

        cache: per-batch attention geometry shared by the layers (see hstu_attention); divisor: overrides the
        configured attention divisor (M-FALCON encodes a prefix with the divisor of prefix + candidate)."""
        c = self.c
        u, v, q, k = self.project(x)
        attn = hstu_attention(
            q,
            k,
            v,
            offsets,
            pos_bias=self.pos_bias,
            time_bias=self.time_bias if timestamps is not None else None,
            timestamps=timestamps,
            scale=divisor if divisor is not None else self.divisor(),
            backend=c.attention_backend,
            cache=cache,
        )  # (sum N, H, Dv)
        y = self.output(x, attn, u)
        return (y, KVCache(k, v, offsets, timestamps)) if return_kv else y

    def cached_forward(
        self,
        x: torch.Tensor,
        offsets: torch.Tensor,
        kv: KVCache,
        timestamps: torch.Tensor | None = None,
        append: bool = True,
        positions: torch.Tensor | None = None,
        divisor: float | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """New tokens x: (sum M, D), offsets (B + 1,) over the cache's B sequences -> (their outputs, the cache).

        append=True: the tokens continue their sequences (new token i of sequence b is at position N_b + i and
          sees the whole prefix and the new tokens before it); returns the cache with their K/V appended.
          Equal to forward over the concatenation when the divisor does not depend on the length (max_len).
        append=False: targets (M-FALCON candidates): each sees the cached tokens before `positions` ((sum M,);
          default all N_b) and itself, never another new token; the cache comes back unchanged.
        timestamps: (sum M,) or () for all new tokens (used when the cache has timestamps).
        divisor: as in forward; with attn_scale="length" pass the full sequence length the prefix was run with.
        """
        scale = divisor if divisor is not None else self.divisor()
        if scale is None:
            raise ValueError("cached_forward needs a fixed attention divisor: attn_scale='max_len' or divisor=")
        u, v, q, k = self.project(x)
        use_time = kv.timestamps is not None
        if use_time and timestamps is None:
            raise ValueError("the cache has timestamps: pass the new tokens' timestamps")
        times = timestamps if use_time else None
        if append:
            if positions is not None:
                raise ValueError("appended tokens take their positions from the cache; positions= is for targets")
            ck, _, _ = _append(kv.k, kv.offsets, k, offsets)
            cv, c_off, positions = _append(kv.v, kv.offsets, v, offsets)
            ct = _append(kv.timestamps, kv.offsets, times.expand(x.shape[0]), offsets)[0] if use_time else None
            kv = KVCache(ck, cv, c_off, ct)
        attn = hstu_cached_attention(
            q,
            k,
            v,
            offsets,
            kv.k,
            kv.v,
            kv.offsets,
            scale,
            positions=positions,
            pos_bias=self.pos_bias,
            time_bias=self.time_bias if use_time else None,
            timestamps=times,
            cached_timestamps=kv.timestamps,
        )  # (sum M, H, Dv)
        return self.output(x, attn, u), kv


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
        x = self.embed(items, jagged_positions(offsets), events)  # (sum N, D)
        cache: dict = {}  # per-batch attention geometry, built by the first layer and reused by the rest
        for layer in self.layers:
            x = layer(x, offsets, timestamps, cache)
        return F.normalize(x, dim=-1)

    def user_states(
        self,
        items: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        events: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """State after each sequence's last event: (B, D); every sequence needs at least one token.

        Only the last position of the last layer is read, so in eval mode that layer runs the last token alone
        against the other tokens' keys and values (cached_forward, as M-FALCON's targets): the same numbers
        as encode() without attention and output rows nobody reads (ML-1M, 200 tokens: 1 of 200 queries)."""
        if self.training or not len(self.layers) or self.layers[-1].divisor() is None:
            return super().user_states(items, offsets, timestamps, events)
        last_layer = self.layers[-1]
        x = self.embed(items, jagged_positions(offsets), events)  # (sum N, D)
        cache: dict = {}
        for layer in self.layers[:-1]:
            x = layer(x, offsets, timestamps, cache)
        B = len(offsets) - 1
        last = offsets[1:] - 1  # (B,)
        prefix = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        prefix[last] = False
        _, v, _, k = last_layer.project(x[prefix])  # the keys and values the last tokens attend to
        ts = timestamps[prefix] if timestamps is not None else None
        kv = KVCache(k, v, offsets - torch.arange(B + 1, device=offsets.device), ts)
        t_last = timestamps[last] if timestamps is not None else None
        if t_last is not None and B == 1:
            t_last = t_last[0]  # one time for the one new token: the single-sequence product
        one_each = torch.arange(B + 1, device=offsets.device)
        y, _ = last_layer.cached_forward(x[last], one_each, kv, t_last, append=False)
        return F.normalize(y, dim=-1)
