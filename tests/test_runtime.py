"""Process settings: genrec/memory.py (freed blocks reused without page faults), genrec/runtime.py (denormals)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from genrec.runtime import flush_denormals

PROBE = """
import json, resource
import torch
from genrec.memory import keep_freed_memory

kept = keep_freed_memory()  # what genrec.training.train does first

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

x = torch.ones(6 << 20)  # a 24 MB temporary, touched: glibc's defaults map it fresh, the kept heap grows by it
before = rss()
del x
print(json.dumps({"released_mb": (before - rss()) / 2**20, "kept": kept}))
"""


def probe(setting: str) -> dict:
    env = {**os.environ, "GENREC_MALLOC": setting, "THP_MEM_ALLOC_ENABLE": "0"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_kept_heap_holds_freed_blocks_for_the_next_step() -> None:
    """The defaults unmap a freed 24 MB block at once (the next step faults it in again); the kept heap holds it."""
    kept, default = probe("keep"), probe("default")
    assert kept["kept"] and not default["kept"]
    assert default["released_mb"] > 20
    assert kept["released_mb"] < 2


def test_flush_denormals_inside_the_block_only() -> None:
    tiny = torch.tensor([1e-39])  # below fp32's smallest normal number (1.2e-38)
    with flush_denormals():
        assert (tiny * 1.0).item() == 0.0  # read as zero, not through the slow denormal path
    assert (tiny * 1.0).item() > 0.0  # the IEEE default is back
