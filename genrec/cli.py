"""`genrec` command line: train, evaluate, recommend, quickstart (+ serve, scaling, pipeline, genrank).

Startup cost is import cost: only typer and rich load at the top; each command imports what it runs, and the
upper layers' commands (serve, scaling, pipeline, genrank) load their modules only when invoked.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

import genrec

# name -> (module, attribute, one-line help shown by `genrec --help` without importing the module)
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("genrec.serving.cli", "serve", "Serve recommendations over HTTP (OpenAPI docs at /docs)."),
    "scaling": (
        "genrec.distributed.scaling",
        "scaling",
        "Scaling-law study: HSTU vs DLRM-style, validation NDCG@10 against counted training FLOPs.",
    ),
    "pipeline": ("genrec.stack.cli", "pipeline_app", "multi-stage pipeline: retrieval -> ranking -> re-rank"),
    "genrank": (
        "genrec.generative_ranking.cli",
        "app",
        "Generative ranking: HSTU over (item, action) tokens with a multi-task head.",
    ),
}


class LazyGroup(TyperGroup):
    """The top-level group: lazy commands, and user errors as one line instead of a traceback."""

    _listing = False  # True while `--help` lists the commands: stubs with their help, nothing imported

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attr, short_help = LAZY_COMMANDS[cmd_name]
        if self._listing:
            return click.Command(cmd_name, help=short_help)
        obj = getattr(importlib.import_module(module), attr)
        if isinstance(obj, typer.Typer):  # a group, even of one command (`genrec genrank train`)
            cmd: click.Command = typer.main.get_group(obj)
        else:  # a command function
            single = typer.Typer(add_completion=False)
            single.command(cmd_name)(obj)
            cmd = typer.main.get_command(single)
        cmd.name = cmd_name
        self.commands[cmd_name] = cmd
        return cmd

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as e:
            message = user_error(e)
            if message is None or os.environ.get("GENREC_DEBUG"):
                raise
            Console(stderr=True).print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None


def user_error(e: BaseException) -> str | None:
    """One line for an error the user can fix (bad input, missing file or package); None for a bug."""
    if isinstance(e, ImportError):
        return genrec.missing_dependency(e)
    if isinstance(e, FileNotFoundError):
        return f"file not found: {e.filename}" if e.filename else str(e)
    if isinstance(e, OSError | ValueError | EOFError):  # DataError, ConfigError, CheckpointError, ... are ValueErrors
        return str(e) or type(e).__name__
    return None


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"genrec {genrec.__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=LazyGroup, add_completion=False, no_args_is_help=True, help="genrec: generative recommendation engine"
)
console = Console(soft_wrap=True)  # messages stay one line in logs; tables still fit the width


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="print the version"
    ),
) -> None:
    pass


def fail(message: object) -> typer.Exit:
    """Print a one-line error (no wrapping, no markup from the message) and give the exit code 2 to raise."""
    from rich.markup import escape

    console.print(f"[red]error:[/] {escape(str(message))}", soft_wrap=True)
    return typer.Exit(2)


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    from genrec.evaluation.metrics import METRIC_NAMES

    table = Table(title=title)
    table.add_column("model")
    for m in METRIC_NAMES:
        table.add_column(m, justify="right")
    for name, metrics in rows.items():
        table.add_row(name, *(f"{metrics[m]:.4f}" for m in METRIC_NAMES))
    return table


# the `genrec train` options `--model auto` takes; it chooses the others (dim, lr, loss, ...) on validation
AUTO_OPTIONS = ("model", "dataset", "out", "batch_size", "seed", "threads", "device", "time_budget", "restart",
                "columns", "sep", "timestamp_format", "catalog", "attributes", "name", "k_core", "drop_incomplete",
                "event_inputs", "target_events", "max_members")  # fmt: skip


@app.command()
def train(
    ctx: typer.Context,
    model: str = typer.Option(
        "hstu", help="auto (with --time-budget) | sasrec | hstu | hstu-large | two-tower | wide-deep | dlrm | lr"
    ),
    dataset: str = typer.Option("synthetic", help="ml-1m | ml-100k | amazon-beauty | synthetic[:SIZE] | PATH"),
    out: Path = typer.Option(Path("runs/run"), help="run folder (resumed if it holds a checkpoint)"),
    epochs: int = typer.Option(100),
    loss: str = typer.Option("sampled", help="sampled | full | in-batch"),
    num_negatives: int = typer.Option(128, help="uniform negatives for the sampled loss"),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(0.0),
    max_len: int | None = typer.Option(None, help="history window (default: 200)"),
    dim: int | None = typer.Option(None),
    layers: int | None = typer.Option(None),
    heads: int | None = typer.Option(None),
    dropout: float | None = typer.Option(None),
    temperature: float | None = typer.Option(None),
    patience: int = typer.Option(10, help="epochs without a better validation NDCG@10 before stopping"),
    crop: str = typer.Option("last", help="last | random: which window of long histories to train on"),
    item_attributes: bool = typer.Option(
        False, help="sequence models: add the catalog's attributes (brand, categories, genres...) to item vectors"
    ),
    id_dropout: float | None = typer.Option(
        None, help="with --item-attributes: share of items trained on their attributes alone (new items' regime)"
    ),
    ema: float = typer.Option(0.0, help="> 0: validate and keep a moving average of the weights (decay per step)"),
    seed: int = typer.Option(42),
    threads: int | None = typer.Option(None),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (autocast for training; evaluation stays fp32)"),
    time_budget: float | None = typer.Option(
        None, help="minutes of training before stopping; --model auto: minutes of the whole call, evaluation included"
    ),
    max_members: int = typer.Option(
        3,  # genrec.training.ensemble.MAX_MEMBERS, not imported here (torch at start-up); tested equal
        help="--model auto: most distinct models the bundle may average (1: the final run alone, one encoder "
        "per request when served)",
    ),
    schedule: str = typer.Option(
        "constant", help="constant | cosine (lr decays over --time-budget if given, else over --epochs)"
    ),
    restart: bool = typer.Option(False, help="ignore a checkpoint in --out and start over"),
    refit_from: Path | None = typer.Option(
        None, help="a finished run: retrain its settings on train + validation for the epochs its validation chose"
    ),
    retrieval: str | None = typer.Option(
        None, help="rankers (wide-deep, dlrm, lr): retrieval run folders (HSTU, two-tower), comma-separated"
    ),
    nproc_per_node: int = typer.Option(
        1, help="processes on this host; >1: item table sharded by TorchRec, encoder under DDP"
    ),
    sharding: str | None = typer.Option(
        None, help="with --nproc-per-node: table-wise | row-wise | column-wise (default: TorchRec's planner)"
    ),
    columns: str | None = typer.Option(
        None,
        help="your file's column names, GENREC_NAME=FILE_COLUMN comma-separated, e.g. "
        "user_id=customer_id,item_id=product_id,timestamp=event_time,event_type=type",
    ),
    sep: str | None = typer.Option(
        None, help="separator of a text file: , tab ; | space (default: sniffed from the file)"
    ),
    timestamp_format: str | None = typer.Option(
        None, help="strptime format of text timestamps, e.g. '%d/%m/%Y %H:%M' (default: epoch s or ms, ISO 8601)"
    ),
    catalog: Path | None = typer.Option(None, help="item catalog file (default: catalog.* beside the events)"),
    attributes: str | None = typer.Option(
        None,
        help="catalog columns used as item attributes, comma-separated (default: all but ids and free text)",
    ),
    name: str | None = typer.Option(
        None, help="the data's name in the run (default: the file's name, or its folder's for events.csv, log.csv, ...)"
    ),
    k_core: int = typer.Option(
        0, help="keep only users and items with at least K rows, repeatedly (the 5-core of published splits)"
    ),
    drop_incomplete: bool = typer.Option(
        False,
        help="drop the rows without a user, item, time or event type (empty, NA, null, ...) and count "
        "them in the report (default: stop at the first with its line)",
    ),
    event_inputs: bool | None = typer.Option(
        None,
        "--event-inputs/--no-event-inputs",
        help="sequence models: each input event's type (view, cart, ...) is an input token next to its item "
        "(default: on when the data has event types)",
    ),
    target_events: str | None = typer.Option(
        None, help="sequence models: the event types to predict, comma-separated, e.g. purchase (default: all)"
    ),
) -> None:
    """Train a model; validation picks the epoch, the test split is scored once."""
    from genrec.data.io import ReadOptions

    # by name: typer may run its own copy of click, whose ParameterSource is another class
    given = [k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")]  # fmt: skip
    if model == "auto" and (chosen := [k for k in given if k not in AUTO_OPTIONS]):
        flags = ", ".join("--" + k.replace("_", "-") for k in chosen)
        console.print(f"[red]error:[/] --model auto chooses {flags} itself, on validation; drop "
                      f"{'it' if len(chosen) == 1 else 'them'}, or name a model (--model hstu ...) to set them")  # fmt: skip
        raise typer.Exit(2)
    if "max_members" in given and model != "auto":
        console.print("[red]error:[/] --max-members is for --model auto (to average finished runs: genrec ensemble)")
        raise typer.Exit(2)
    if max_members < 1:
        console.print(f"[red]error:[/] --max-members {max_members}: must be at least 1")
        raise typer.Exit(2)

    try:
        read = ReadOptions(
            columns=columns or {}, sep=sep, timestamp_format=timestamp_format,
            catalog=str(catalog) if catalog else None, attributes=attributes, name=name, k_core=k_core,
            drop_incomplete=drop_incomplete,
        )  # fmt: skip
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    if (nproc_per_node > 1 or sharding) and not read.is_default:
        console.print(
            "[red]error:[/] the reading options (--columns, --sep, ...) are not supported with --nproc-per-node"
        )
        raise typer.Exit(2)
    if nproc_per_node > 1 or sharding:
        from genrec.distributed.train import launch_train

        raise typer.Exit(
            launch_train(
                nproc_per_node, model=model, dataset=dataset, out=out, epochs=epochs, batch_size=batch_size, lr=lr,
                num_negatives=num_negatives, sharding=sharding, max_len=max_len, dim=dim, layers=layers,
                heads=heads, dropout=dropout, patience=patience, seed=seed, threads=threads, time_budget=time_budget,
            )
        )  # fmt: skip
    if model == "auto":
        targets = [t.strip() for t in target_events.split(",") if t.strip()] if target_events else None
        train_auto(dataset, out, time_budget, batch_size, seed, threads, device, restart, read, event_inputs, targets,
                   max_members)  # fmt: skip
        return
    from genrec.stack.cli import RANKING_MODELS, run_train

    if model in RANKING_MODELS:  # retrieval / ranking stage models live in genrec.pipeline
        context = None
        if Path(dataset).exists() or not read.is_default:  # a user's file: read (and report) it here
            from genrec.pipeline.runs import Context

            context = Context(dataset, ds=read_dataset(dataset, seed, read))
        run_train(model, dataset, out, retrieval=retrieval, threads=threads, seed=seed, context=context)
        return
    ds = read_dataset(dataset, seed, read) if refit_from is None else None
    from genrec.training.trainer import TrainConfig, refit_config
    from genrec.training.trainer import train as run_training

    try:
        if refit_from is not None:
            cfg = refit_config(refit_from, out, threads)
            console.print(f"refit of {refit_from} on train + valid for {cfg.stop_epoch} epochs (other options ignored)")
        else:
            cfg = TrainConfig(
                model=model, dataset=dataset, out=str(out), epochs=epochs, batch_size=batch_size, lr=lr,
                weight_decay=weight_decay, loss=loss, num_negatives=num_negatives, max_len=max_len, dim=dim,
                num_layers=layers, num_heads=heads, dropout=dropout, temperature=temperature, patience=patience,
                crop=crop, item_attributes=item_attributes, id_dropout=id_dropout, ema=ema, seed=seed, threads=threads, device=device,
                precision=precision, schedule=schedule, time_budget_s=time_budget * 60 if time_budget else None,
                read=read.to_dict(), event_inputs=event_inputs,
                target_events=[t.strip() for t in target_events.split(",") if t.strip()] if target_events else None,
            )  # fmt: skip
        result = run_training(cfg, dataset=ds, console=console, restart=restart)
    except (ValueError, FileNotFoundError) as e:  # BundleError is a ValueError
        raise fail(e) from None
    table = {cfg.model: result.test, "popularity": result.popularity_test}
    console.print(metrics_table(f"test split, {cfg.dataset}" + (" (refit)" if refit_from else ""), table))
    console.print(
        f"best epoch {result.best_epoch}, {result.train_seconds / 60:.1f} min; bundle in {out} (manifest.json, metrics.json)"
    )


def read_dataset(dataset: str, seed: int, read: object) -> object:
    """Load --dataset with the reading options; a user file's ReadReport is printed (warnings in yellow)."""
    from genrec.data.datasets import load_dataset
    from genrec.data.io import ReadOptions

    assert isinstance(read, ReadOptions)
    try:
        ds = load_dataset(dataset, seed=seed, read=read)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    if ds.report is not None:
        ds.report.print(console)
    return ds


