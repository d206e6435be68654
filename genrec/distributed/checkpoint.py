"""Sharded checkpoints with torch.distributed.checkpoint (DCP).

save_sharded(dir, dmp)       every rank writes its own table shards (+ fused optimizer state); dense
                             weights are written once. Written to dir.tmp, then renamed (a kill never
                             leaves a torn checkpoint).
load_sharded(dir, dmp)       same world size (resume): each rank reads back exactly its shards.
load_unsharded(dir, module)  one process, no process group: the full tables of an N-rank checkpoint are
                             reassembled into an unsharded module (evaluation, serving, export).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_sharded(path: str | Path, dmp: nn.Module, with_optimizer: bool = True) -> None:
    """Collective: all ranks call. Model state (ShardedTensors for tables) and the fused table optimizer state."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if _is_rank0() and tmp.exists():
        shutil.rmtree(tmp)
    _barrier()
    state: dict = {"model": dmp.state_dict()}
    if with_optimizer:
        state["emb_opt"] = dmp.fused_optimizer.state_dict()  # type: ignore[attr-defined]
    dcp.save(state, checkpoint_id=str(tmp))
    _barrier()
    if _is_rank0():
        old = path.with_name(path.name + ".old")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        if old.exists():
            shutil.rmtree(old)
    _barrier()


def load_sharded(path: str | Path, dmp: nn.Module, with_optimizer: bool = True) -> None:
    """Collective: restore a checkpoint written by the same world size and plan, in place."""
    state: dict = {"model": dmp.state_dict()}
    if with_optimizer:
        state["emb_opt"] = dmp.fused_optimizer.state_dict()  # type: ignore[attr-defined]
    dcp.load(state, checkpoint_id=str(path))
    dmp.load_state_dict(state["model"])
    if with_optimizer:
        dmp.fused_optimizer.load_state_dict(state["emb_opt"])  # type: ignore[attr-defined]


def load_unsharded(path: str | Path, module: nn.Module) -> nn.Module:
    """Single process: fill an unsharded module (tables allocated, same state_dict keys) from any world size."""
    if not Path(path, ".metadata").exists():
        raise FileNotFoundError(f"{path} is not a torch.distributed.checkpoint folder (no .metadata)")
    state = {"model": {k: v for k, v in module.state_dict().items()}}
    with torch.no_grad():
        dcp.load(state, checkpoint_id=str(path), no_dist=True)
    module.load_state_dict(state["model"])
    return module
