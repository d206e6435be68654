"""Training throughput of HSTU on ML-1M: the first implementation vs each change since, as ratios in one run.

Variants (each in its own subprocess, because the allocator setting is per process):
    v0        first implementation: masked attention (mask multiply + divide on the (n, n) scores),
              glibc's malloc defaults (4 KB pages, large blocks mmap'd fresh and unmapped on free), fp32,
              sampled softmax with 128 negatives shared by the batch
    +thp      large tensors on transparent huge pages (THP_MEM_ALLOC_ENABLE=1, genrec's earlier default)
    +fused    attention as one bias-add-matmul + SiLU + matmul (causal mask folded into the bias, 1/n into V)
    +bf16     bfloat16 autocast for training
    +lean     dropout masks from numpy's PCG64 instead of torch's mt19937 per element (genrec/ops/dropout.py), and
              the loss's logsumexp without its max-shift passes when the logits are provably bounded
    +strips   causal query strips in the padded attention (the all-zero upper (n, n) tiles are skipped), and the
              loss's logsumexp as one autograd function (exponentials reused as the gradient, accidental hits found
              through a membership table and zeroed by index instead of masked passes)
    +heap     huge pages off; glibc keeps freed blocks up to 32 MB in the heap (genrec/memory.py, applied by the trainer),
              so every step reuses the last step's memory without page faults
    +ftz      denormals flushed to zero while the trainer trains (genrec/runtime.py): Adam's decaying second moments slow each
              epoch a little more than the last
    +trim     the padded strips' backward written out (dK, dV accumulated in place instead of autograd's
              zero-filled full-size gradient per key slice), no padding copies for batches whose sequences are all
              full (the padded layout is then a view), fused AdamW, the loss's operands saved in bf16 (its backward
              products ran in fp32) and its exponentials in bf16 with fp32 sums, dropout bits from PCG64's raw output
and the loss variants used for quality: per-sequence sampled (128) and full softmax, on the final path; "v0
per-seq-sampled" is the first implementation with that loss, so that the final path can be compared with it on an
equal loss (the first implementation's batch-shared negatives learn badly: see genrec/training/losses.py).
Memory settings are per process: each variant runs in its own process started with its own environment.
Variants before +lean run torch's dropout and the max-shift logsumexp, as the first implementation did.

    python benchmarks/training_throughput.py [--steps 12] [--threads 2] [--rounds 3]
    python benchmarks/training_throughput.py --quality-epochs 10 --threads 1   # same-loss quality check

--quality-epochs E trains each model E epochs through the real trainer (genrec.training.train, validation
NDCG@10 after every epoch, seed 42) twice: "v0 per-seq-sampled" (first implementation, fp32) and "+trim
per-seq-sampled" (final path), and reports training seconds per epoch (validation excluded) and validation
NDCG@10 per epoch for both: the speed-up is only worth having if the curves agree.

Writes benchmarks/results/training_throughput.json and .md. Steps are timed after 2 warm-up steps, on the
same batches for every variant. The machine is shared and noisy, so the variants run in interleaved rounds
and each keeps its best round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    # name: (memory: "4k" glibc defaults | "thp" huge pages | "heap" freed blocks kept, attention, precision, loss,
    #        negatives shared by the batch, lean dropout + logsumexp, causal strips + fused loss, denormals flushed,
    #        trim: no padding copies for full batches, fused AdamW, bf16 exponentials in the loss, cheaper mask bits)
    "v0": ("4k", "v0", "fp32", "sampled", True, False, False, False, False),
    "v0 per-seq-sampled": ("4k", "v0", "fp32", "sampled", False, False, False, False, False),
    "+thp": ("thp", "v0", "fp32", "sampled", True, False, False, False, False),
    "+fused": ("thp", "padded", "fp32", "sampled", True, False, False, False, False),
    "+bf16": ("thp", "padded", "bf16", "sampled", True, False, False, False, False),
    "+lean": ("thp", "padded", "bf16", "sampled", True, True, False, False, False),
    "+strips": ("thp", "padded", "bf16", "sampled", True, True, True, False, False),
    "+heap": ("heap", "padded", "bf16", "sampled", True, True, True, False, False),
    "+ftz": ("heap", "padded", "bf16", "sampled", True, True, True, True, False),
    "+trim": ("heap", "padded", "bf16", "sampled", True, True, True, True, True),
    "+trim per-seq-sampled": ("heap", "padded", "bf16", "sampled", False, True, True, True, True),
    "+trim full-softmax": ("heap", "padded", "bf16", "full", False, True, True, True, True),
}
FINAL = "+trim per-seq-sampled"  # the final path, compared with "v0 per-seq-sampled" on an equal loss


def apply_variant(variant: str) -> tuple[str, str, bool]:
    """Patch this process to the variant's code path; returns (precision, loss, shared negatives)."""
    _, attention, precision, loss, shared, lean, strips, ftz, trim = VARIANTS[variant]  # memory: variant_env()
    import math

    import torch
    import torch.nn.functional as F

    import genrec.models.hstu as hstu_mod
    import genrec.ops.dropout as dropout_mod
    import genrec.ops.hstu_attention as attention_mod
    import genrec.training.losses as losses_mod
    import genrec.training.trainer as trainer_mod

    if attention == "v0":
        hstu_mod.hstu_attention = v0_attention
    if not trim:  # padding copies, AdamW's per-op loop, fp32 loss products, rng.bytes bits, autograd strips
        import types

        import numpy as np

        import genrec.ops.jagged as jagged_mod

        def to_padded(values, index, batch, max_len):  # noqa: ANN001, ANN202
            out = values.new_zeros((batch * max_len, *values.shape[1:])).index_copy(0, index, values)
            return out.view(batch, max_len, *values.shape[1:])

        def to_jagged(padded, index):  # noqa: ANN001, ANN202
            return padded.reshape(-1, *padded.shape[2:]).index_select(0, index)

        for mod in (jagged_mod, attention_mod, losses_mod):
            mod.to_padded, mod.to_jagged = to_padded, to_jagged
        adamw = torch.optim.AdamW
        trainer_mod.torch.optim.AdamW = lambda *a, **k: adamw(*a, **{**k, "fused": None})
        losses_mod.LOW_PRECISION_LOSS = False

        def dropout_mask(shape, p):  # noqa: ANN001, ANN202
            rng = np.random.Generator(np.random.PCG64(int(torch.randint(0, 2**62, (1,)))))
            bits = np.frombuffer(rng.bytes(2 * int(np.prod(shape))), dtype=np.int16).reshape(shape)
            return torch.from_numpy(bits >= round(p * 65536) - 32768)

        dropout_mod.dropout_mask = dropout_mask

        def autograd_strips(qp, kp, vp, table, rab_idx, strips, heads):  # noqa: ANN001, ANN202
            outs = []
            for s, e in strips:
                bias = attention_mod._TableGather.apply(table, rab_idx[..., s:e, :e], qp.dtype)
                outs.append(torch.bmm(F.silu(attention_mod._strip_scores(qp, kp, bias, s, e, heads)), vp[:, :e]))
            return torch.cat(outs, 1) if len(outs) > 1 else outs[0]

        attention_mod._PaddedStrips = types.SimpleNamespace(apply=autograd_strips)  # strips under autograd
    if not ftz:  # the trainer flushes denormals while it trains; before +ftz it did not
        import contextlib

        trainer_mod.flush_denormals = contextlib.nullcontext
    if not lean:
        dropout_mod.dropout = lambda x, p, training=True: F.dropout(x, p, training)
        losses_mod._logit_bound = lambda *args: math.inf
    if not strips:  # whole (n, n) products; the loss under plain autograd with hits masked by a full comparison
        attention_mod.PADDED_STRIPS = 1
        losses_mod._ProductLogSumExp.apply = losses_mod.product_lse_reference
        losses_mod.accidental_hits = lambda neg, tgt, _: (neg[:, None, :] == tgt[:, :, None]).view(-1).nonzero()[:, 0]
    return precision, loss, shared


