"""Process-level tuning for CPU training and serving.

glibc serves large allocations (> 32 MB by default) with fresh mmap'd pages and unmaps them on free, so
every (B, H, n, n) attention temporary pays ~10k page faults: on a 2-core box that made SiLU over 10M
floats 16x slower (24 ms vs 1.5 ms). Keeping big blocks in the heap and never trimming it removes that.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = False


def tune_allocator() -> bool:
    """Ask glibc to reuse freed large blocks instead of returning them to the OS. Idempotent."""
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return _tuned
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except OSError:  # not glibc (e.g. musl): nothing to tune
        ok = False
    _tuned = ok
    return ok


def setup(threads: int | None = None) -> None:
    """Allocator tuning plus intra-op threads (default: all cores)."""
    tune_allocator()
    torch.set_num_threads(threads or os.cpu_count() or 1)