def process_seconds() -> float:
    """Seconds since this process started (Linux /proc), 0.0 where unknown."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


def train_auto(
    dataset: str, out: Path, time_budget: float | None, batch_size: int, seed: int, threads: int | None, device: str,
    restart: bool, read: object, event_inputs: bool | None, target_events: list[str] | None, max_members: int,
) -> None:  # fmt: skip
    """`genrec train --model auto`: the setting chosen on validation within the budget (genrec/training/auto.py)."""
    from genrec.training.auto import tune
    from genrec.training.trainer import TrainConfig

    if not time_budget:
        console.print("[red]error:[/] --model auto needs --time-budget MINUTES (the whole call, evaluation included)")
        raise typer.Exit(2)
    from genrec.data.io import ReadOptions

    assert isinstance(read, ReadOptions)
    base = TrainConfig(model="auto", dataset=dataset, out=str(out), batch_size=batch_size, seed=seed, threads=threads,
                       device=device, read=read.to_dict(), event_inputs=event_inputs,
                       target_events=target_events)  # fmt: skip
    # the budget holds for the command as a user times it: when `genrec` is the process (main() set
    # PROCESS_STARTED), the seconds it took to start count too; called in-process (a notebook, a test
    # runner), the budget counts from this call
    started = PROCESS_STARTED if PROCESS_STARTED is not None else time.perf_counter()
    try:
        ds = read_dataset(dataset, seed, read)  # a user's file is read (and reported) as for any model
        result = tune(base, time_budget * 60, dataset=ds, console=console, restart=restart, started=started,
                      max_members=max_members)  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    from genrec.bundle import Bundle

    chosen = Bundle.open(out).component(role="retrieval").kind
    table = {f"auto ({chosen})": result.test, "popularity": result.popularity_test}
    console.print(metrics_table(f"test split, {dataset} (scored once)", table))
    console.print(f"best epoch {result.best_epoch}; report in {out}/tuning.md, results in {out}/metrics.json")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a bundle written by `genrec train`"),
    split: str = typer.Option("test", help="test | valid"),
) -> None:
    """Full-catalog metrics of a bundle's sequence model (seen items excluded), next to popularity."""
    from genrec.bundle import SEQUENTIAL_KINDS, Bundle, BundleError, load_sequential, write_json
    from genrec.data.sequences import leave_one_out
    from genrec.evaluation.evaluate import evaluate_model, evaluate_popularity
    from genrec.runtime import setup

    setup()
    try:
        bundle = Bundle.open(run_dir)
        comp = bundle.component(kinds=SEQUENTIAL_KINDS)
        model = load_sequential(bundle, comp.name)
        seq = bundle.sequences()
    except BundleError as e:
        raise fail(e) from None
    refit = comp.config.get("train", {}).get("fit", "train") == "train+valid"
    if refit and split == "valid":
        console.print(
            f"[red]error:[/] {run_dir} is a refit: it trained on the validation events, so it has no validation split"
        )
        raise typer.Exit(2)
    data = leave_one_out(seq, valid_in_train=refit, target_events=comp.config.get("train", {}).get("target_events"))
    res = evaluate_model(model, data, split)
    pop = evaluate_popularity(data, split)
    write_json({"split": split, "metrics": res, "popularity": pop}, Path(run_dir) / f"eval_{split}.json")
    console.print(metrics_table(f"{split} split, {seq.name}", {comp.name: res, "popularity": pop}))