def variant_env(variant: str) -> dict[str, str]:
    """The environment a variant's process starts with: both allocator settings are read before torch allocates."""
    memory = VARIANTS[variant][0]
    return {
        **os.environ,
        "THP_MEM_ALLOC_ENABLE": "1" if memory == "thp" else "0",
        "GENREC_MALLOC": "keep" if memory == "heap" else "default",
    }


def v0_attention(q, k, v, offsets, pos_bias=None, time_bias=None, timestamps=None, scale=None, backend="", cache=None):
    """The first implementation's padded path: explicit masks, multiply and divide on (B, H, n, n)."""
    import torch
    import torch.nn.functional as F

    from genrec.ops.jagged import lengths_from_offsets, padded_index, to_jagged, to_padded

    lengths = lengths_from_offsets(offsets)
    B, n, H = len(lengths), int(lengths.max()), q.shape[1]
    idx = padded_index(offsets, n)
    qp, kp, vp = (to_padded(t, idx, B, n).transpose(1, 2) for t in (q, k, v))
    logits = qp @ kp.transpose(-1, -2)
    i = torch.arange(n)
    gap = i[:, None] - i[None, :]
    if pos_bias is not None:
        logits = logits + pos_bias[gap.clamp(0, pos_bias.shape[-1] - 1)]
    mask = (gap >= 0)[None] & (i[None, None, :] < lengths[:, None, None])
    div = torch.full((B, 1, 1, 1), float(scale)) if scale is not None else lengths.float().view(B, 1, 1, 1)
    attn = F.silu(logits) * mask.unsqueeze(1).to(q.dtype) / div
    out = (attn @ vp).transpose(1, 2)
    return to_jagged(out.reshape(B, n, H * v.shape[-1]), idx).view(-1, H, v.shape[-1])


