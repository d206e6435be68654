"""HSTU pointwise attention over jagged sequences: one API, a plain reference path and a batched fast path.

    A_ij = SiLU(q_i . k_j + rab(i, j)) / scale     for j <= i inside the same sequence, else 0
    out_i = sum_j A_ij v_j

rab(i, j) = pos_bias[min(i - j, P - 1)] (+ time_bias[bucket(|t_i - t_j|)] when timestamps are given),
bucket(g) = min(floor(log2(max(1, g))), T - 1). There is no softmax: masked entries contribute 0.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from genrec.ops.jagged import lengths_from_offsets, padded_index, to_jagged, to_padded


def time_buckets(gap_seconds: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """floor(log2(max(1, |gap|))) clipped to num_buckets - 1. Any shape -> same shape, int64.

    Read from the exponent bits of the exact float64 value (gaps < 2^53 s): no log2 pass, and exact where
    floor(log2(2^k - 1)) in floating point rounds up to k (2.3x faster rab_index at (128, 200, 200), measured).
    """
    bits = gap_seconds.abs().clamp(min=1).to(torch.float64).view(torch.int64)
    return bits.bitwise_right_shift_(52).sub_(1023).clamp_(max=num_buckets - 1)


def pair_time_buckets(t_query: torch.Tensor, t_key: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """time_buckets(t_query[..., :, None] - t_key[..., None, :]) as int32: (..., T), (..., E) -> (..., T, E).

    When the timestamps span < 2^30 s (34 years) the gaps are taken in int32 relative to the earliest one: int64
    abs and clamp run scalar on AVX2 / AVX-512 (17 ms each at (128, 200, 200); int32: 0.8 ms, measured). The
    bucket is the exponent of the gap's nearest float32, less one where rounding went up to the next power of
    two, so it stays exact. Wider spans take time_buckets' float64 path.
    """
    if t_query.numel() == 0 or t_key.numel() == 0:
        return torch.zeros((*t_query.shape, t_key.shape[-1]), dtype=torch.int32, device=t_query.device)
    lo = torch.minimum(t_query.min(), t_key.min())
    if int(torch.maximum(t_query.max(), t_key.max()) - lo) >= 1 << 30:
        return time_buckets(t_query[..., :, None] - t_key[..., None, :], num_buckets).int()
    q, k = (t_query - lo).int(), (t_key - lo).int()
    gap = (q[..., :, None] - k[..., None, :]).abs_().clamp_(min=1)  # int32
    bucket = gap.float().view(torch.int32).bitwise_right_shift_(23).sub_(127)  # exponent of float32(gap)
    bucket -= (torch.ones_like(bucket).bitwise_left_shift_(bucket) > gap).int()  # float32 rounded up to 2^k
    return bucket.clamp_(max=num_buckets - 1)


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


class _TableGather(torch.autograd.Function):
    """table[index] cast to `dtype`, with the table's gradient accumulated in fp32 by one bincount.

    Autograd's own index backward would accumulate millions of bf16 terms into a few bins (inexact) and sort the
    indices first (slow); bincount is one pass.
    """

    @staticmethod
    def forward(ctx, table, index, dtype):  # noqa: ANN001, ANN205
        ctx.save_for_backward(index)
        ctx.size, ctx.acc = table.shape[0], torch.promote_types(table.dtype, torch.float32)
        # index_select on the flat index: ~3.7x faster than advanced indexing for a (B, n, n) index (measured)
        return table.to(dtype).index_select(0, index.flatten()).view(index.shape)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (index,) = ctx.saved_tensors
        dtable = torch.bincount(index.flatten(), grad.flatten().to(ctx.acc), ctx.size)
        return dtable, None, None


def rab_table(pos_bias: torch.Tensor | None, time_bias: torch.Tensor | None) -> torch.Tensor:
    """Flattened (P x T) table of pos_bias[p] + time_bias[t], plus a last entry -1e9 for masked pairs.

    (P * T + 1,). One gather from it replaces a position gather, a time gather, an add and a masked fill per layer.
    """
    pos = pos_bias if pos_bias is not None else torch.zeros(1)
    table = pos[:, None] if time_bias is None else pos[:, None] + time_bias[None, :]
    return torch.cat([table.flatten(), table.new_full((1,), -1e9)])


def rab_index(
    offsets: torch.Tensor, n: int, num_pos: int, timestamps: torch.Tensor | None, num_time: int, index: torch.Tensor
) -> torch.Tensor:
    """Index into rab_table for every (query i, key j) pair of a right-padded batch: (B, n, n) with timestamps,
    else (n, n), int32. Causal pairs j > i get the masked entry. Depends only on the batch, so all layers share it.
    int32 because every layer reads it twice (gather forward, bincount backward): half the bytes of int64 made
    both ~2x faster at (128, 200, 200) (measured)."""
    i = torch.arange(n, device=offsets.device)
    gap = i[:, None] - i[None, :]  # (n, n)
    idx = gap.clamp(0, max(num_pos - 1, 0))
    if timestamps is None:
        return idx.masked_fill(gap < 0, num_pos).int()
    # padded slots hold the earliest timestamp (not 0), so they stay inside the batch's span
    t = to_padded(timestamps - timestamps.min(), index, len(offsets) - 1, n)  # (B, n)
    idx = idx.int() * num_time + pair_time_buckets(t, t, num_time)  # (B, n, n) int32
    return idx.masked_fill_((gap < 0)[None], num_pos * num_time)


PADDED_STRIPS = 2  # query strips of the padded path (2: -20% attention time at n=200 on CPU, 3 no better; measured)


def causal_strips(n: int, strips: int, min_rows: int = 32) -> list[tuple[int, int]]:
    """Row ranges [s, e) that cut n causal query rows into at most `strips` equal strips of >= min_rows rows.

    Strip [s, e) only meets keys [0, e), so the upper-triangular tiles are never computed: k strips do
    (k + 1) / 2k of the full (n, n) work (3 strips: 2/3), at the price of a few more, smaller products.
    """
    k = max(1, min(strips, n // min_rows))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


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
    cache: dict | None = None,
) -> torch.Tensor:
    """Batched path: pad to the batch's longest sequence, (B*H, n, n) products below the diagonal, unpad.

    Per causal strip of query rows (causal_strips; PADDED_STRIPS of them) the work is one gather, one matmul
    (+ one broadcast add over heads), one SiLU and one matmul:
    - relative position and time-gap bias come from one small combined table (rab_table) through one index
      tensor per batch (rab_index), built once and shared by every layer through `cache` (a dict the caller
      creates per forward pass);
    - the causal mask is an entry of that table, -1e9: SiLU(-1e9) is exactly 0 and so is its gradient;
    - padded keys need no mask: their V rows are zero, so they add nothing and get no gradient through A;
    - the 1/n scale is applied to V (jagged, small) instead of to the (n, n) scores.
    Padding costs B x n_max^2 instead of sum_i n_i^2; length-bucketed batches keep that waste small.
    """
    lengths = lengths_from_offsets(offsets)
    B, H, dqk, dv = len(lengths), q.shape[1], q.shape[2], v.shape[2]
    use_time = time_bias is not None and timestamps is not None
    num_pos = pos_bias.shape[-1] if pos_bias is not None else 1
    num_time = time_bias.shape[-1] if use_time else 1
    key = ("padded", max_len, num_pos, num_time, use_time)
    if cache is not None and key in cache:
        n, idx, rab_idx = cache[key]
    else:
        n = int(max_len if max_len is not None else lengths.max())
        idx = padded_index(offsets, n) if index is None else index
        rab_idx = rab_index(offsets, n, num_pos, timestamps if use_time else None, num_time, idx)
        if cache is not None:
            cache[key] = (n, idx, rab_idx)
    if scale is None:  # each user's own length
        per_token = torch.repeat_interleave(lengths.to(v.dtype).clamp(min=1), lengths)
        v = v / per_token[:, None, None]
    else:
        v = v / scale
    qp = to_padded(q, idx, B, n).transpose(1, 2).reshape(B * H, n, dqk)
    kp = to_padded(k, idx, B, n).transpose(1, 2).reshape(B * H, n, dqk)
    vp = to_padded(v, idx, B, n).transpose(1, 2).reshape(B * H, n, dv)
    table = rab_table(pos_bias, time_bias if use_time else None)
    strips = tuple(causal_strips(n, PADDED_STRIPS))
    out = _PaddedStrips.apply(qp, kp, vp, table, rab_idx, strips, H)  # (B*H, n, Dv)
    out = out.view(B, H, n, dv).transpose(1, 2)  # (B, n, H, Dv)
    return to_jagged(out.reshape(B, n, H * dv), idx).view(-1, H, dv)


def _strip_scores(qp: torch.Tensor, kp: torch.Tensor, bias: torch.Tensor, s: int, e: int, heads: int) -> torch.Tensor:
    """Scores of query rows [s, e) against keys [0, e) plus their bias: (B*H, T, e).

    bias: (T, e) (positions only, broadcast over the batch) or (B, T, e) (with time gaps, broadcast over heads)."""
    q_s, k_s = qp[:, s:e], kp[:, :e]
    if heads == 1 or bias.dim() == 2:
        return torch.baddbmm(bias, q_s, k_s.transpose(1, 2))  # a 2-D bias broadcasts over B*H
    BH, t = qp.shape[0], e - s  # broadcast the bias over heads in the add instead of materialising H copies
    return (torch.bmm(q_s, k_s.transpose(1, 2)).view(BH // heads, heads, t, e) + bias[:, None]).view(BH, t, e)


def _strip_backward(
    do: torch.Tensor,
    logits: torch.Tensor,
    attn: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    s: int,
    e: int,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
) -> torch.Tensor:
    """One causal strip's gradients, written into dq[s:e] and accumulated in place into dk[:e], dv[:e].

    q, k, v, dq, dk, dv: (B*H, n, D); do: (B*H, T, Dv); logits S and attn A = SiLU(S): (B*H, T, e).
    dV += A^T dO, dS = SiLU'(S) * (dO V^T), dQ = dS K, dK += dS^T Q. Returns dS for the bias gradients."""
    dv[:, :e].baddbmm_(attn.transpose(1, 2), do)
    ds = torch.ops.aten.silu_backward(torch.bmm(do, v[:, :e].transpose(1, 2)), logits)
    dq[:, s:e] = torch.bmm(ds, k[:, :e])
    dk[:, :e].baddbmm_(ds.transpose(1, 2), q[:, s:e])
    return ds