@app.command()
def ensemble(
    runs: list[Path] = typer.Argument(..., help="two or more bundles written by `genrec train` on the same data"),
    out: Path = typer.Option(..., help="the ensemble's bundle folder"),
    max_members: int = typer.Option(3, help="most distinct runs kept (serving encodes a history once per member)"),
    threads: int | None = typer.Option(None),
) -> None:
    """Average finished runs' scores with weights chosen on validation (greedy selection); test scored once."""
    from genrec.training.ensemble import ensemble_runs

    if max_members < 1:
        raise fail(f"--max-members {max_members}: must be at least 1")
    result = ensemble_runs(runs, out, max_members, threads, console)
    from genrec.bundle import Bundle

    members = Bundle.open(out).component("ensemble").config["ensemble"]["members"]
    for m in members:
        own = f"{m['valid']:.4f}" if m.get("valid") is not None else "-"
        console.print(f"  {m['run']}: weight {m['weight']:.2f} (its own validation NDCG@10 {own})")
    if len(members) == 1:
        console.print("  no mix of the runs validated higher than the best one: the bundle holds it alone")
    table = {"ensemble": result.test, "popularity": result.popularity_test}
    console.print(metrics_table("test split (scored once)", table))
    console.print(f"validation NDCG@10 {result.best_valid['NDCG@10']:.4f}; bundle in {out}")