def measure(model_name: str, variant: str, steps: int, threads: int) -> dict:
    precision, loss, shared = apply_variant(variant)
    import time

    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(VARIANTS[variant][7])
    from genrec.memory import keep_freed_memory

    keep_freed_memory()  # as the trainer does; GENREC_MALLOC (variant_env) says whether it changes anything

    from genrec.data.batches import train_batches
    from genrec.training.losses import next_item_loss
    from genrec.training.trainer import TrainConfig, prepare

    _, split, model = prepare(TrainConfig(model=model_name, dataset="ml-1m", seed=0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), fused=VARIANTS[variant][8] or None)
    gen = torch.Generator().manual_seed(0)
    n_seq = n_tok = 0
    for i, b in enumerate(train_batches(split, 128, 200, seed=0)):
        if i == 2:
            t0, n_seq, n_tok = time.perf_counter(), 0, 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            states = model.encode(b.items, b.offsets, b.timestamps)
            off = torch.tensor([0, len(b.items)]) if shared else b.offsets  # one "sequence" = shared negatives
            loss_v = next_item_loss(states, b.targets, model.item_table(), 0.05, loss, 128, generator=gen, offsets=off)
        opt.zero_grad(set_to_none=True)
        loss_v.backward()
        opt.step()
        n_seq += b.num_sequences
        n_tok += len(b.items)
        if i == steps + 1:
            break
    secs = time.perf_counter() - t0
    return {"model": model_name, "variant": variant, "seq_per_s": n_seq / secs, "tok_per_s": n_tok / secs}


def train_quality(model_name: str, variant: str, epochs: int, threads: int, out: Path, seed: int = 42) -> dict:
    """One training run through the real trainer with this variant's attention, precision and loss."""
    precision, loss, shared = apply_variant(variant)
    from genrec.training.trainer import TrainConfig, train

    cfg = TrainConfig(model=model_name, dataset="ml-1m", out=str(out), epochs=epochs, patience=epochs, loss=loss,
                      shared_negatives=shared, precision=precision, threads=threads, seed=seed)  # fmt: skip
    res = train(cfg, restart=True)
    return {
        "model": model_name,
        "variant": variant,
        "epochs": [
            {"epoch": h["epoch"], "seconds": h["seconds"], "valid_ndcg10": h["valid"]["NDCG@10"]} for h in res.history
        ],
        "test_evaluated": False,
    }


