"""Distributed next-item training: item table sharded by TorchRec, encoder under DDP.

One host, N processes (gloo on CPU, nccl on GPU):
    torchrun --standalone --nproc-per-node 2 -m genrec.distributed.train --dataset ml-100k --out runs/dist
Several hosts (run on each; rank 0's address as the rendezvous endpoint):
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 \
        --rdzv-id genrec1 -m genrec.distributed.train --dataset ml-1m --out /shared/runs/dist
Without torchrun it runs as a world of one (same code path, DMP on one rank).

Data: each epoch's batches (training/batches.train_batches, --batch-size global, batch_size / N per rank)
are dealt round-robin, batch k to rank k mod N, the last < N batches dropped so every rank steps equally.
Validation: every rank scores its slice of the evaluated users (eval_users[rank::N]) against the full table
(gathered by chunked lookups); the ranks are all-gathered and the metrics computed once: exactly the
single-process numbers for the same weights.

Run folder: history.json, ckpt/config.json (run, model, world size, plan), ckpt/last (DCP: sharded table +
fused optimizer state, dense weights) + ckpt/last_dense_opt.pt + ckpt/last.json (resume on the same world
size), ckpt/best (DCP, model only); at the end the folder becomes a one-component bundle (genrec/bundle.py)
holding the best model gathered into a plain SequentialModel, so `genrec evaluate`, `genrec recommend`,
`genrec serve` and Recommender.from_bundle work on a distributed run as on any other.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import typer
from rich.console import Console

from genrec.bundle import BundleWriter, atomic_save, load_checkpoint, write_json
from genrec.data.batches import train_batches
from genrec.data.datasets import load_dataset
from genrec.data.sequences import Split, leave_one_out
from genrec.distributed.checkpoint import load_sharded, save_sharded
from genrec.distributed.sequential import TABLE_KEY, ShardableSequential, build_shardable
from genrec.distributed.sharding import (
    EMB_OPTIMIZERS,
    SHARDINGS,
    describe_plan,
    init_tables_normal_,
    local_table_shards,
    make_plan,
    shard,
    shard_bytes,
)
from genrec.evaluation.evaluate import evaluation_ranks, model_scorer
from genrec.evaluation.metrics import metrics_from_ranks
from genrec.runtime import setup
from genrec.training.loop import Epoch, LoopConfig, fit


@dataclass
class DistTrainConfig:
    model: str = "hstu"
    dataset: str = "synthetic"
    out: str = "runs/dist"
    epochs: int = 20
    batch_size: int = 128  # global: each of N ranks takes batch_size // N sequences per step
    lr: float = 1e-3  # dense AdamW
    emb_optimizer: str = "rowwise_adagrad"  # fused table optimizer (CPU: rowwise_adagrad | adagrad | sgd)
    emb_lr: float = 0.05
    num_negatives: int = 128
    sharding: str | None = None  # None: TorchRec's planner chooses (under budget_gb)
    budget_gb: float | None = None  # per-rank memory cap for the planner
    max_len: int | None = None
    dim: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    dropout: float | None = None
    patience: int = 5
    seed: int = 42
    threads: int | None = None
    max_steps_per_epoch: int | None = None  # benchmarks: cut epochs short
    eval: bool = True
    time_budget_s: float | None = None

    def model_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        for k in ("max_len", "dim", "num_layers", "num_heads", "dropout"):
            if getattr(self, k) is not None:
                kw[k] = getattr(self, k)
        kw.setdefault("max_len", 200)
        return kw


@dataclass
class Dist:
    rank: int
    world: int
    device: torch.device
    pg: dist.ProcessGroup


def init_distributed(timeout_s: float = 300) -> Dist:
    """Join the torchrun group (env://), or make a world of one on a free port when not launched."""
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if "RANK" not in os.environ:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return Dist(rank, world, device, dist.group.WORLD)  # type: ignore[arg-type]


def rank_batches(split: Split, cfg: DistTrainConfig, max_len: int, epoch: int, d: Dist):
    """This rank's share of epoch `epoch`: batch k of the (deterministic) epoch goes to rank k mod N."""
    per_rank = max(cfg.batch_size // d.world, 1)
    batches = list(train_batches(split, per_rank, max_len, cfg.seed * 100_003 + epoch))
    usable = len(batches) // d.world * d.world
    mine = batches[d.rank : usable : d.world]
    return mine[: cfg.max_steps_per_epoch] if cfg.max_steps_per_epoch else mine


def dense_parameters(dmp: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Everything but the (fused-optimizer) table shards."""
    tables = {k.removesuffix(".weight") for k in local_table_shards(dmp)}
    return [p for n, p in dmp.named_parameters() if not any(n.startswith(t) for t in tables) and p.requires_grad]


def distributed_eval(module: ShardableSequential, split: Split, which: str, d: Dist, batch_size: int = 256) -> dict:
    """Full-catalog metrics over all evaluated users, each rank scoring its slice (collective)."""
    table = module.full_table()  # (V + 1, D) on every rank
    model = module.to_sequential(table.cpu()).to(d.device)
    mine = replace(split, eval_users=split.eval_users[d.rank :: d.world])
    ranks = evaluation_ranks(model_scorer(model), mine, which, model.config.max_len, batch_size, str(d.device))
    gathered: list[Any] = [None] * d.world
    dist.all_gather_object(gathered, ranks)
    return metrics_from_ranks(np.concatenate(gathered))


def build(cfg: DistTrainConfig, num_items: int, dataset_name: str, d: Dist):
    """The shardable model, its plan and DMP; tables initialised N(0, 0.02) shard by shard, row 0 zero."""
    torch.manual_seed(cfg.seed)  # same dense init on every rank (DDP also broadcasts rank 0's)
    module = build_shardable(cfg.model, num_items, device="meta", **cfg.model_kwargs())
    budget = int(cfg.budget_gb * 2**30) if cfg.budget_gb else None
    plan = make_plan(module, d.world, cfg.sharding, budget, d.device.type, d.pg)
    dmp = shard(module, plan, d.pg, d.device, cfg.emb_optimizer, cfg.emb_lr)
    init_tables_normal_(dmp, 0.02, cfg.seed, zero_rows={TABLE_KEY: 0})
    return dmp, plan


class ShardedCheckpoint:
    """The loop's Checkpoint for a sharded run: ckpt/last (DCP: table shards + fused optimizer state, dense
    weights), ckpt/last_dense_opt.pt, ckpt/last.json (the loop's part, the world size and the model config);
    history.json beside. Save and load are collective; resume needs the same world size."""

    def __init__(self, run: Path, dmp: torch.nn.Module, opt: torch.optim.Optimizer, d: Dist, meta: dict) -> None:
        self.run, self.dmp, self.opt, self.d, self.meta = run, dmp, opt, d, meta
        self.path = run / "ckpt" / "last.json"

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, loop: dict[str, Any]) -> None:
        ck = self.run / "ckpt"
        save_sharded(ck / "last", self.dmp)
        if self.d.rank == 0:
            atomic_save(self.opt.state_dict(), ck / "last_dense_opt.pt")
            scalars = {k: v for k, v in loop.items() if k != "torch_rng"}  # each epoch reseeds every rank
            write_json({**scalars, "world_size": self.d.world, "model": self.meta["model"]}, self.path)
            write_json(json.loads(loop["history_json"]), self.run / "history.json")
            write_json(self.meta, ck / "config.json")
        dist.barrier()

    def load(self) -> dict[str, Any]:
        state = json.loads(self.path.read_text())
        if state["world_size"] != self.d.world or state["model"] != self.meta["model"]:
            raise SystemExit(f"{self.run} holds a checkpoint of another model or world size ({state['world_size']})")
        load_sharded(self.path.parent / "last", self.dmp)
        self.opt.load_state_dict(load_checkpoint(self.path.parent / "last_dense_opt.pt"))
        return state


def train(cfg: DistTrainConfig, console: Console | None = None) -> dict[str, Any]:
    d = init_distributed()
    setup(cfg.threads)
    console = console or Console(quiet=d.rank != 0)
    run = Path(cfg.out)
    ds = load_dataset(cfg.dataset, seed=cfg.seed)
    split = leave_one_out(ds.sequences)
    dmp, plan = build(cfg, ds.sequences.num_items, ds.sequences.name, d)
    module: ShardableSequential = dmp.module  # type: ignore[assignment]
    opt = torch.optim.AdamW(dense_parameters(dmp), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    meta = {
        "train": asdict(cfg),
        "model": module.config.to_dict(),
        "dataset": ds.sequences.summary(),
        "world_size": d.world,
        "plan": describe_plan(plan),
    }
    ck = run / "ckpt"
    last = ShardedCheckpoint(run, dmp, opt, d, meta)
    if d.rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        ck.mkdir(exist_ok=True)
        if not last.exists():  # a resumed run's config.json is rewritten once its checkpoint matched (save)
            write_json(meta, ck / "config.json")
    mb = shard_bytes(dmp) / 2**20
    console.print(
        f"[bold]{cfg.model}[/] on {ds.sequences.name}, {d.world} rank(s) ({d.device.type}): "
        + ", ".join(f"{r['table']} {r['sharding_type']}" for r in meta["plan"])
        + f"; rank 0 holds {mb:,.1f} MiB of table shards"
    )
    c = module.config

    def train_epoch(ep: Epoch) -> dict[str, float]:
        seed = cfg.seed * 100_003 + ep.number * 101 + d.rank  # dropout differs per rank
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        batches = rank_batches(split, cfg, c.max_len, ep.number, d)
        ep.start(total=sum(b.num_sequences for b in batches), unit="seq")
        tot, n_seq, steps = 0.0, 0, 0
        for batch in batches:
            b = batch.to(d.device)
            neg = torch.randint(1, c.num_items + 1, (b.num_sequences, cfg.num_negatives), generator=gen)
            loss = dmp(b.items, b.offsets, b.timestamps, b.targets, neg.to(d.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # table shards update here (fused optimizer)
            opt.step()
            tot += loss.item()
            steps += 1
            n_seq += b.num_sequences
            ep.step(b.num_sequences, loss=loss.item())
        secs = ep.seconds()
        stats = torch.tensor([tot, steps, n_seq], dtype=torch.float64)
        dist.all_reduce(stats)
        return {"loss": stats[0].item() / max(stats[1].item(), 1), "seconds": secs, "seq_per_s": stats[2].item() / secs}

    def describe(rec: dict[str, Any]) -> str:
        v = rec["valid"]
        return f"loss {rec['loss']:.4f}  {rec['seq_per_s']:7.0f} seq/s (all ranks)" + (
            f"  valid NDCG@10 {v['NDCG@10']:.4f} HR@10 {v['HR@10']:.4f}" if v else ""
        )

    def any_rank(stop: bool) -> bool:  # every rank measures its own time: one decision for all
        flag = torch.tensor([float(stop)], device=d.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    loop = LoopConfig(cfg.epochs, "NDCG@10" if cfg.eval else None, "max", cfg.patience if cfg.eval else None,
                      cfg.time_budget_s)  # fmt: skip
    res = fit(
        dmp,
        train_epoch,
        loop,
        (lambda: distributed_eval(module, split, "valid", d)) if cfg.eval else None,
        checkpoint=last,
        keep_best=False,  # the table is sharded: the best epoch is saved as a sharded checkpoint
        agree=any_rank,
        on_best=(lambda epoch: save_sharded(ck / "best", dmp, with_optimizer=False)) if cfg.eval else None,
        describe=describe,
        console=console,
    )
    history, best_epoch = res.history, res.best_epoch if cfg.eval else 0
    best = res.best_score if res.best_score is not None else -1.0
    result = {"history": history, "best_epoch": best_epoch, "best_valid": best, "world_size": d.world}
    if cfg.eval and best_epoch:
        load_sharded(ck / "best", dmp, with_optimizer=False)
        table = module.full_table()
        if d.rank == 0:
            model = module.to_sequential(table.cpu())
            best_valid = next((h.get("valid", {}) for h in history if h["epoch"] == best_epoch), {})
            metrics = {"best_epoch": best_epoch, "best_valid": best_valid, "world_size": d.world}
            writer = BundleWriter(run, ds, data_name=cfg.dataset)
            config = {"model": meta["model"], "train": asdict(cfg), "world_size": d.world, "plan": meta["plan"]}
            writer.add_component(cfg.model, cfg.model, "retrieval", config, model.state_dict(), metrics)
            writer.set_metrics(metrics)
            writer.commit()
        dist.barrier()
    return result


def load_distributed_run(run_dir: str | Path, which: str = "best") -> tuple[torch.nn.Module, dict[str, Any]]:
    """One process, no process group: the model of a distributed run's sharded checkpoint (written by any
    number of ranks), reassembled into a plain SequentialModel for evaluation or serving."""
    from genrec.distributed.checkpoint import load_unsharded
    from genrec.models import model_from_config

    run = Path(run_dir)
    meta = json.loads((run / "ckpt" / "config.json").read_text())
    module = ShardableSequential(model_from_config(meta["model"]), device="cpu", copy_weights=False)
    load_unsharded(run / "ckpt" / which, module)
    model = module.to_sequential(module.ec.embeddings["t_item"].weight.detach().clone())
    return model, meta


app = typer.Typer(add_completion=False)


@app.command()
def main(
    model: str = typer.Option("hstu", help="sasrec | hstu | hstu-large"),
    dataset: str = typer.Option("synthetic", help="ml-1m | ml-100k | amazon-beauty | synthetic[:SIZE] | PATH"),
    out: Path = typer.Option(Path("runs/dist")),
    epochs: int = typer.Option(20),
    batch_size: int = typer.Option(128, help="global batch (split over ranks)"),
    lr: float = typer.Option(1e-3, help="dense AdamW learning rate"),
    emb_optimizer: str = typer.Option("rowwise_adagrad", help=" | ".join(EMB_OPTIMIZERS) + " (adam: CUDA only)"),
    emb_lr: float = typer.Option(0.05, help="fused table optimizer learning rate"),
    num_negatives: int = typer.Option(128),
    sharding: str | None = typer.Option(None, help=" | ".join(SHARDINGS) + " (default: the planner chooses)"),
    budget_gb: float | None = typer.Option(None, help="per-rank memory budget for the planner (GiB)"),
    max_len: int | None = typer.Option(None),
    dim: int | None = typer.Option(None),
    layers: int | None = typer.Option(None),
    heads: int | None = typer.Option(None),
    dropout: float | None = typer.Option(None),
    patience: int = typer.Option(5),
    seed: int = typer.Option(42),
    threads: int | None = typer.Option(None, help="intra-op threads per rank"),
    time_budget: float | None = typer.Option(None, help="minutes of training"),
) -> None:
    """Train a sequential model with its item table sharded over the torchrun world."""
    cfg = DistTrainConfig(
        model=model, dataset=dataset, out=str(out), epochs=epochs, batch_size=batch_size, lr=lr,
        emb_optimizer=emb_optimizer, emb_lr=emb_lr, num_negatives=num_negatives, sharding=sharding,
        budget_gb=budget_gb, max_len=max_len, dim=dim, num_layers=layers, num_heads=heads, dropout=dropout,
        patience=patience, seed=seed, threads=threads, time_budget_s=time_budget * 60 if time_budget else None,
    )  # fmt: skip
    try:
        train(cfg)
    except (ValueError, FileNotFoundError) as e:
        Console(stderr=True).print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(nproc_per_node: int, args: list[str]) -> int:
    """Re-launch `genrec.distributed.train ARGS` on this host as N processes via torch.distributed.run
    (the library behind torchrun; --standalone picks a free rendezvous port). Returns the exit code."""
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    targs = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(nproc_per_node), "-m", "genrec.distributed.train", *args]
    )
    try:
        torchrun(targs)
    except Exception as e:  # ChildFailedError: the failing rank's traceback is already on stderr
        Console(stderr=True).print(f"[red]distributed training failed:[/] {type(e).__name__}")
        return 1
    return 0


def launch_train(nproc_per_node: int, **options: Any) -> int:
    """`genrec train ... --nproc-per-node N`: the CLI's keyword options as flags of this module."""
    argv: list[str] = []
    for k, v in options.items():
        if v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    return launch(nproc_per_node, argv)


def _exit_rank() -> None:
    """Run the app, then leave without interpreter finalization: after destroy_process_group a gloo / c10d worker
    thread can still be joinable while C++ statics are torn down, and the rank aborts ("terminate called without
    an active exception": ~1 exit in 8 of the distributed tests). Every file is
    written (atomic saves behind barriers) by then, so only the streams need flushing."""
    try:
        app()
        code = 0
    except SystemExit as e:  # typer ends with SystemExit(code)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_rank()
