"""Batch export: the top-k items of every user of a run, to Parquet or CSV.

genrec recommend RUN --all-users -k 50 --out recs.parquet   -> columns user_id, rank, item_id, score

Many users per forward pass: each batch encodes its users' last max_len events (users sorted by history length,
so the padded attention pads little), scores the whole item table in one matmul, masks every item the user has
seen, and keeps the top k. Per user, the result is what `Recommender.recommend(history, k)` returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from genrec.bundle import Bundle, load_sequential
from genrec.data.batches import gather_windows
from genrec.data.sequences import PAD, SequenceData
from genrec.models import SequentialModel

FORMATS = (".parquet", ".csv")
# Users per forward pass: small enough that the attention's (B, n, n) scores stay in cache. ML-1M hstu at 2 threads
# (benchmarks/export.py): 5,700 users/s at 64, 4,100 at 256, 2,300 at 1024.
BATCH_USERS = 64
SCORE_BUDGET = 1 << 25  # floats of (users x items) scores per batch (128 MB): smaller batches for huge catalogs


def load_run_data(run_dir: Path) -> tuple[SequentialModel, SequenceData]:
    """A bundle's sequence model and its training users' histories, indexed like the model's item table."""
    bundle = Bundle.open(run_dir)
    return load_sequential(bundle), bundle.sequences()


@torch.inference_mode()
def top_k_batches(
    model: SequentialModel, data: SequenceData, k: int, batch_size: int = BATCH_USERS, users: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(users (B,), item indices (B, k), scores (B, k)) per batch, best first; seen items score -inf.

    users: 0-based user indices (default all); each batch holds users of similar history length.
    """
    model.eval()
    users = np.arange(data.num_users) if users is None else np.asarray(users, dtype=np.int64)
    max_len = model.config.max_len
    num_scores = data.num_items + 1
    batch_size = max(1, min(batch_size, SCORE_BUDGET // num_scores))
    k = min(k, data.num_items)
    starts, ends = data.offsets[users], data.offsets[users + 1]
    order = np.argsort(np.minimum(ends - starts, max_len), kind="stable")
    ts = data.timestamps
    for p in range(0, len(users), batch_size):
        sel = order[p : p + batch_size]
        s, e = starts[sel], ends[sel]
        idx, offsets = gather_windows(np.maximum(s, e - max_len), e)  # the last max_len events
        states = model.user_states(
            torch.from_numpy(data.items[idx]),
            torch.from_numpy(offsets),
            None if ts is None else torch.from_numpy(ts[idx]),
            None if data.event_types is None else torch.from_numpy(data.event_types[idx]),  # read by event-input models
        )  # (B, D)
        scores = model.score_all(states)  # (B, num_items + 1)
        scores[:, PAD] = float("-inf")
        seen, seen_offsets = gather_windows(s, e)  # the whole history
        rows = np.repeat(np.arange(len(sel)), np.diff(seen_offsets))
        scores[torch.from_numpy(rows), torch.from_numpy(data.items[seen])] = float("-inf")
        top = scores.topk(k, dim=1)
        yield users[sel], top.indices, top.values


def recommend_all(
    model: SequentialModel,
    data: SequenceData,
    k: int,
    batch_size: int = BATCH_USERS,
    users: np.ndarray | None = None,
    console: Console | None = None,
) -> pl.DataFrame:
    """user_id, rank (1..k), item_id, score for every user (or `users`); a user who has seen all but j < k items
    gets j rows."""
    total = data.num_users if users is None else len(users)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    columns = (TextColumn("recommending"), BarColumn(), MofNCompleteColumn(), TextColumn("users"))
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("users", total=total)
        for u, items, scores in top_k_batches(model, data, k, batch_size, users):
            parts.append((u, items.numpy(), scores.numpy()))
            progress.advance(task, len(u))
    if not parts:
        return pl.DataFrame(schema={"user_id": pl.String, "rank": pl.Int32, "item_id": pl.String, "score": pl.Float32})
    u = np.concatenate([p[0] for p in parts])
    back = np.argsort(u, kind="stable")  # users in their data order, not in length order
    u, items, scores = u[back], np.concatenate([p[1] for p in parts])[back], np.concatenate([p[2] for p in parts])[back]
    kk = items.shape[1]
    keep = np.isfinite(scores).ravel()  # seen items (-inf) when fewer than k are left
    user_ids = pl.Series(data.user_vocab.ids, dtype=pl.String)
    item_ids = pl.Series(data.item_vocab.ids, dtype=pl.String)
    return pl.DataFrame(
        {
            "user_id": user_ids.gather(np.repeat(u, kk)[keep]),
            "rank": np.tile(np.arange(1, kk + 1, dtype=np.int32), len(u))[keep],
            "item_id": item_ids.gather(items.ravel()[keep] - 1),
            "score": scores.ravel()[keep].astype(np.float32),
        }
    )


def write_recommendations(df: pl.DataFrame, out: Path) -> None:
    """Parquet or CSV by the file's suffix; written to a temporary name first, so `out` is never half-written."""
    if out.suffix not in FORMATS:
        raise ValueError(f"--out {out}: use a {' or '.join(FORMATS)} file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        df.write_parquet(tmp)
    else:
        df.write_csv(tmp)
    tmp.replace(out)


def export_run(run_dir: Path, out: Path, k: int, batch_size: int = BATCH_USERS, console: Console | None = None) -> int:
    """Top-k for every user of a run's data, written to `out`; returns the number of users."""
    if out.suffix not in FORMATS:  # before the model is loaded
        raise ValueError(f"--out {out}: use a {' or '.join(FORMATS)} file")
    model, data = load_run_data(run_dir)
    write_recommendations(recommend_all(model, data, k, batch_size, console=console), out)
    return data.num_users