def quality(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    rows = []
    for model in args.models:
        for variant in ("v0 per-seq-sampled", FINAL):
            out = runs / f"{model}-{variant.replace(' ', '_').replace('+', '')}-seed{args.seed}"
            cmd = [sys.executable, __file__, "--train-one", model, variant, "--quality-epochs", str(args.quality_epochs),
                   "--threads", str(args.threads), "--runs", str(out), "--seed", str(args.seed)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, env=variant_env(variant))
            if proc.returncode:
                sys.exit(f"{model} {variant} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            last = row["epochs"][-1]
            print(
                f"{model:10s} {variant:24s} {sum(e['seconds'] for e in row['epochs']):7.1f} s  "
                f"valid NDCG@10 {last['valid_ndcg10']:.4f}",
                flush=True,
            )
    command = "python benchmarks/training_throughput.py " + " ".join(sys.argv[1:])
    summary = []
    for model in args.models:
        a, b = (next(r for r in rows if r["model"] == model and r["variant"] == v)
                for v in ("v0 per-seq-sampled", FINAL))  # fmt: skip
        sa, sb = (sum(e["seconds"] for e in r["epochs"]) for r in (a, b))
        diffs = [eb["valid_ndcg10"] - ea["valid_ndcg10"] for ea, eb in zip(a["epochs"], b["epochs"], strict=True)]
        summary.append({"model": model, "epochs": len(a["epochs"]), "v0_seconds": sa, "final_seconds": sb,
                        "speedup": sa / sb, "v0_best_valid": max(e["valid_ndcg10"] for e in a["epochs"]),
                        "final_best_valid": max(e["valid_ndcg10"] for e in b["epochs"]),
                        "v0_last_valid": a["epochs"][-1]["valid_ndcg10"], "final_last_valid": b["epochs"][-1]["valid_ndcg10"],
                        "max_abs_epoch_diff": max(abs(d) for d in diffs), "mean_epoch_diff": sum(diffs) / len(diffs)})  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "training_quality" + ("" if args.seed == 42 else f"_seed{args.seed}")  # other seeds: run-to-run noise
    (RESULTS / f"{name}.json").write_text(json.dumps({"command": command, "summary": summary, "runs": rows},
                                                              indent=2))  # fmt: skip
    lines = ["# Training speed-up at equal loss: first implementation vs final path, same validation quality?", "",
             f"`{command}`", "", "ML-1M (SASRec split), validation split (second-to-last item), full catalog; "
             f"per-sequence sampled softmax with 128 negatives for both; seed {args.seed}; seconds = training time only.", "",
             "| model | epochs | v0 s | final s | speed-up | v0 best valid NDCG@10 | final best | v0 last | final last "
             "| max abs per-epoch diff |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['model']} | {r['epochs']} | {r['v0_seconds']:.0f} | {r['final_seconds']:.0f} | {r['speedup']:.2f}x "
              f"| {r['v0_best_valid']:.4f} | {r['final_best_valid']:.4f} | {r['v0_last_valid']:.4f} "
              f"| {r['final_last_valid']:.4f} | {r['max_abs_epoch_diff']:.4f} |" for r in summary]  # fmt: skip
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.models), figsize=(5.5 * len(args.models), 4), squeeze=False)
    for ax, model in zip(axes[0], args.models, strict=True):
        for r in (r for r in rows if r["model"] == model):
            t = [sum(e["seconds"] for e in r["epochs"][: i + 1]) / 60 for i in range(len(r["epochs"]))]
            ax.plot(t, [e["valid_ndcg10"] for e in r["epochs"]], marker="o", ms=3, label=r["variant"])
        ax.set(title=f"{model} on ML-1M", xlabel="training minutes", ylabel="valid NDCG@10")
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["hstu", "hstu-large"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: model variant
    ap.add_argument("--quality-epochs", type=int, default=0, help="instead: same-loss quality check, E epochs")
    ap.add_argument("--runs", default="runs/throughput_quality", help="run folders of the quality check")
    ap.add_argument("--train-one", nargs=2, help=argparse.SUPPRESS)  # internal: model variant
    ap.add_argument("--seed", type=int, default=42, help="quality check seed (another seed shows run-to-run noise)")
    args = ap.parse_args()
    if args.train_one:
        row = train_quality(
            args.train_one[0], args.train_one[1], args.quality_epochs, args.threads, Path(args.runs), args.seed
        )
        print(json.dumps(row))
        return
    if args.quality_epochs:
        quality(args)
        return
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.steps, args.threads)))
        return
    best: dict[tuple[str, str], dict] = {}
    for r in range(args.rounds):
        for model in args.models:
            for variant in VARIANTS:
                cmd = [sys.executable, __file__, "--one", model, variant, "--steps", str(args.steps)]
                cmd += ["--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=variant_env(variant))
                row = json.loads(out.stdout.strip().splitlines()[-1])
                key = (model, variant)
                if key not in best or row["seq_per_s"] > best[key]["seq_per_s"]:
                    best[key] = row
                print(f"round {r}  {model:10s} {variant:24s} {row['seq_per_s']:8.1f} seq/s", flush=True)
    rows = list(best.values())
    for row in rows:
        row["speedup_vs_v0"] = row["seq_per_s"] / best[(row["model"], "v0")]["seq_per_s"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/training_throughput.py " + " ".join(sys.argv[1:])
    (RESULTS / "training_throughput.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    eff = RESULTS / "efficiency.json"  # the efficiency report carries these rows under "training"
    if eff.exists():
        report = json.loads(eff.read_text())
        report["training"] = [{**r, "command": command} for r in rows]
        eff.write_text(json.dumps(report, indent=2))
    lines = ["# HSTU training throughput on ML-1M (batch 128, length 200)", "", f"`{command}`", "",
             f"Best of {args.rounds} round(s) of {args.steps} timed steps per variant: on this shared 2-core box single "
             "rounds move by tens of per cent; the 12-epoch check (training_quality.md) is the measurement of record.",
             "",
             "| model | variant | seq/s | tokens/s | x v0 |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {r['model']} | {r['variant']} | {r['seq_per_s']:.1f} | {r['tok_per_s']:.0f} | {r['speedup_vs_v0']:.2f} |"
        for r in rows
    ]
    (RESULTS / "training_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
