"""HSTU pointwise attention over jagged sequences: one API, a plain reference path and a batched fast path.

    A_ij = SiLU(q_i . k_j + rab(i, j)) / scale     for j <= i inside the same sequence, else 0
    out_i = sum_j A_ij v_j

rab(i, j) = pos_bias[min(i - j, P - 1)] (+ time_bias[bucket(|t_i - t_j|)] when timestamps are given),
bucket(g) = min(floor(log2(max(1, g))), T - 1). There is no softmax: masked entries contribute 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genrec.ops.jagged import lengths_from_offsets, padded_index, to_jagged, to_padded


def time_buckets(gap_seconds: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """floor(log2(max(1, |gap|))) clipped to num_buckets - 1. Any shape -> same shape, int64."""
    g = gap_seconds.abs().clamp(min=1).to(torch.float64)
    return torch.floor(torch.log2(g)).long().clamp(max=num_buckets - 1)


def _scale(lengths: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Divisor per sequence: a fixed length (the reference's padded length) or each user's own n."""
    if scale is not None:
        return torch.full_like(lengths, float(scale), dtype=torch.float32)
    return lengths.to(torch.float32).clamp(min=1)


def hstu_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    pos_bias: torch.Tensor | None = None,
    time_bias: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Plain per-sequence loop; the definition the fast paths are tested against.

    q, k: (sum N, H, Dqk); v: (sum N, H, Dv); offsets: (B + 1,); pos_bias: (P,); time_bias: (T,);
    timestamps: (sum N,). Returns (sum N, H, Dv).
    """
    outs = []
    lengths = lengths_from_offsets(offsets)
    divisors = _scale(lengths, scale)
    for b in range(len(lengths)):
        s, e = int(offsets[b]), int(offsets[b + 1])
        n = e - s
        qb, kb, vb = q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1)  # (H, n, D)
        logits = qb @ kb.transpose(1, 2)  # (H, n, n)
        i = torch.arange(n, device=q.device)
        gap = i[:, None] - i[None, :]
        if pos_bias is not None:
            logits = logits + pos_bias[gap.clamp(0, pos_bias.shape[-1] - 1)]
        if time_bias is not None and timestamps is not None:
            t = timestamps[s:e]
            logits = logits + time_bias[time_buckets(t[:, None] - t[None, :], time_bias.shape[-1])]
        causal = (gap >= 0).to(q.dtype)
        attn = F.silu(logits) * causal / divisors[b]
        outs.append((attn @ vb).transpose(0, 1))
    return torch.cat(outs, 0) if outs else v.new_zeros(v.shape)


def hstu_attention_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    pos_bias: torch.Tensor | None = None,
    time_bias: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    scale: float | None = None,
    max_len: int | None = None,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batched path: pad to the batch's longest sequence, one (B*H, n, n) product, unpad.

    Three tricks keep the (n, n) work to one fused bias-add-matmul, one SiLU and one matmul:
    - the causal mask is a large negative bias: SiLU(-1e9) is exactly 0 and so is its gradient;
    - padded keys need no mask: their V rows are zero, so they add nothing and get no gradient through A;
    - the 1/n scale is applied to V (jagged, small) instead of to the (n, n) scores.
    Padding costs B x n_max^2 instead of sum_i n_i^2; length-bucketed batches keep that waste small.
    """
    lengths = lengths_from_offsets(offsets)
    B, H, dqk, dv = len(lengths), q.shape[1], q.shape[2], v.shape[2]
    n = int(max_len if max_len is not None else lengths.max())
    idx = padded_index(offsets, n) if index is None else index
    if scale is None:  # each user's own length
        per_token = torch.repeat_interleave(lengths.to(v.dtype).clamp(min=1), lengths)
        v = v / per_token[:, None, None]
    else:
        v = v / scale
    qp = to_padded(q, idx, B, n).transpose(1, 2).reshape(B * H, n, dqk)
    kp = to_padded(k, idx, B, n).transpose(1, 2).reshape(B * H, n, dqk)
    vp = to_padded(v, idx, B, n).transpose(1, 2).reshape(B * H, n, dv)
    i = torch.arange(n, device=q.device)
    gap = i[:, None] - i[None, :]  # (n, n)
    bias = (
        torch.zeros((n, n), dtype=q.dtype, device=q.device)
        if pos_bias is None
        else pos_bias[gap.clamp(0, pos_bias.shape[-1] - 1)]
    )
    bias = bias.masked_fill(gap < 0, -1e9)  # causal
    if time_bias is not None and timestamps is not None:
        t = to_padded(timestamps, idx, B, n)  # (B, n)
        buckets = time_buckets(t[:, :, None] - t[:, None, :], time_bias.shape[-1])  # (B, n, n)
        bias = (time_bias[buckets] + bias).unsqueeze(1).expand(B, H, n, n).reshape(B * H, n, n)
    attn = F.silu(torch.baddbmm(bias, qp, kp.transpose(1, 2)))  # (B*H, n, n)
    out = torch.bmm(attn, vp).view(B, H, n, dv).transpose(1, 2)  # (B, n, H, Dv)
    return to_jagged(out.reshape(B, n, H * dv), idx).view(-1, H, dv)


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    pos_bias: torch.Tensor | None = None,
    time_bias: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "padded",
) -> torch.Tensor:
    """q, k: (sum N, H, Dqk); v: (sum N, H, Dv) -> (sum N, H, Dv). backend: 'padded' | 'reference'."""
    if backend == "reference":
        return hstu_attention_reference(q, k, v, offsets, pos_bias, time_bias, timestamps, scale)
    if backend == "padded":
        return hstu_attention_padded(q, k, v, offsets, pos_bias, time_bias, timestamps, scale)
    raise ValueError(f"unknown HSTU attention backend {backend!r}")
