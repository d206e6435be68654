"""Process-level tuning for CPU training and serving: intra-op threads and denormals. The trainer's allocator
setting is genrec/memory.py.

Denormals (|x| < 1.2e-38) are flushed to zero: Adam's second moments of rarely-seen item rows decay by beta2 every
step into that range, where x86 arithmetic takes a slow path; an ML-1M hstu epoch then grew from 3.9 to 4.25 s over
six epochs, and stays at 3.9 s with the flush (measured; benchmarks/training_throughput.py, variant +ftz). GPUs
flush them in most kernels anyway. The trainer flushes them while it trains (flush_denormals)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def setup(threads: int | None = None) -> None:
    """Intra-op threads (default: all cores)."""
    torch.set_num_threads(threads or os.cpu_count() or 1)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Denormals read and written as zero inside the block (x86 FTZ/DAZ), the IEEE default restored after, so a
    process that trains in-process (a notebook, the tests) keeps its floating-point state."""
    torch.set_flush_denormal(True)  # returns False where the CPU cannot (no SSE3): nothing changes then
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
