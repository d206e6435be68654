"""M-FALCON (Zhai et al. 2024, sec. 3.4): score m candidates for one user with one prefix encoding.

The m candidates are appended after the user's n history tokens with a mask where a candidate sees every
history token and itself, never another candidate, and history tokens never see candidates. So:
  1. encode_with_cache(): run the history once through HSTULayer.forward, keeping each layer's KVCache;
     cost ~ L (n^2 d + n d^2);
  2. candidate_states(): push candidates through HSTULayer.cached_forward (targets: each row attends to the
     cached prefix plus itself) in micro-batches; cost ~ L m (n d + d^2) instead of m full (n + 1)-token
     encodings.
Every candidate sits at relative position n (right after the history) with timestamp = the request time
(default: the last history timestamp). With attn_scale="length" the divisor is n + 1, the appended sequence's
length, for the prefix too, exactly as if the candidate had been appended.

What a "score" is. The candidate's output state h_c (target-aware: it has seen the history and the candidate)
is what a ranking head consumes; genrec has no trained ranking head yet, so the score is a pluggable head:
  head="target"     cos(h_c, e_c) / temperature: the candidate-position state against the candidate's own
                    embedding (the item table the model already has). Exercises the M-FALCON path end to end,
                    but a model trained only on next-item prediction was never trained on this quantity.
  head="retrieval"  cos(u_n, e_c) / temperature with u_n the history's last state: the next-item logit the
                    retrieval model *was* trained for (Recommender.recommend's scores when attn_scale="max_len";
                    with "length" u_n uses the appended divisor n + 1); needs no candidate pass, since under
                    the M-FALCON mask candidates cannot change u_n.
  head=callable     f(states (m, D), candidates (m,)) -> (m,), e.g. a ranking MLP trained on h_c.
Candidate states equal those of appending each candidate alone to the history and running HSTU.encode (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genrec.models.hstu import HSTU, KVCache

Head = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PrefixCache:
    """One user's history, encoded once. n = history length, L layers."""

    layers: list[KVCache]  # per layer: the history's K and V (and timestamps), what candidates attend to
    position: int  # n: every candidate's relative position
    divisor: float  # attention divisor of the appended (n + 1)-token sequence
    time: torch.Tensor | None  # (): every candidate's timestamp; None without timestamps
    state: torch.Tensor | None  # (D,) L2-normalised state after the last history token; None if n == 0


def _check(model: HSTU) -> None:
    if not isinstance(model, HSTU):
        raise TypeError(f"M-FALCON needs an HSTU model, got {type(model).__name__}")
    if model.training:
        raise ValueError("call model.eval() first: dropout would make cached and candidate passes disagree")


@torch.no_grad()
def encode_with_cache(
    model: HSTU,
    history_items: torch.Tensor,
    history_timestamps: torch.Tensor | None = None,
    request_time: int | None = None,
) -> PrefixCache:
    """history_items: (n,) int64 item indices, oldest first; history_timestamps: (n,) seconds or None.

    request_time: the candidates' timestamp (default: the last history timestamp); unused without timestamps.
    """
    _check(model)
    c, dev = model.config, history_items.device
    n = int(history_items.shape[0])
    use_time = history_timestamps is not None
    if use_time and history_timestamps.shape != history_items.shape:
        raise ValueError(f"history_timestamps has shape {tuple(history_timestamps.shape)}, expected ({n},)")
    divisor = float(c.max_len) if c.attn_scale == "max_len" else float(n + 1)
    t_cand = None
    if use_time:
        t = int(request_time) if request_time is not None else (int(history_timestamps[-1]) if n else 0)
        t_cand = torch.tensor(t, dtype=history_timestamps.dtype, device=dev)
    x = model.embed(history_items, torch.arange(n, device=dev))  # (n, D)
    offsets = torch.tensor([0, n], device=dev)
    cache = PrefixCache([], n, divisor, t_cand, None)
    geometry: dict = {}
    for layer in model.layers:
        if n:  # the appended sequence's divisor, not the history's own length
            x, kv = layer(x, offsets, history_timestamps, geometry, divisor=divisor, return_kv=True)
        else:
            _, v, _, k = layer.project(x)
            kv = KVCache(k, v, offsets, history_timestamps)
        cache.layers.append(kv)
    cache.state = F.normalize(x[-1], dim=-1) if n else None
    return cache


