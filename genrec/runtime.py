"""Process-level tuning for CPU training and serving.

Every (B, H, n, n) attention temporary is tens of MB; glibc maps such blocks fresh and unmaps them on free,
so each one pays ~10k page faults. On this 2-core box that made SiLU over 10M floats 5-16x slower than the
arithmetic needs. PyTorch can back large CPU tensors with 2 MB transparent huge pages instead
(THP_MEM_ALLOC_ENABLE=1, read once at torch's first allocation), which removes the faults without keeping
freed memory around. `import genrec` sets it (unless the environment already says otherwise); entry points
that import torch before genrec should set it themselves.
"""

from __future__ import annotations

import os

import torch


def thp_enabled() -> bool:
    return os.environ.get("THP_MEM_ALLOC_ENABLE", "0") == "1"


def setup(threads: int | None = None) -> None:
    """Intra-op threads (default: all cores)."""
    torch.set_num_threads(threads or os.cpu_count() or 1)
