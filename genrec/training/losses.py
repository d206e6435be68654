"""Next-item losses over L2-normalised states and item embeddings (logit = cosine / temperature).

full      softmax over the whole catalog: (N, V) logits; exact, affordable for a few thousand items
sampled   the positive vs K uniform negatives drawn per sequence and shared by its positions: one
          batched (B, n, D) x (B, D, K) product instead of gathering K embeddings for every position
          (2/3 of the reference trainer's step). Sharing across the whole batch is cheaper still but
          pushes only K items away per step, and validation quality stalls (measured on ML-1M).
in-batch  the batch's distinct targets as negatives, each logit corrected by -log Q(item) for its
          popularity-proportional sampling probability
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from genrec.data.sequences import Split
from genrec.ops.jagged import padded_index, to_jagged, to_padded

LOSSES = ("full", "sampled", "in-batch")


def _needs_shift(bound: float, terms: int) -> bool:
    """True unless exp(logit) summed over `terms` logits with |logit| <= bound provably fits in fp32."""
    return bound + math.log(terms) >= 80.0


def _logsumexp(x: torch.Tensor, bound: float = math.inf) -> torch.Tensor:
    """logsumexp over the last dim, as (max-shift +) exp + sum + log: torch.logsumexp's CPU backward is ~5x slower
    on (B, n, K) logits (measured), and log_softmax + NLL ~20% slower on (N, V). -inf entries contribute 0.
    bound >= max |x|: when exp(bound) * (terms) cannot overflow fp32, the max-shift (two passes) is skipped."""
    if x.dtype == torch.float32 and not _needs_shift(bound, x.shape[-1]):
        return torch.log(torch.exp(x).sum(-1))
    m = x.detach().amax(-1, keepdim=True).clamp_min(-1e30)  # a row of only -inf must not give inf - inf
    return torch.log(torch.exp(x - m).sum(-1)) + m.squeeze(-1)


# Loss operands saved and exponentials taken in the autocast dtype (False: both in fp32, the path before;
# benchmarks/training_throughput.py measures the difference)
LOW_PRECISION_LOSS = True


class _ProductLogSumExp(torch.autograd.Function):
    """log sum_k exp(s_bi . e_bk) over each sequence's K candidate items, skipping accidental hits: (B, n).
    Sampled softmax: the K negatives of sequence b; full softmax: B = 1, n = N, K = V (every item, no hits).

    sp: (B, n, D) padded scaled states, ne: (B, K, D) negative embeddings, hits: flat indices into (B, n, K) of
    negatives equal to the row's target. One fused pass chain instead of autograd's: the (B, n, K) exponentials
    are kept and turned into the softmax gradient in place, hits are zeroed by index (a few per cent of rows)
    rather than by a masked pass over all logits forward and backward (measured: see benchmarks/training_throughput.py).
    """

    @staticmethod
    def forward(ctx, sp, ne, hits, bound):  # noqa: ANN001, ANN205
        low = LOW_PRECISION_LOSS and torch.is_autocast_enabled(sp.device.type)
        if low:  # save the low-precision operands, so that the backward's two products run in bf16 too, not on
            dtype = torch.get_autocast_dtype(sp.device.type)  # the fp32 inputs (autograd casts the returned
            sp, ne = sp.to(dtype), ne.to(dtype)  # gradients back to fp32)
        x = torch.bmm(sp, ne.transpose(1, 2))  # (B, n, K), in the products' precision (bf16 under autocast)
        x = x if low else x.float()
        shift = None
        if _needs_shift(bound, x.shape[-1]):  # exp could overflow: shift by the row max, in fp32
            x = x.float()
            shift = x.amax(-1, keepdim=True).clamp_min(-1e30)
            x -= shift
        # exp in the logits' own precision: a bf16 logit already carries up to 2^-9 |x| of rounding, so a bf16 exp
        # adds little; sums accumulate in fp32. Saves a cast pass each way and half the saved bytes (measured)
        e = x.exp_()
        e.view(-1)[hits] = 0.0
        total = e.sum(-1, dtype=torch.float32).clamp_min_(1e-30)  # (B, n); a row of only hits adds ~nothing
        ctx.save_for_backward(sp, ne, e, total)
        lse = total.log()
        return lse if shift is None else lse + shift.squeeze(-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        sp, ne, e, total = ctx.saved_tensors
        p = e.mul_((grad / total).unsqueeze(-1).to(e.dtype)).to(sp.dtype)  # d lse / d logit = softmax; hits stay 0
        return torch.bmm(p, ne), torch.bmm(p.transpose(1, 2), sp), None, None


def accidental_hits(neg: torch.Tensor, tgt: torch.Tensor, num_items: int) -> torch.Tensor:
    """Flat indices into (B, n, K) where negative neg[b, k] equals target tgt[b, i] (0 = padding never hits).

    neg: (B, K), tgt: (B, n). A (B, V + 1) membership table finds the few rows with a hit (~K/V of them) first,
    so the (B, n, K) comparison runs only on those rows (~10x faster than comparing all, measured).
    """
    B, K = neg.shape
    member = torch.zeros(B, num_items + 1, dtype=torch.bool, device=neg.device)
    member.scatter_(1, neg, True)
    member[:, 0] = False
    rows = member.gather(1, tgt).view(-1).nonzero().squeeze(1)  # flat (b * n + i) of rows with a hit
    b = torch.div(rows, tgt.shape[1], rounding_mode="floor")
    r, k = (neg[b] == tgt.view(-1)[rows, None]).nonzero(as_tuple=True)  # (R, K) comparison on those rows only
    return rows[r] * K + k


def product_lse_reference(sp: torch.Tensor, ne: torch.Tensor, hits: torch.Tensor, bound: float) -> torch.Tensor:
    """_ProductLogSumExp under plain autograd (hits masked to -inf): the definition it is tested against."""
    x = torch.bmm(sp, ne.transpose(1, 2)).float()
    x.view(-1)[hits] = float("-inf")
    return _logsumexp(x, bound)


def _logit_bound(states: torch.Tensor, table: torch.Tensor, temperature: float) -> float:
    """max |s . e| / T <= max |s| max |e| / T (Cauchy-Schwarz); about 1/T for L2-normalised vectors."""
    norms = (v.detach().float().norm(dim=-1).max().item() for v in (states, table))
    return math.prod(norms) / temperature * 1.01 + 1.0  # margin for bf16 rounding of the products


Table = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]  # (V + 1, D), or item ids -> their (..., D) rows


def next_item_loss(
    states: torch.Tensor,
    targets: torch.Tensor,
    table: Table,
    temperature: float,
    kind: str = "sampled",
    num_negatives: int = 128,
    log_q: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    offsets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    num_items: int | None = None,
) -> torch.Tensor:
    """states: (N, D), targets: (N,) in 1..V, table: (V + 1, D) with row 0 = padding, or (sampled and in-batch
    losses, with num_items) a function from item ids to their rows, so that only the rows used are computed;
    offsets: (B + 1,) the jagged sequence bounds (sampled loss; None = one sequence), mask: (N,) bool, the
    positions whose target counts (target events such as purchases; None = all). Returns the mean loss over
    the counted positions."""
    if callable(table) and (kind == "full" or num_items is None):
        raise ValueError("a table given as a function needs kind='sampled' or 'in-batch' and num_items")
    rows = table if callable(table) else table.__getitem__
    if kind == "full":
        scaled = states / temperature  # (N, D): the temperature applied before the products, not to the logits
        pos = (scaled * table[targets]).sum(-1).float()  # (N,)
        bound = _logit_bound(states, table, temperature)
        no_hits = torch.zeros(0, dtype=torch.long, device=states.device)
        lse = _ProductLogSumExp.apply(scaled[None], table[1:][None], no_hits, bound)[0]  # (N,) over the catalog
        return _mean(lse - pos, mask)
    if kind == "sampled":
        num_items = num_items if num_items is not None else table.shape[0] - 1
        if offsets is None:
            offsets = torch.tensor([0, len(targets)], device=states.device)
        lengths = offsets[1:] - offsets[:-1]
        B, n = len(lengths), int(lengths.max())
        neg = torch.randint(1, num_items + 1, (B, num_negatives), generator=generator).to(states.device)  # (B, K)
        used = rows(torch.cat([targets, neg.view(-1)]))  # (N + B K, D): one call, one id-dropout draw
        tgt_rows, neg_rows = used[: len(targets)], used[len(targets) :].view(B, num_negatives, -1)
        scaled = states / temperature  # (N, D): the temperature applied before the products, not to the logits
        pos = (scaled * tgt_rows).sum(-1).float()  # (N,)
        bound = _logit_bound(states, used, temperature)
        idx = padded_index(offsets, n)
        tgt = to_padded(targets, idx, B, n)  # (B, n), 0 on padding
        hits = accidental_hits(neg, tgt, num_items)  # flat indices into (B, n, K)
        neg_lse = _ProductLogSumExp.apply(to_padded(scaled, idx, B, n), neg_rows, hits, bound)  # (B, n)
        # loss = logsumexp([pos, negatives]) - pos, reduced per row in the padded layout; only (N,) is unpadded
        lse = torch.logaddexp(pos, to_jagged(neg_lse, idx))
        return _mean(lse - pos, mask)
    if kind == "in-batch":
        if mask is not None:
            states, targets = states[mask], targets[mask]
            if len(targets) == 0:
                return states.sum() * 0.0
        uniq, label = torch.unique(targets, return_inverse=True)  # (M,), (N,)
        logits = states @ rows(uniq).T / temperature  # (N, M)
        if log_q is not None:
            logits = logits - log_q[uniq][None, :]
        return F.cross_entropy(logits, label)
    raise ValueError(f"unknown loss {kind!r}; choose from {', '.join(LOSSES)}")


def log_q(split: Split) -> torch.Tensor:
    """(num_items + 1,) log share of training events per item (unseen items get one pseudo-count): the two-tower's
    in-batch correction. The sequence trainer does not subtract it: a batch of ~6,400 targets holds nearly every
    item of a small catalog, so the share overstates how much likelier a popular item is to be a negative
    (synthetic shop, HSTU, 15 epochs: validation NDCG@10 0.185 with it, 0.244 without)."""
    counts = np.bincount(split.train_items, minlength=split.data.num_items + 1).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def _mean(losses: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of the (N,) losses at the masked positions (0, still differentiable, when none is)."""
    if mask is None:
        return losses.mean()
    return (losses * mask).sum() / mask.sum().clamp(min=1)