@app.command()
def recommend(
    run_dir: Path = typer.Argument(..., help="a bundle written by `genrec train`"),
    user: str | None = typer.Option(None, "--user", "-u", help="raw user id from the training data"),
    k: int = typer.Option(10, "-k"),
    all_users: bool = typer.Option(False, "--all-users", help="every user of the run's data, to --out"),
    out: Path | None = typer.Option(
        None, help="with --all-users: recs.parquet or recs.csv (user_id, rank, item_id, score)"
    ),
    batch_size: int = typer.Option(64, help="with --all-users: users per forward pass"),
) -> None:
    """Top-k items for a known user from their whole history (or for every user, to a file)."""
    if all_users == (user is not None) or all_users != (out is not None):
        raise fail("give --user USER, or --all-users with --out FILE")
    if all_users:
        from genrec.export import export_run
        from genrec.runtime import setup

        setup()
        n = export_run(run_dir, out, k, batch_size, console=console)
        console.print(f"top-{k} of {n:,} users -> {out}")
        return
    from genrec.bundle import Bundle, BundleError
    from genrec.serving.recommender import Recommender

    try:
        bundle = Bundle.open(run_dir)
        rec = Recommender.from_bundle(bundle)
        seq, catalog = bundle.sequences(), bundle.catalog()
    except BundleError as e:
        raise fail(e) from None
    if user not in seq.user_vocab:
        raise fail(f"user {user!r} is not in dataset {bundle.data['name']}")
    show_recommendations(rec, seq, catalog, [user], k)


