"""Sharding any module that holds TorchRec EmbeddingCollection / EmbeddingBagCollection tables.

    plan = make_plan(model, world_size, sharding="row-wise" | "table-wise" | "column-wise" | None,
                     budget_bytes=per-rank cap, device="cpu" | "cuda", pg=group)
    dmp = shard(model, plan, pg, device, emb_optimizer="rowwise_adagrad", lr=0.05)

The module should be built with its tables on the meta device (nothing is allocated before sharding);
DistributedModelParallel then gives each rank only its shards, and wraps everything else in DDP.
Tables train with a fused optimizer inside the TBE kernel (no table gradient is ever materialised); on
CPU fbgemm offers EXACT_ROWWISE_ADAGRAD / EXACT_ADAGRAD / EXACT_SGD only, on CUDA also ADAM.

Gradient semantics: DDP averages dense gradients over ranks, and TorchRec's all-to-all backward divides the
table gradients it returns by the world size (comm_ops gradient division, on by default), so every weight
sees the gradient of the rank-averaged loss, as a single process on the concatenated batch would (tested).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.types import ModuleSharder, ShardingEnv, ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

SHARDINGS = {
    "table-wise": ShardingType.TABLE_WISE.value,
    "row-wise": ShardingType.ROW_WISE.value,
    "column-wise": ShardingType.COLUMN_WISE.value,
}
EMB_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd", "adam")
WIDTH_MULTIPLE = 4  # fbgemm's TBE kernels take embedding widths that are multiples of 4 (else an assert in a rank)


def table_width(dim: int) -> int:
    """Stored width of a shardable table of `dim` columns: `dim` rounded up to WIDTH_MULTIPLE. The padding columns
    get no gradient and are sliced off every lookup (hstu's d=50 is stored 52 wide); with row-wise Adagrad the mean
    squared gradient of a row then runs over 52 columns, i.e. its steps are sqrt(52/50) = 1.02x larger."""
    return -(-dim // WIDTH_MULTIPLE) * WIDTH_MULTIPLE


class RowWiseCapableEBCSharder(EmbeddingBagCollectionSharder):
    """TorchRec ships row-wise EBC sharding for CUDA only; its CPU kernels (fused TBE + gloo
    all-to-all / reduce-scatter) handle it fine, so allow it on CPU too."""

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = super().sharding_types(compute_device_type)
        return types if ShardingType.ROW_WISE.value in types else [*types, ShardingType.ROW_WISE.value]


def sharders() -> list[ModuleSharder[nn.Module]]:
    return [EmbeddingCollectionSharder(), RowWiseCapableEBCSharder()]  # type: ignore[list-item]


def embedding_tables(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{table name: (rows, dim)} of every EC / EBC table in `model`."""
    out: dict[str, tuple[int, int]] = {}
    for m in model.modules():
        if isinstance(m, EmbeddingCollection | EmbeddingBagCollection):
            configs = m.embedding_configs() if isinstance(m, EmbeddingCollection) else m.embedding_bag_configs()
            for c in configs:
                if c.name in out:
                    raise ValueError(f"two embedding tables are named {c.name!r}; table names must be unique")
                out[c.name] = (c.num_embeddings, c.embedding_dim)
    return out


def topology(world_size: int, device: str = "cpu", budget_bytes: int | None = None) -> Topology:
    """Per-rank memory cap: on CPU the planner places tables in DDR, on CUDA in HBM."""
    if budget_bytes is None:
        return Topology(world_size=world_size, compute_device=device)
    if device == "cpu":
        return Topology(world_size=world_size, compute_device=device, ddr_cap=budget_bytes, hbm_cap=0)
    return Topology(world_size=world_size, compute_device=device, hbm_cap=budget_bytes)


def planner_for(
    model: nn.Module, world_size: int, sharding: str | None = None, budget_bytes: int | None = None, device: str = "cpu"
) -> EmbeddingShardingPlanner:
    constraints = None
    if sharding is not None:
        if sharding not in SHARDINGS:
            raise ValueError(f"unknown sharding {sharding!r}; choose from {', '.join(SHARDINGS)}")
        constraints = {
            name: ParameterConstraints(sharding_types=[SHARDINGS[sharding]]) for name in embedding_tables(model)
        }
    return EmbeddingShardingPlanner(topology=topology(world_size, device, budget_bytes), constraints=constraints)


def make_plan(
    model: nn.Module,
    world_size: int,
    sharding: str | None = None,
    budget_bytes: int | None = None,
    device: str = "cpu",
    pg: dist.ProcessGroup | None = None,
) -> ShardingPlan:
    """TorchRec's planner under an optional per-rank memory cap; `sharding` forces one type for every table.
    With a process group the plan is computed on rank 0 and broadcast (all ranks must call)."""
    odd = {name: d for name, (_, d) in embedding_tables(model).items() if d % WIDTH_MULTIPLE}
    if odd:
        raise ValueError(f"tables {odd}: fbgemm shards widths that are multiples of {WIDTH_MULTIPLE} (see table_width)")
    planner = planner_for(model, world_size, sharding, budget_bytes, device)
    try:
        if pg is not None:
            return planner.collective_plan(model, sharders(), pg)
        return planner.plan(model, sharders())
    except PlannerError as e:
        budget = f"{budget_bytes / 2**30:.2f} GiB per rank" if budget_bytes else "the device memory"
        raise ValueError(
            f"no sharding of tables {embedding_tables(model)} fits {world_size} rank(s) under {budget}: {e}"
        ) from None


def describe_plan(plan: ShardingPlan) -> list[dict]:
    """One row per table: sharding type, kernel, and each shard's (rank, row/col offsets, sizes)."""
    rows = []
    for path, module_plan in plan.plan.items():
        for table, ps in module_plan.items():  # type: ignore[union-attr]
            shards = []
            for s in ps.sharding_spec.shards if ps.sharding_spec is not None else []:
                shards.append({"rank": s.placement.rank(), "offsets": s.shard_offsets, "sizes": s.shard_sizes})
            rows.append(
                {
                    "module": path,
                    "table": table,
                    "sharding_type": ps.sharding_type,
                    "compute_kernel": ps.compute_kernel,
                    "ranks": ps.ranks,
                    "shards": shards,
                }
            )
    return rows


def fused_optimizer_spec(name: str, lr: float, device: str) -> tuple[type[torch.optim.Optimizer], dict]:
    """(optimizer class, kwargs) that TorchRec turns into a fused TBE optimizer."""
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    if name == "rowwise_adagrad":
        return RowWiseAdagrad, {"lr": lr, "eps": 1e-8}
    if name == "adagrad":
        return torch.optim.Adagrad, {"lr": lr, "eps": 1e-8}
    if name == "sgd":
        return torch.optim.SGD, {"lr": lr}
    if name == "adam":
        if device == "cpu":
            raise ValueError("fbgemm has no fused Adam on CPU; use rowwise_adagrad, adagrad or sgd")
        return torch.optim.Adam, {"lr": lr, "betas": (0.9, 0.98)}
    raise ValueError(f"unknown embedding optimizer {name!r}; choose from {', '.join(EMB_OPTIMIZERS)}")


def table_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    for m in model.modules():
        if isinstance(m, EmbeddingCollection | EmbeddingBagCollection):
            yield from m.parameters()


def shard(
    model: nn.Module,
    plan: ShardingPlan,
    pg: dist.ProcessGroup,
    device: torch.device,
    emb_optimizer: str = "rowwise_adagrad",
    lr: float = 0.05,
) -> DistributedModelParallel:
    """Tables -> fused-optimizer shards placed by `plan`; the rest -> DDP (rank 0's weights broadcast)."""
    opt_cls, kwargs = fused_optimizer_spec(emb_optimizer, lr, device.type)
    apply_optimizer_in_backward(opt_cls, list(table_parameters(model)), kwargs)
    return DistributedModelParallel(
        model, env=ShardingEnv.from_process_group(pg), device=device, plan=plan, sharders=sharders()
    )


def local_table_shards(dmp: nn.Module) -> dict[str, list[tuple[list[int], torch.Tensor]]]:
    """{state_dict key of a table: [(global [row, col] offset, local shard tensor view), ...]} on this rank."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    out: dict[str, list[tuple[list[int], torch.Tensor]]] = {}
    for key, value in dmp.state_dict().items():
        if isinstance(value, ShardedTensor):
            out[key] = [(list(s.metadata.shard_offsets), s.tensor) for s in value.local_shards()]
    return out


@torch.no_grad()
def load_full_tables_(dmp: nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Copy each rank's slice of full (unsharded) tables into its shards. full: {state_dict key: (rows, dim)}."""
    for key, shards in local_table_shards(dmp).items():
        if key not in full:
            raise KeyError(f"no full weight given for sharded table {key!r}")
        for (r0, c0), t in shards:
            t.copy_(full[key][r0 : r0 + t.shape[0], c0 : c0 + t.shape[1]])


@torch.no_grad()
def init_tables_normal_(dmp: nn.Module, std: float, seed: int, zero_rows: dict[str, int] | None = None) -> None:
    """N(0, std) table init done shard by shard (a 10M-row table is never built whole on one rank);
    each shard draws from a generator seeded by (seed, its global offset). zero_rows: {key: row} to zero."""
    for key, shards in local_table_shards(dmp).items():
        for (r0, c0), t in shards:
            g = torch.Generator().manual_seed(seed * 1_000_003 + r0 * 4099 + c0)
            for s in range(0, t.shape[0], 1 << 18):  # in blocks: no second full-size temporary
                block = t[s : s + (1 << 18)]
                block.copy_(torch.randn(block.shape, generator=g) * std)
            row = (zero_rows or {}).get(key)
            if row is not None and r0 <= row < r0 + t.shape[0]:
                t[row - r0].zero_()


def shard_bytes(dmp: nn.Module) -> int:
    """Bytes of embedding-table shards held by this rank (weights only, no optimizer state)."""
    return sum(t.numel() * t.element_size() for shards in local_table_shards(dmp).values() for _, t in shards)


def fused_optimizer_bytes(dmp: nn.Module) -> int:
    """Bytes of the fused table optimizer's state (e.g. one float per row for row-wise Adagrad) on this rank."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    total = 0

    def visit(x: object) -> None:
        nonlocal total
        if isinstance(x, ShardedTensor):
            total += sum(s.tensor.numel() * s.tensor.element_size() for s in x.local_shards())
        elif isinstance(x, dict):
            for v in x.values():
                visit(v)

    visit(dmp.fused_optimizer.state_dict()["state"])  # type: ignore[attr-defined]
    return total
