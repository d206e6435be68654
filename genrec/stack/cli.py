"""`genrec pipeline ...` commands (train the stack from a config file, evaluate) and the `genrec train` dispatch
for two-tower / wide-deep / dlrm / lr.

Register in genrec/cli.py:
    from genrec.stack.cli import pipeline_app
    app.add_typer(pipeline_app, name="pipeline")
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

RANKING_MODELS = ("two-tower", "wide-deep", "dlrm", "lr")

pipeline_app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="multi-stage pipeline: retrieval -> ranking -> re-rank"
)
console = Console()


def stage_table(title: str, records: list[dict]) -> Table:
    """One row per stage record {stage, name, components, metrics}."""
    cols = sorted({k for r in records for k in r["metrics"] if k != "users"}, key=lambda c: (c.split("@")[0], c))
    table = Table(title=title)
    for c in ("stage", "name"):
        table.add_column(c)
    for c in cols:
        table.add_column(c, justify="right")
    table.add_column("users", justify="right")
    for r in records:
        m = r["metrics"]
        table.add_row(r["stage"], r["name"], *(f"{m[c]:.4f}" if c in m else "" for c in cols), str(m["users"]))
    return table


@pipeline_app.command("evaluate")
def evaluate(
    bundle: Path | None = typer.Argument(None, help="a genrec bundle: runs its declared pipeline"),
    retrieval: str | None = typer.Option(None, help="without a bundle: retrieval run folders, comma-separated"),
    ranker: str | None = typer.Option(None, help="without a bundle: ranker run folder (dlrm / wide-deep / lr)"),
    dataset: str | None = typer.Option(None, help="without a bundle: dataset the runs were trained on"),
    k: int = typer.Option(200, help="without a bundle: candidates passed from retrieval to the ranker"),
    cap: int = typer.Option(3, help="without a bundle: at most this many items of one category on the top-10"),
    split: str = typer.Option("test", help="test | valid"),
    max_users: int | None = typer.Option(None, help="evaluate a random subset of users (quick checks)"),
    exact: bool = typer.Option(False, help="without a bundle: two-tower candidates by exact search, not HNSW"),
    out: Path | None = typer.Option(None, help="write the records {dataset, stage, components, metrics} as JSON"),
    threads: int | None = typer.Option(None),
) -> None:
    """HR@10 / NDCG@10 after each stage and recall@K of retrieval, full catalog, seen items excluded: the
    same stage objects `genrec serve` runs, on each evaluation user's history before the split's target."""
    from genrec.pipeline.pipeline import Pipeline
    from genrec.pipeline.pipeline import evaluate as run_evaluate
    from genrec.runtime import setup

    setup(threads)
    if split not in ("test", "valid"):
        console.print(f"[red]error:[/] --split: expected test or valid, got {split!r}")
        raise typer.Exit(2)
    try:
        if bundle is not None:
            from genrec.bundle import Bundle

            b = Bundle.open(bundle)
            pipe = Pipeline.from_bundle(b)
            name = pipe.sequences.name if pipe.sequences is not None else str(bundle)
            users = None
            if split == "valid":
                from genrec.pipeline.runs import ranker_holdout_users

                users = ranker_holdout_users(b)
                if users is not None:  # the others' validation targets are the ranker's training labels
                    console.print(f"valid split: the {len(users):,} users whose validation targets the ranker "
                                  "held out (it trained on the others')")  # fmt: skip
            records = run_evaluate(pipe, split, max_users, dataset=name, users=users)
            title = f"{split} split, {name}: {' -> '.join(s.name for s in pipe.stages)}"
        else:
            if not retrieval or not dataset:
                raise ValueError("give a BUNDLE, or --retrieval RUN_DIR[,RUN_DIR] and --dataset")
            from genrec.pipeline.runs import Context, pipeline_evaluate

            ctx = Context(dataset)
            records = pipeline_evaluate(ctx, [r for r in retrieval.split(",") if r], ranker, console, k, cap,
                                        max_users, use_ann=not exact, which=split)  # fmt: skip
            title = f"{split} split, {dataset}: retrieval top-{k} -> ranker -> re-rank (cap {cap})"
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(stage_table(title, records))
    if out:
        out.write_text(json.dumps(records, indent=2))


@pipeline_app.command("train")
def train_cmd(
    config: Path = typer.Option(..., help="pipeline TOML: [data], [[retrieval]], [ranking], [popular], [rerank]"),
    out: Path = typer.Option(..., help="the bundle to write (components train in OUT/work/ first)"),
) -> None:
    """Train the retrievers, then the ranker on their candidates, into ONE bundle (see examples/pipeline-*.toml)."""
    from rich.markup import escape

    from genrec.stack.config import train_pipeline

    try:
        bundle = train_pipeline(config, out, console)
    except (ValueError, FileNotFoundError) as e:  # ConfigError and BundleError are ValueErrors
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    stages = " -> ".join(s["stage"] + (f"({s['component']})" if "component" in s else "") for s in bundle.pipeline)
    console.print(f"bundle: {out} ({stages})")


def run_train(model: str, dataset: str, out: Path, **opts: object) -> None:
    """What genrec/cli.py's `train` calls for RANKING_MODELS (None options take the defaults)."""
    from genrec.stack.train import train_ranking_model

    try:
        train_ranking_model(model, dataset, out, console=console, **{k: v for k, v in opts.items() if v is not None})
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    console.print(f"bundle: {out} (manifest.json, metrics.json)")