def show_recommendations(rec: object, seq: object, catalog: object, users: list[str], k: int) -> None:
    from genrec.data.sequences import SequenceData
    from genrec.serving.recommender import Recommender

    assert isinstance(rec, Recommender) and isinstance(seq, SequenceData)
    titles: dict[str, str] = {}
    if catalog is not None:
        label = next((c for c in ("title", "category") if c in catalog.columns), None)
        if label:
            titles = dict(
                zip(
                    catalog["item_id"].cast(str).to_list(),
                    catalog[label].cast(str).to_list(),
                    strict=True,
                )
            )
    for user in users:
        u = seq.user_vocab.index(user) - 1
        history = [seq.item_vocab.raw(int(i)) for i in seq.user_items(u)]
        a, e = int(seq.offsets[u]), int(seq.offsets[u + 1])
        ts = seq.timestamps[a:e].tolist() if seq.timestamps is not None else None
        events = None
        if seq.event_types is not None and seq.event_vocab is not None:
            events = [seq.event_vocab.raw(int(c)) if c else "" for c in seq.event_types[a:e]]
        table = Table(title=f"user {user}: last items {', '.join(titles.get(h, h) for h in history[-3:])}")
        table.add_column("#", justify="right")
        table.add_column("item")
        table.add_column("score", justify="right")
        for r, item in enumerate(rec.recommend(history, k, ts, events=events), 1):
            table.add_row(str(r), f"{item.item_id} {titles.get(item.item_id, '')}", f"{item.score:.2f}")
        console.print(table)


