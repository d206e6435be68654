"""Jagged <-> padded conversions. A jagged batch is values (sum_i N_i, ...) plus offsets (B + 1,)."""

from __future__ import annotations

import torch


def lengths_from_offsets(offsets: torch.Tensor) -> torch.Tensor:
    return offsets[1:] - offsets[:-1]


def padded_index(offsets: torch.Tensor, max_len: int) -> torch.Tensor:
    """Row of each jagged element in a (B * max_len) right-padded layout. offsets: (B + 1,) -> (sum N,)."""
    lengths = lengths_from_offsets(offsets)
    batch = torch.repeat_interleave(torch.arange(len(lengths), device=offsets.device), lengths)
    pos = torch.arange(int(offsets[-1]), device=offsets.device) - offsets[:-1][batch]
    return batch * max_len + pos


def positions(offsets: torch.Tensor) -> torch.Tensor:
    """Position of each element inside its own sequence, from 0. (sum N,)."""
    lengths = lengths_from_offsets(offsets)
    batch = torch.repeat_interleave(torch.arange(len(lengths), device=offsets.device), lengths)
    return torch.arange(int(offsets[-1]), device=offsets.device) - offsets[:-1][batch]


def to_padded(values: torch.Tensor, index: torch.Tensor, batch: int, max_len: int) -> torch.Tensor:
    """values: (sum N, *F) -> (B, max_len, *F), zeros where padded.

    A batch whose sequences all have max_len elements (sum N = B * max_len; length-sorted training batches of long
    users) needs no padding: the result is then a view of `values`, not a copy (callers must not write into it)."""
    if values.shape[0] == batch * max_len:  # index is the identity: every sequence is full
        return values.view(batch, max_len, *values.shape[1:])
    out = values.new_zeros((batch * max_len, *values.shape[1:]))
    out = out.index_copy(0, index, values)
    return out.view(batch, max_len, *values.shape[1:])


def to_jagged(padded: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, max_len, *F) -> (sum N, *F). With no padding (every sequence full) a reshape, a view where possible."""
    flat = padded.reshape(-1, *padded.shape[2:])
    return flat if index.shape[0] == flat.shape[0] else flat.index_select(0, index)


def last_positions(offsets: torch.Tensor) -> torch.Tensor:
    """Index of each sequence's last element in the values array. (B,)."""
    return offsets[1:] - 1