@torch.no_grad()
def candidate_states(
    model: HSTU, cache: PrefixCache, candidates: torch.Tensor, micro_batch: int = 1024
) -> torch.Tensor:
    """candidates: (m,) item indices -> (m, D) L2-normalised output states at the candidates' position n."""
    _check(model)
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    out = []
    for s in range(0, candidates.shape[0], micro_batch):
        cand = candidates[s : s + micro_batch]
        x = model.embed(cand, torch.full_like(cand, cache.position))  # (b, D)
        offsets = torch.tensor([0, cand.shape[0]], device=cand.device)
        for layer, kv in zip(model.layers, cache.layers, strict=True):
            x, _ = layer.cached_forward(x, offsets, kv, cache.time, append=False, divisor=cache.divisor)
        out.append(F.normalize(x, dim=-1))
    return torch.cat(out, 0) if out else candidates.new_zeros((0, model.config.dim), dtype=torch.float32)


def _apply_head(model: HSTU, head: Head, states: torch.Tensor | None, cache: PrefixCache, cand: torch.Tensor):
    table = model.item_table()
    if head == "retrieval":
        if cache.state is None:
            return torch.zeros(cand.shape[0], device=cand.device)
        return table[cand] @ cache.state / model.config.temperature
    if head == "target":
        return (states * table[cand]).sum(-1) / model.config.temperature
    if callable(head):
        return head(states, cand)
    raise ValueError(f"unknown head {head!r}; use 'target', 'retrieval' or a callable(states, candidates)")


@torch.no_grad()
def score_candidates(
    model: HSTU,
    history_items: torch.Tensor,
    history_timestamps: torch.Tensor | None,
    candidates: torch.Tensor,
    micro_batch: int = 1024,
    request_time: int | None = None,
    head: Head = "target",
) -> torch.Tensor:
    """One user: history (n,), candidates (m,) item indices -> (m,) scores (see the module doc for `head`)."""
    cache = encode_with_cache(model, history_items, history_timestamps, request_time)
    states = None if head == "retrieval" else candidate_states(model, cache, candidates, micro_batch)
    return _apply_head(model, head, states, cache, candidates)


@torch.no_grad()
def naive_candidate_states(
    model: HSTU,
    history_items: torch.Tensor,
    history_timestamps: torch.Tensor | None,
    candidates: torch.Tensor,
    micro_batch: int = 64,
    request_time: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The definition M-FALCON must match: append each candidate alone, run HSTU.encode, take its state.

    Runs micro_batch appended (n + 1)-token sequences per encode call. Returns candidate states (m, D) and the
    history's last state u_n inside the appended sequence ((D,), None if n == 0).
    """
    n, out, prefix = int(history_items.shape[0]), [], None
    t_cand = None
    if history_timestamps is not None:
        t_cand = int(request_time) if request_time is not None else (int(history_timestamps[-1]) if n else 0)
    for s in range(0, candidates.shape[0], micro_batch):
        cand = candidates[s : s + micro_batch]
        b = cand.shape[0]
        items = torch.cat([history_items.expand(b, n), cand[:, None]], 1).reshape(-1)  # (b * (n + 1),)
        offsets = torch.arange(b + 1, device=cand.device) * (n + 1)
        ts = None
        if history_timestamps is not None:
            tail = torch.full((b, 1), t_cand, dtype=history_timestamps.dtype, device=cand.device)
            ts = torch.cat([history_timestamps.expand(b, n), tail], 1).reshape(-1)
        states = model.encode(items, offsets, ts)
        out.append(states[offsets[1:] - 1])
        prefix = states[n - 1] if n else None
    return torch.cat(out, 0), prefix


@torch.no_grad()
def naive_score_candidates(
    model: HSTU,
    history_items: torch.Tensor,
    history_timestamps: torch.Tensor | None,
    candidates: torch.Tensor,
    micro_batch: int = 64,
    request_time: int | None = None,
    head: Head = "target",
) -> torch.Tensor:
    """score_candidates the slow way (for tests and the benchmark baseline)."""
    states, prefix = naive_candidate_states(
        model, history_items, history_timestamps, candidates, micro_batch, request_time
    )
    cache = PrefixCache([], int(history_items.shape[0]), 0.0, None, prefix)
    return _apply_head(model, head, states, cache, candidates)
