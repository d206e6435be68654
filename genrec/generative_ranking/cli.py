"""`genrec genrank ...`: train an HSTU ranker run (for the serving stage) and print its held-out metrics.

Register in genrec/cli.py with:
    from genrec.generative_ranking.cli import app as genrank_app
    app.add_typer(genrank_app, name="genrank")
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from genrec.generative_ranking.run import RankerRunConfig, train_ranker

app = typer.Typer(help="Generative ranking: HSTU over (item, action) tokens with a multi-task head.")


@app.command()
def train(
    out: str = typer.Option(..., help="run folder to write (ranker.pt, meta.json)"),
    dataset: str = typer.Option(
        "synthetic:small", help="synthetic[:SIZE] | ml-100k | ml-1m (users 1-2999) | PATH (a log with event types)"
    ),
    token_mode: str = typer.Option("summed", help="summed | interleaved"),
    attributes: bool = typer.Option(True, help="add category / brand / price-bucket embeddings to item tokens"),
    epochs: int = typer.Option(10),
    max_len: int = typer.Option(200),
    dim: int = typer.Option(64),
    max_users: int | None = typer.Option(None, help="random user subset (quick runs)"),
    threads: int = typer.Option(1),
    seed: int = typer.Option(0),
    columns: str | None = typer.Option(
        None, help="your file's column names, GENREC_NAME=FILE_COLUMN comma-separated, e.g. event_type=action"
    ),
    sep: str | None = typer.Option(
        None, help="separator of a text file: , tab ; | space (default: sniffed from the file)"
    ),
    timestamp_format: str | None = typer.Option(
        None, help="strptime format of text timestamps, e.g. '%d/%m/%Y %H:%M' (default: epoch s or ms, ISO 8601)"
    ),
    catalog: Path | None = typer.Option(None, help="item catalog file (default: catalog.* beside the events)"),
    k_core: int = typer.Option(0, help="keep only users and items with at least K rows, repeatedly"),
    drop_incomplete: bool = typer.Option(
        False, help="drop the rows without a user, item, time or event type and count them in the report"
    ),
) -> None:
    """Train on all events but each user's last 5, report per-task AUC / logloss and NDCG@10 on those."""
    import torch

    from genrec.data.io import ReadOptions
    from genrec.runtime import setup

    try:  # the reading options of `genrec train` (genrec.data.io.ReadOptions)
        read = ReadOptions(columns=columns or {}, sep=sep, timestamp_format=timestamp_format,
                           catalog=str(catalog) if catalog else None, k_core=k_core,
                           drop_incomplete=drop_incomplete)  # fmt: skip
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    setup(threads)
    torch.manual_seed(seed)
    known = {f.name for f in fields(RankerRunConfig)}
    kw = dict(dataset=dataset, token_mode=token_mode, attributes=attributes, epochs=epochs, max_len=max_len,
              dim=dim, max_users=max_users, seed=seed, read=read.to_dict())  # fmt: skip
    cfg = RankerRunConfig(**{k: v for k, v in kw.items() if k in known})
    try:
        metrics = train_ranker(cfg, out)
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    table = Table(title=f"{dataset}: held-out lists ({out})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    Console().print(table)