class _PaddedStrips(torch.autograd.Function):
    """The padded path's causal strips, forward and backward written out.

    qp, kp: (B*H, n, Dqk); vp: (B*H, n, Dv); table: rab_table; rab_idx: (n, n) or (B, n, n); strips: row ranges.
    Forward keeps each strip's scores S and A = SiLU(S), as autograd would. Backward, per strip: _strip_backward,
    accumulating dK and dV in place: autograd's own backward zero-fills a full (B*H, n, D) gradient for every key slice and adds them up (measured: ~2 ms of
    a ~75 ms hstu step). The table's gradient is dS summed over the broadcast dims, then one bincount in fp32.
    """

    @staticmethod
    def forward(ctx, qp, kp, vp, table, rab_idx, strips, heads):  # noqa: ANN001, ANN205
        tab, saved, outs = table.to(qp.dtype), [], []
        for s, e in strips:
            sub = rab_idx[..., s:e, :e]
            bias = tab.index_select(0, sub.flatten()).view(sub.shape)  # (T, e) or (B, T, e)
            logits = _strip_scores(qp, kp, bias, s, e, heads)
            attn = F.silu(logits)
            outs.append(torch.bmm(attn, vp[:, :e]))  # (B*H, T, Dv)
            saved += [logits, attn]
        ctx.save_for_backward(qp, kp, vp, rab_idx, *saved)
        ctx.strips, ctx.heads = strips, heads
        ctx.table_size, ctx.acc = table.shape[0], torch.promote_types(table.dtype, torch.float32)
        return torch.cat(outs, 1) if len(outs) > 1 else outs[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):  # noqa: ANN001, ANN205
        qp, kp, vp, rab_idx, *saved = ctx.saved_tensors
        dq, dk, dv = torch.empty_like(qp), torch.zeros_like(kp), torch.zeros_like(vp)
        dtable = torch.zeros(ctx.table_size, dtype=ctx.acc, device=qp.device)
        for i, (s, e) in enumerate(ctx.strips):
            ds = _strip_backward(dout[:, s:e], saved[2 * i], saved[2 * i + 1], qp, kp, vp, s, e, dq, dk, dv)
            sub = rab_idx[..., s:e, :e]
            dbias = ds.sum(0) if sub.dim() == 2 else ds.view(sub.shape[0], -1, e - s, e).sum(1)  # bias's shape
            dtable += torch.bincount(sub.flatten(), dbias.flatten().to(ctx.acc), ctx.table_size)
        return dq, dk, dv, dtable, None, None, None


