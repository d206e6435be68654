"""Sharded == single process: forward and backward of the sequential wrapper (EC) and the DLRM-style model
(EBC), for table-wise, row-wise and column-wise sharding, on 2 gloo processes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from genrec.data.batches import train_batches
from genrec.data.datasets import load_synthetic
from genrec.data.sequences import leave_one_out
from genrec.distributed.dlrm_next_item import DLRMNextItem, DLRMNextItemConfig, window_bags
from genrec.distributed.sequential import TABLE_KEY, ShardableSequential
from genrec.distributed.sharding import (
    describe_plan,
    load_full_tables_,
    local_table_shards,
    make_plan,
    shard,
)
from genrec.distributed.tests.multiproc import run_world
from genrec.models import build_model
from genrec.training.losses import next_item_loss

SHARDINGS = ("table-wise", "row-wise", "column-wise")
ATOL = 1e-5


def _batches(n: int = 2, bs: int = 8):
    split = leave_one_out(load_synthetic("tiny", 0).sequences)
    it = train_batches(split, bs, 20, seed=1)
    return split.data.num_items, [next(it) for _ in range(n)]


def _encoder(num_items: int, dim: int = 16):
    torch.manual_seed(0)
    # dim 16 splits into column shards of 8: the planner's column-wise shards are multiples of 4
    return build_model("hstu", num_items, max_len=20, dim=dim, num_layers=2, dropout=0.0)


@pytest.mark.parametrize("dim", [16, 50])  # 50 (hstu's default) is stored 52 wide: fbgemm needs multiples of 4
def test_wrapper_loss_equals_trainer_loss(dim: int) -> None:
    """Unsharded wrapper (EC table, rows looked up) == the SequentialModel + training/losses.py path."""
    V, (b, _) = _batches()
    model = _encoder(V, dim)
    wrapped = ShardableSequential(copy.deepcopy(model), device="cpu")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    states = model.encode(b.items, b.offsets, b.timestamps)
    ref = next_item_loss(states, b.targets, model.item_table(), 0.05, "sampled", 16, generator=g1, offsets=b.offsets)
    neg = torch.randint(1, V + 1, (b.num_sequences, 16), generator=g2)  # the draw next_item_loss makes
    got = wrapped(b.items, b.offsets, b.timestamps, b.targets, neg)
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=1e-5)
    ref.backward()
    got.backward()
    grad = wrapped.ec.embeddings["t_item"].weight.grad
    assert grad.shape[1] % 4 == 0 and not grad[:, dim:].any()  # the padding columns never learn
    torch.testing.assert_close(grad[:, :dim], model.item_emb.weight.grad, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(wrapped.full_table(), model.item_emb.weight)
    torch.testing.assert_close(wrapped.to_sequential(wrapped.full_table()).item_emb.weight, model.item_emb.weight)
    torch.testing.assert_close(wrapped.encoder.layers[0].uvqk.weight.grad, model.layers[0].uvqk.weight.grad)


def _check_dense_grads(dmp, ref_module, world: int, where: str) -> None:
    ref = dict(ref_module.named_parameters())
    tables = {k.removesuffix(".weight") for k in local_table_shards(dmp)}
    n = 0
    for name, p in dmp.named_parameters():
        if any(name.startswith(t) for t in tables):
            continue
        assert p.grad is not None, f"{where}: no gradient for {name}"
        torch.testing.assert_close(p.grad, ref[name].grad, atol=ATOL, rtol=1e-4, msg=f"{where}: {name}")
        n += 1
    assert n > 0


def _check_tables(dmp, before: dict[str, torch.Tensor], ref_grads: dict[str, torch.Tensor], world: int, where: str):
    """Fused SGD with lr 1 leaves shard = before - gradient of the rank-averaged loss (TorchRec divides the
    gradients it sends back by the world size, as DDP averages dense ones)."""
    shards = local_table_shards(dmp)
    assert shards, f"{where}: no table shards found"
    for key, parts in shards.items():
        for (r0, c0), t in parts:
            rows, cols = slice(r0, r0 + t.shape[0]), slice(c0, c0 + t.shape[1])
            want = before[key][rows, cols] - ref_grads[key][rows, cols]
            torch.testing.assert_close(t, want, atol=ATOL, rtol=1e-4, msg=f"{where}: table {key} shard {r0},{c0}")


def _sequential_case(rank: int, world: int, sharding: str, dim: int = 16) -> None:
    V, batches = _batches(world)
    encoder = _encoder(V, dim)
    ref = ShardableSequential(copy.deepcopy(encoder), device="cpu")
    negs = [torch.randint(1, V + 1, (b.num_sequences, 16), generator=torch.Generator().manual_seed(i))
            for i, b in enumerate(batches)]  # fmt: skip
    ref_losses = [ref(b.items, b.offsets, b.timestamps, b.targets, n) for b, n in zip(batches, negs, strict=True)]
    torch.stack(ref_losses).mean().backward()  # DDP averages over ranks
    full = {TABLE_KEY: ref.ec.embeddings["t_item"].weight.detach().clone()}
    grads = {TABLE_KEY: ref.ec.embeddings["t_item"].weight.grad}

    module = ShardableSequential(copy.deepcopy(encoder), device="meta")
    plan = make_plan(module, world, sharding, pg=dist.group.WORLD)
    assert {r["sharding_type"] for r in describe_plan(plan)} == {sharding.replace("-", "_")}
    dmp = shard(module, plan, dist.group.WORLD, torch.device("cpu"), emb_optimizer="sgd", lr=1.0)
    load_full_tables_(dmp, full)
    b, n = batches[rank], negs[rank]
    loss = dmp(b.items, b.offsets, b.timestamps, b.targets, n)
    torch.testing.assert_close(loss, ref_losses[rank].detach(), atol=ATOL, rtol=1e-5, msg=f"{sharding}: forward")
    loss.backward()
    _check_dense_grads(dmp, ref, world, f"sequential {sharding}")
    _check_tables(dmp, full, grads, world, f"sequential {sharding}")


def _dlrm_case(rank: int, world: int, sharding: str) -> None:
    V, batches = _batches(world)
    cfg = DLRMNextItemConfig(num_items=V, dim=16, hidden=32, hist_len=6, recent_len=3, dropout=0.0)
    torch.manual_seed(0)
    ref = DLRMNextItem(cfg, device="cpu")
    cands = [torch.randint(1, V + 1, (12,), generator=torch.Generator().manual_seed(i)) for i in range(world)]

    def loss_of(logits: torch.Tensor, b) -> torch.Tensor:
        return F.cross_entropy(logits, b.targets % 12)  # any differentiable function of all outputs

    ref_logits = [ref(b.items, b.offsets, c) for b, c in zip(batches, cands, strict=True)]
    torch.stack([loss_of(lg, b) for lg, b in zip(ref_logits, batches, strict=True)]).mean().backward()
    full = {k: v.detach().clone() for k, v in ref.state_dict().items() if "embedding_bags" in k}
    grads = {k: dict(ref.named_parameters())[k].grad for k in full}

    torch.manual_seed(0)
    module = DLRMNextItem(cfg, device="meta")
    module.top.load_state_dict(ref.top.state_dict())
    plan = make_plan(module, world, sharding, pg=dist.group.WORLD)
    dmp = shard(module, plan, dist.group.WORLD, torch.device("cpu"), emb_optimizer="sgd", lr=1.0)
    load_full_tables_(dmp, full)
    b = batches[rank]
    stride = max(len(x.items) for x in batches)  # the batch size all ranks agree on
    logits = dmp(b.items, b.offsets, cands[rank], stride)
    torch.testing.assert_close(logits, ref_logits[rank].detach(), atol=1e-4, rtol=1e-5, msg=f"dlrm {sharding}")
    loss_of(logits, b).backward()
    _check_dense_grads(dmp, ref, world, f"dlrm {sharding}")
    _check_tables(dmp, full, grads, world, f"dlrm {sharding}")


def _all_cases(rank: int, world: int) -> None:
    for sharding in SHARDINGS:
        _sequential_case(rank, world, sharding)
        _dlrm_case(rank, world, sharding)
    _sequential_case(rank, world, "row-wise", dim=50)  # the README's scale-out command, at hstu's default width


def test_two_process_sharded_equals_single_process() -> None:
    run_world(_all_cases, world=2, timeout_s=150)


def test_window_bags() -> None:
    items = torch.tensor([1, 2, 3, 4, 5])
    values, lengths = window_bags(items, torch.tensor([0, 3, 5]), 2)
    assert lengths.tolist() == [1, 2, 2, 1, 2]
    assert values.tolist() == [1, 1, 2, 2, 3, 4, 4, 5]


def test_planner_refuses_budget_too_small() -> None:
    V = 10_000
    module = ShardableSequential(_encoder(10), device="meta")
    module.ec = ShardableSequential(build_model("hstu", V, max_len=20, dim=64), device="meta").ec
    with pytest.raises(ValueError, match="fits 2 rank"):
        make_plan(module, 2, "table-wise", budget_bytes=V * 64 * 4 // 4)