@app.command()
def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), help="run folder"),
    size: str = typer.Option("small", help="synthetic shop size"),
    minutes: float = typer.Option(3.0, help="training time budget"),
    seed: int = typer.Option(0),
) -> None:
    """Generate a synthetic shop, train HSTU for a few minutes, compare with popularity, show recommendations."""
    from genrec.data.datasets import load_synthetic
    from genrec.serving.recommender import Recommender
    from genrec.training.trainer import TrainConfig
    from genrec.training.trainer import train as run_training

    console.rule("[bold]genrec quickstart")
    ds = load_synthetic(size, seed)
    s = ds.sequences.summary()
    console.print(f"synthetic shop '{size}': {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} events")
    cfg = TrainConfig(
        model="hstu", dataset=f"synthetic:{size}", out=str(out), epochs=200, max_len=50, patience=5,
        seed=seed, time_budget_s=minutes * 60,
    )  # fmt: skip
    result = run_training(cfg, dataset=ds, console=console, restart=True)
    console.print(
        metrics_table(
            "test split (full catalog, seen items excluded)",
            {"hstu": result.test, "popularity": result.popularity_test},
        )
    )
    lift = result.test["NDCG@10"] / max(result.popularity_test["NDCG@10"], 1e-9)
    console.print(f"HSTU NDCG@10 is {lift:.1f}x popularity's. Bundle: {out} (manifest.json, curves.png, metrics.json)")
    show_recommendations(Recommender.from_bundle(out), ds.sequences, ds.catalog, ds.sequences.user_vocab.ids[:2], 5)
    console.print(f"next: genrec recommend {out} --user {ds.sequences.user_vocab.ids[0]} -k 10")
    console.print(json.dumps({"test": result.test["NDCG@10"], "popularity": result.popularity_test["NDCG@10"]}))


PROCESS_STARTED: float | None = None  # perf_counter() value of this process's start, set by main()


def main() -> None:
    """The `genrec` console script and `python -m genrec`."""
    global PROCESS_STARTED
    PROCESS_STARTED = time.perf_counter() - process_seconds()
    app()


if __name__ == "__main__":
    main()