# ---------------------------------------------------------------------------------------------------------------
# Jagged path: cost ~ sum_i n_i^2 / 2, not B x n_max^2.
#   1. length bucketing: sequences are sorted by length and cut into a few buckets by a small dynamic program that
#      minimises (padded (n, n) work + a fixed cost per bucket); each bucket runs the padded kernel on its own
#      n_max, so padding waste stays small without the caller sorting its batches;
#   2. causal strips: inside a bucket, query rows are cut into strips of `tile` rows; strip [s, e) only meets keys
#      [0, e), so the all-zero upper-triangular tiles are never computed (about half the work for long sequences).
# ---------------------------------------------------------------------------------------------------------------

# Per device type: (query rows per causal strip, fixed cost of one more strip in (n, n) score elements).
# A bucket up to `tile` long runs as one padded product. CPU: an op costs ~60K elements of work, and 128-row
# strips keep the (T, e) tensors small; GPU: a kernel launch costs millions of elements of bandwidth, so fewer,
# larger strips and buckets (the tile sweep in benchmarks/results/efficiency_cuda.md).
JAGGED_SETTINGS: dict[str, tuple[int, int]] = {"cpu": (128, 60_000), "cuda": (2048, 16_000_000)}
JAGGED_TILE, BUCKET_OVERHEAD = JAGGED_SETTINGS["cpu"]


