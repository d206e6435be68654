"""Process memory settings for single-process CPU training (genrec.training.train applies them).

A training step allocates and frees the same tens of large temporaries (attention scores, loss logits, their
gradients) every step. glibc's defaults hand blocks above its mmap threshold to fresh mmap()s and give freed heap
top back to the kernel, so each step pays page faults on memory it just released: in the ML-1M hstu trainer, one
(128, 200, 128) cast took ~20 ms instead of ~1 ms. Raising the mmap threshold to glibc's maximum (32 MB) and never
trimming keeps those blocks in the heap, where the next step reuses them fault-free: hstu epochs 4.1 -> 3.75 s,
hstu-large 15.4 -> 14.3 s on one thread (measured; benchmarks/training_throughput.py, variant +heap). The process
keeps its peak heap instead of returning it between steps, which is what a caching allocator does too, so only the
trainer applies it: importing genrec leaves a process's allocator alone.

Transparent huge pages for large tensors (torch's THP_MEM_ALLOC_ENABLE=1, genrec's earlier default) were the first
answer to the same faults; with the heap kept they are slower (madvise'd pages compact on fault), so they are off
unless the environment asks for them. GENREC_MALLOC=default leaves glibc's settings alone. mallopt applies to the
allocations that follow it, so calling it after torch is imported is fine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (HEAP_MAX_SIZE / 2 on 64-bit)
TOP_PAD = 64 << 20  # grow the heap in 64 MB steps: fewer brk() calls while the first steps find their peak
TRIM_THRESHOLD = 2**31 - 1  # never give the heap top back between steps


def keep_freed_memory() -> bool:
    """Tune glibc malloc so freed large blocks stay in the heap. False where libc is not glibc (nothing changed)."""
    if os.environ.get("GENREC_MALLOC", "keep") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        )
    )