def jagged_settings(device: torch.device) -> tuple[int, int]:
    """(tile, bucket overhead) for a device; other accelerators take the GPU settings."""
    return JAGGED_SETTINGS.get(device.type, JAGGED_SETTINGS["cuda"])


def _strip_work(n: int, tile: int) -> int:
    """(n, n) score elements computed for one head of one length-n sequence with causal strips."""
    return sum((e := min(s + tile, n)) * (e - s) for s in range(0, n, tile))


def _grid(n: int) -> int:
    """Padded length a sequence of length n may be rounded up to: multiples of 8, then steps of 1/32 .. 1/16 of n."""
    if n <= 64:
        return max(8, -(-n // 8) * 8)
    step = 1 << max(3, n.bit_length() - 5)  # 1/32 .. 1/16 of n
    return -(-n // step) * step


@lru_cache(maxsize=64)
def plan_buckets(
    lengths: tuple[int, ...], heads: int = 1, tile: int = JAGGED_TILE, overhead: int = BUCKET_OVERHEAD
) -> tuple[tuple[int, int], ...]:
    """Cut sequences (sorted by length) into buckets: ((count, padded_len), ...) in increasing length.

    Minimises sum_b count_b * heads * strip_work(padded_len_b) + overhead * strips_b over cut points
    on the distinct rounded lengths (O(K^2), K <= ~100), cached per batch shape since every layer asks again.
    """
    rounded = sorted(_grid(max(n, 1)) for n in lengths)
    values, counts = np.unique(np.array(rounded, dtype=np.int64), return_counts=True)
    K = len(values)
    cum = np.concatenate([[0], np.cumsum(counts)])
    work = np.array([_strip_work(int(v), tile) for v in values], dtype=np.float64) * heads
    fixed = np.array([overhead * -(-int(v) // tile) for v in values], dtype=np.float64)
    best = np.full(K + 1, np.inf)
    best[0] = 0.0
    cut = np.zeros(K + 1, dtype=np.int64)
    for j in range(1, K + 1):  # bucket = distinct values i..j-1, padded to values[j-1]
        i = np.arange(j)
        cost = best[:j] + (cum[j] - cum[i]) * work[j - 1] + fixed[j - 1]
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    plan, j = [], K
    while j > 0:
        i = int(cut[j])
        plan.append((int(cum[j] - cum[i]), int(values[j - 1])))
        j = i
    return tuple(reversed(plan))


def _strip_logits(
    qp: torch.Tensor,
    kp: torch.Tensor,
    tp: torch.Tensor | None,
    pos_bias: torch.Tensor | None,
    time_bias: torch.Tensor | None,
    s: int,
    e: int,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Scores of query rows [s, e) against keys [0, e): (B*H, e-s, e), plus the rab indices used (for grads)."""
    B, H, _, dqk = qp.shape
    gap = torch.arange(s, e, device=qp.device)[:, None] - torch.arange(e, device=qp.device)[None, :]  # (T, e)
    pos_idx = None if pos_bias is None else gap.clamp(0, pos_bias.shape[-1] - 1)
    # gathers through _TableGather: autograd's index backward (sort + scatter into a few bins) made a 128 x 200
    # bucket ~10x slower than the padded path on an H200 (efficiency_cuda.md)
    if pos_idx is None:
        bias = torch.zeros(gap.shape, dtype=qp.dtype, device=qp.device)
    else:
        bias = _TableGather.apply(pos_bias, pos_idx, qp.dtype)
    bias = bias.masked_fill(gap < 0, -1e9)  # causal: SiLU(-1e9) and its gradient are exactly 0
    q = qp[:, :, s:e].reshape(B * H, e - s, dqk)
    k = kp[:, :, :e].reshape(B * H, e, dqk)
    time_idx = None
    if time_bias is not None and tp is not None:
        if tp.device.type == "cpu":  # int32 gaps: int64 abs / clamp run scalar on CPUs; GPUs need no workaround
            # (and would pay pair_time_buckets' span check, a host sync, once per strip)
            time_idx = pair_time_buckets(tp[:, s:e], tp[:, :e], time_bias.shape[-1])  # (B, T, e)
        else:
            time_idx = time_buckets(tp[:, s:e, None] - tp[:, None, :e], time_bias.shape[-1])
        bias = (_TableGather.apply(time_bias, time_idx, qp.dtype) + bias).unsqueeze(1)  # (B, 1, T, e)
        if H == 1:
            return torch.baddbmm(bias.view(B, e - s, e), q, k.transpose(1, 2)), pos_idx, time_idx
        # broadcast over heads in the add instead of materialising (B*H, T, e) copies of the bias
        logits = (torch.bmm(q, k.transpose(1, 2)).view(B, H, e - s, e) + bias).view(B * H, e - s, e)
        return logits, pos_idx, time_idx
    return torch.baddbmm(bias, q, k.transpose(1, 2)), pos_idx, time_idx  # (B*H, T, e), bias broadcast


class _StripAttention(torch.autograd.Function):
    """Causal strips with recomputation: no (n, n) tensor outlives its strip, forward or backward.

    Backward recomputes each strip's scores S (one extra Q K^T), then _strip_backward; rab grads are dS summed
    into their bins.
    """

    @staticmethod
    def forward(ctx, qp, kp, vp, tp, pos_bias, time_bias, tile):  # noqa: ANN001, ANN205
        B, H, n, dv = vp.shape
        out = vp.new_empty(B, H, n, dv)
        for s in range(0, n, tile):
            e = min(s + tile, n)
            logits, _, _ = _strip_logits(qp, kp, tp, pos_bias, time_bias, s, e)
            out[:, :, s:e] = torch.bmm(F.silu(logits), vp[:, :, :e].reshape(B * H, e, dv)).view(B, H, e - s, dv)
        ctx.save_for_backward(qp, kp, vp, tp, pos_bias, time_bias)
        ctx.tile = tile
        return out

    @staticmethod
    def backward(ctx, dout):  # noqa: ANN001, ANN205
        qp, kp, vp, tp, pos_bias, time_bias = ctx.saved_tensors
        B, H, n, _ = qp.shape
        dq, dk, dvp = torch.zeros_like(qp), torch.zeros_like(kp), torch.zeros_like(vp)
        dpos = None if pos_bias is None else torch.zeros_like(pos_bias)
        dtime = None if time_bias is None or tp is None else torch.zeros_like(time_bias)
        q, k, v, gq, gk, gv, do = (t.view(B * H, n, -1) for t in (qp, kp, vp, dq, dk, dvp, dout.contiguous()))
        for s in range(0, n, ctx.tile):
            e = min(s + ctx.tile, n)
            logits, pos_idx, time_idx = _strip_logits(qp, kp, tp, pos_bias, time_bias, s, e)
            ds = _strip_backward(do[:, s:e], logits, F.silu(logits), q, k, v, s, e, gq, gk, gv)
            if dpos is not None or dtime is not None:
                ds_b = ds.view(B, H, e - s, e).sum(1)  # (B, T, e); masked entries carry exactly 0
                if dpos is not None:
                    dpos += torch.bincount(pos_idx.flatten(), ds_b.sum(0).flatten(), dpos.shape[0]).to(dpos.dtype)
                if dtime is not None:
                    dtime += torch.bincount(time_idx.flatten(), ds_b.flatten(), dtime.shape[0]).to(dtime.dtype)
        return dq, dk, dvp, None, dpos, dtime, None


def _attend_strips(
    qp: torch.Tensor,
    kp: torch.Tensor,
    vp: torch.Tensor,
    tp: torch.Tensor | None,
    pos_bias: torch.Tensor | None,
    time_bias: torch.Tensor | None,
    tile: int,
) -> torch.Tensor:
    """Padded causal HSTU attention, computed strip by strip below the diagonal.

    qp, kp: (B, H, n, Dqk); vp: (B, H, n, Dv) (already divided by the scale, zero on padding);
    tp: (B, n) timestamps or None. Returns (B, H, n, Dv).
    A bucket that fits one strip runs under plain autograd (its (n, n) tensors are small and recomputing them
    costs more than keeping them); longer buckets use the recomputing strips, memory O(B H n tile).
    """
    B, H, n, _ = qp.shape
    if n <= tile:
        logits, _, _ = _strip_logits(qp, kp, tp, pos_bias, time_bias, 0, n)
        return torch.bmm(F.silu(logits), vp.reshape(B * H, n, -1)).view(B, H, n, -1)
    return _StripAttention.apply(qp.contiguous(), kp.contiguous(), vp.contiguous(), tp, pos_bias, time_bias, tile)


def hstu_attention_jagged(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    pos_bias: torch.Tensor | None = None,
    time_bias: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    scale: float | None = None,
    tile: int | None = None,
) -> torch.Tensor:
    """Length-bucketed, causally-stripped path; same result as the reference. Shapes as hstu_attention_reference.

    Work is ~ sum_b count_b * n_b^2 / 2 over a few length buckets (see plan_buckets), memory the same order:
    one short batch no longer pays for its one long user, and a long user no longer pays for the upper triangle.
    tile: query rows per strip (default: per device type, JAGGED_SETTINGS).
    """
    lengths = lengths_from_offsets(offsets)
    B, H = len(lengths), q.shape[1]
    if B == 0 or q.shape[0] == 0:
        return v.new_zeros(v.shape)
    if scale is None:  # each user's own length, applied to V (jagged, small) rather than to (n, n) scores
        v = v / torch.repeat_interleave(lengths.to(v.dtype).clamp(min=1), lengths)[:, None, None]
    else:
        v = v / scale
    default_tile, overhead = jagged_settings(q.device)
    tile = tile or default_tile
    lens = lengths.tolist()
    plan = plan_buckets(tuple(lens), H, tile, overhead)
    # padded slots hold 0 = the earliest timestamp, so they stay inside the batch's span (pair_time_buckets)
    rel_times = None if timestamps is None else timestamps - timestamps.min()
    order = sorted(range(B), key=lens.__getitem__)  # sequences by length; buckets are runs of this order
    starts = offsets[:-1].tolist()
    outs, rows, first = [], [], 0
    for count, n in plan:
        seqs = order[first : first + count]
        first += count
        blens = [lens[b] for b in seqs]
        # token rows of this bucket's sequences, in bucket order, and their slots in a (count * n) padded layout
        tok = torch.cat([torch.arange(starts[b], starts[b] + lens[b]) for b in seqs]).to(q.device)
        boff = torch.tensor([0] + blens, device=q.device).cumsum(0)
        idx = padded_index(boff, n)
        qp = to_padded(q.index_select(0, tok), idx, count, n).permute(0, 2, 1, 3)  # (count, H, n, Dqk)
        kp = to_padded(k.index_select(0, tok), idx, count, n).permute(0, 2, 1, 3)
        vp = to_padded(v.index_select(0, tok), idx, count, n).permute(0, 2, 1, 3)
        tp = None
        if time_bias is not None and timestamps is not None:
            tp = to_padded(rel_times.index_select(0, tok), idx, count, n)  # (count, n)
        out = _attend_strips(qp, kp, vp, tp, pos_bias, time_bias, tile)  # (count, H, n, Dv)
        outs.append(to_jagged(out.permute(0, 2, 1, 3), idx))  # (tokens of bucket, H, Dv)
        rows.append(tok)
    out_sorted = torch.cat(outs, 0)  # rows in bucket order; scatter them back to the caller's jagged order
    return out_sorted.new_zeros(out_sorted.shape).index_copy(0, torch.cat(rows), out_sorted)


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
    cache: dict | None = None,
) -> torch.Tensor:
    """q, k: (sum N, H, Dqk); v: (sum N, H, Dv) -> (sum N, H, Dv). backend: 'padded' | 'jagged' | 'reference'.

    cache: a dict created per forward pass and handed to every layer, so per-batch geometry (padding index,
    relative-bias index) is built once, not once per layer; None builds it each call."""
    if backend == "reference":
        return hstu_attention_reference(q, k, v, offsets, pos_bias, time_bias, timestamps, scale)
    if backend == "padded":
        return hstu_attention_padded(q, k, v, offsets, pos_bias, time_bias, timestamps, scale, cache=cache)
    if backend == "jagged":
        return hstu_attention_jagged(q, k, v, offsets, pos_bias, time_bias, timestamps, scale)
    raise ValueError(f"unknown HSTU attention backend {backend!r}")


def hstu_cached_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    cached_k: torch.Tensor,
    cached_v: torch.Tensor,
    cached_offsets: torch.Tensor,
    scale: float,
    positions: torch.Tensor | None = None,
    pos_bias: torch.Tensor | None = None,
    time_bias: torch.Tensor | None = None,
    timestamps: torch.Tensor | None = None,
    cached_timestamps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention rows of new tokens against cached keys/values: each sees the cached tokens j < its position, and
    itself; never the other new tokens (M-FALCON's candidate mask, Zhai et al. 2024 sec. 3.4).

    q, k: (sum M, H, Dqk), v: (sum M, H, Dv) the new tokens' projections, offsets (B + 1,);
    cached_k: (sum N, H, Dqk), cached_v: (sum N, H, Dv), cached_offsets (B + 1,): the same B sequences' cache.
    positions: (sum M,) each new token's position = the number of cached tokens it sees; None: all of them (N_b).
    timestamps: (sum M,) or () when every new token has the same time; cached_timestamps: (sum N,).
    A = SiLU(q . k_j + rab(pos - j, t - t_j)) / scale, plus SiLU(q . k + rab(0, 0)) / scale for the token itself.
    Returns (sum M, H, Dv). One sequence with no positions and one time (a request's candidates) takes a
    (H, M, N) product against a single bias row instead of a padded (B, H, M, N) one.
    """
    B, H, dv = len(offsets) - 1, q.shape[1], v.shape[2]
    use_time = time_bias is not None and timestamps is not None and cached_timestamps is not None
    self_logit = (q * k).sum(-1)  # (sum M, H)
    if pos_bias is not None:
        self_logit = self_logit + pos_bias[0]
    if use_time:
        self_logit = self_logit + time_bias[0]  # gap 0 -> bucket 0
    if B == 1 and positions is None and (not use_time or timestamps.dim() == 0):
        n = int(cached_k.shape[0])
        bias = torch.zeros(n, dtype=q.dtype, device=q.device)
        if pos_bias is not None:
            bias = pos_bias[(n - torch.arange(n, device=q.device)).clamp(0, pos_bias.shape[-1] - 1)]  # (n,)
        if use_time:
            bias = bias + time_bias[time_buckets(timestamps - cached_timestamps, time_bias.shape[-1])]
        a_cached = F.silu(torch.bmm(q.transpose(0, 1), cached_k.permute(1, 2, 0)) + bias)  # (H, M, n)
        attn = torch.bmm(a_cached, (cached_v / scale).transpose(0, 1)).transpose(0, 1)  # (M, H, Dv)
        return attn + F.silu(self_logit)[..., None] * (v / scale)
    out = F.silu(self_logit)[..., None] * v / scale
    n_len = lengths_from_offsets(cached_offsets)
    N = int(n_len.max()) if B else 0
    if N == 0:
        return out
    m_len = lengths_from_offsets(offsets)
    M = int(m_len.max())
    if positions is None:
        positions = torch.repeat_interleave(n_len, m_len)
    ci, hi = padded_index(offsets, M), padded_index(cached_offsets, N)
    qp = to_padded(q, ci, B, M).transpose(1, 2)  # (B, H, M, Dqk)
    kp = to_padded(cached_k, hi, B, N).transpose(1, 2)  # (B, H, N, Dqk)
    vp = to_padded(cached_v / scale, hi, B, N).transpose(1, 2)  # (B, H, N, Dv); zero rows on padding
    pos = to_padded(positions, ci, B, M)  # (B, M)
    gap = pos[:, :, None] - torch.arange(N, device=q.device)  # (B, M, N)
    bias = torch.zeros(gap.shape, dtype=q.dtype, device=q.device)
    if pos_bias is not None:
        bias = pos_bias[gap.clamp(0, pos_bias.shape[0] - 1)]
    bias = bias.masked_fill(gap <= 0, -1e9)  # only j < pos
    if use_time:
        tc = to_padded(timestamps.expand(q.shape[0]), ci, B, M)
        th = to_padded(cached_timestamps, hi, B, N)
        bias = bias + time_bias[time_buckets(tc[:, :, None] - th[:, None, :], time_bias.shape[0])]
    attn = F.silu(torch.matmul(qp, kp.transpose(-1, -2)) + bias[:, None])  # (B, H, M, N)
    rows = torch.matmul(attn, vp).transpose(1, 2).reshape(B * M, H, dv)  # (B*M, H, Dv)
    return out + rows.index_select(0, ci)
