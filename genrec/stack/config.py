"""`genrec pipeline train --config pipeline.toml --out BUNDLE`: the whole stack from one file, into one bundle.

    [data]                      dataset = "ml-1m" | "synthetic:small" | PATH, seed = 42, threads = 1; a file is
                                read as `genrec train` reads it: columns = {user_id = "customer_id"}, sep,
                                timestamp_format, catalog, attributes, name, k_core, drop_incomplete
    [[retrieval]]               one table per retriever, in stage order
    model = "hstu"              sasrec | hstu | hstu-large: every `genrec train` flag is a key (epochs, lr,
                                max_len, dim, layers, heads, loss, time_budget (minutes), ...); two-tower:
                                epochs, batch_size, lr, weight_decay, max_pairs_per_epoch, patience, seed,
                                dim, emb_dim, hidden, temperature, history_len; auto: time_budget (minutes,
                                required: the whole tuning, as `genrec train --model auto`), batch_size, seed,
                                threads, device, event_inputs, target_events, max_members (1..; default 3)
    k = 200                     the retrieve stage's candidates; index = "exact" | "faiss" | "auto" (exact up to
                                65,536 items, faiss above; the default of two-tower, sequence models: exact)
    [ranking]                   optional; model = "wide-deep" | "dlrm" | "lr", trained on the retrievers'
                                candidates: k (candidates), epochs, lr, dim, deep_layers, n_hard, ... as keys
    [popular]                   fill_factor = 3
    [rerank]                    exclude_seen, exclude_out_of_stock, max_per_category, boosts = [...]

Each component trains into OUT/work/<name>/ (a bundle of its own), then OUT becomes one bundle holding every
component, with manifest["pipeline"] = retrieve... -> popular -> rank -> rerank. A key that is
not listed above is a ConfigError naming the file, the table and the key. Running the same command again
resumes: a finished sequential run returns at once (its last.pt), a two-tower whose work folder was trained with
the same keys is reused, a finished auto run is reused, and the ranker always retrains, so tuning [ranking] keys retrains the ranker only.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from rich.console import Console

from genrec.bundle import Bundle, BundleWriter

SEQUENTIAL = ("sasrec", "hstu", "hstu-large")
RANKERS = ("dlrm", "wide-deep", "lr")

# `genrec train` flag (as a key) -> TrainConfig field, for the flags whose names differ
SEQ_RENAMES = {"layers": "num_layers", "heads": "num_heads", "time_budget": "time_budget_s"}
SEQ_KEYS = ("epochs", "loss", "num_negatives", "batch_size", "lr", "weight_decay", "max_len", "dim", "layers",
            "heads", "dropout", "temperature", "patience", "crop", "item_attributes", "ema", "seed", "threads",
            "device", "precision", "time_budget", "schedule", "id_dropout", "event_inputs",
            "target_events")  # fmt: skip
# how to read a user's log, as `genrec train`'s reading flags (genrec.data.io.ReadOptions, tested equal)
READ_KEYS = ("columns", "sep", "timestamp_format", "catalog", "attributes", "name", "k_core", "drop_incomplete")
# `genrec train` flags that are not training settings of one model: data reading ([data] / the dataset),
# where the run goes, resuming and refits, scale-out; max_members: an auto retriever's key (AUTO_KEYS)
NOT_SEQ_KEYS = ("model", "dataset", "out", "restart", "refit_from", "retrieval", "nproc_per_node", "sharding",
                "max_members", *READ_KEYS)  # fmt: skip
TWO_TOWER_MODEL_KEYS = ("dim", "emb_dim", "hidden", "temperature", "history_len")
RANKER_SETUP_KEYS = ("k", "n_hard", "n_random", "max_users", "holdout", "history_len", "use_ann", "test_users",
                     "only_retrieved", "lists_per_user")  # fmt: skip
RANKER_MODEL_KEYS = ("dim", "bottom", "top", "deep_layers", "dropout")
# what `genrec train --model auto` takes
AUTO_KEYS = ("time_budget", "batch_size", "seed", "threads", "device", "event_inputs", "target_events", "max_members")
STAGE_KEYS = {"retrieval": ("model", "k", "index"), "ranking": ("model",)}
DATA_KEYS = ("dataset", "seed", "threads", *READ_KEYS)
INDEX_KINDS = ("exact", "faiss", "auto")  # genrec.pipeline.stages.INDEX_KINDS, without importing torch (tested equal)
POPULAR_KEYS = ("fill_factor",)
RERANK_KEYS = ("exclude_seen", "exclude_purchased", "exclude_out_of_stock", "max_per_category", "boosts")
TOP_KEYS = ("data", "retrieval", "ranking", "popular", "rerank")


class ConfigError(ValueError):
    """A bad pipeline config: the message names the file, the table and the key."""


def _known(model: str, table: str) -> tuple[str, ...]:
    from genrec.ranking.train import CTRConfig, TwoTowerTrainConfig

    if table == "retrieval" and model in SEQUENTIAL:
        keys = SEQ_KEYS
    elif table == "retrieval" and model == "auto":
        keys = AUTO_KEYS
    elif table == "retrieval" and model == "two-tower":
        keys = tuple(f.name for f in fields(TwoTowerTrainConfig)) + TWO_TOWER_MODEL_KEYS
    elif table == "ranking" and model in RANKERS:
        keys = tuple(f.name for f in fields(CTRConfig)) + RANKER_SETUP_KEYS + RANKER_MODEL_KEYS
    else:
        return ()
    return STAGE_KEYS[table] + keys


def _check_keys(path: Path, where: str, got: dict[str, Any], known: tuple[str, ...]) -> None:
    for key in got:
        if key not in known:
            raise ConfigError(f"{path}: {where}: unknown key {key!r} (known: {', '.join(sorted(set(known)))})")


def read_options(path: Path, data: dict[str, Any]) -> Any:
    """The [data] table's reading keys as ReadOptions; a bad value is a ConfigError naming the file and key."""
    from genrec.data.io import ReadOptions

    read = {k: data[k] for k in READ_KEYS if k in data}
    try:
        return ReadOptions.from_dict(read)
    except (ValueError, TypeError) as e:
        key = next((k for k in read if k in str(e)), next(iter(read), "?"))
        raise ConfigError(f"{path}: [data]: key {key!r}: {e}") from None


def load_pipeline_config(path: str | Path) -> dict[str, Any]:
    """Parse and validate a pipeline TOML file; every error is a ConfigError naming the file and key."""
    path = Path(path)
    try:
        cfg = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    _check_keys(path, "top level", cfg, TOP_KEYS)
    data = cfg.get("data")
    if not isinstance(data, dict) or "dataset" not in data:
        raise ConfigError(f"{path}: [data]: key 'dataset' missing")
    _check_keys(path, "[data]", data, DATA_KEYS)
    read_options(path, data)  # a bad reading key is an error now, not after the first component trained
    retrieval = cfg.get("retrieval")
    if not isinstance(retrieval, list) or not retrieval:
        raise ConfigError(f"{path}: [[retrieval]]: at least one retriever table is needed")
    for i, r in enumerate(retrieval, 1):
        model = r.get("model")
        if model not in (*SEQUENTIAL, "two-tower", "auto"):
            raise ConfigError(
                f"{path}: [[retrieval]] #{i}: key 'model' is {model!r}; use {', '.join(SEQUENTIAL)}, two-tower or auto"
            )
        _check_keys(path, f"[[retrieval]] #{i} ({model})", r, _known(model, "retrieval"))
        budget = r.get("time_budget")
        if model == "auto" and (isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0):
            raise ConfigError(f"{path}: [[retrieval]] #{i} (auto): key 'time_budget' (minutes, > 0) is required")
        members = r.get("max_members")
        if members is not None and (isinstance(members, bool) or not isinstance(members, int) or members < 1):
            raise ConfigError(f"{path}: [[retrieval]] #{i} (auto): key 'max_members' must be an integer >= 1")
        if r.get("index", "auto") not in INDEX_KINDS:
            raise ConfigError(f"{path}: [[retrieval]] #{i} ({model}): key 'index' must be exact | faiss | auto")
    ranking = cfg.get("ranking")
    if ranking is not None:
        if not isinstance(ranking, dict) or ranking.get("model") not in RANKERS:
            raise ConfigError(f"{path}: [ranking]: key 'model' must be one of {', '.join(RANKERS)}")
        _check_keys(path, f"[ranking] ({ranking['model']})", ranking, _known(ranking["model"], "ranking"))
    _check_keys(path, "[popular]", cfg.get("popular", {}), POPULAR_KEYS)
    _check_keys(path, "[rerank]", cfg.get("rerank", {}), RERANK_KEYS)
    return cfg


def _sequential_config(r: dict[str, Any], dataset: str, out: Path, data: dict[str, Any]) -> Any:
    from genrec.training.trainer import TrainConfig

    kw: dict[str, Any] = {"threads": data.get("threads"), "seed": data.get("seed", 42),
                          "read": {k: data[k] for k in READ_KEYS if k in data}}  # fmt: skip
    for key, value in r.items():
        if key in STAGE_KEYS["retrieval"]:
            continue
        if key == "target_events" and isinstance(value, str):  # "purchase,cart" as on the command line
            value = [t.strip() for t in value.split(",") if t.strip()]
        kw[SEQ_RENAMES.get(key, key)] = value * 60 if key == "time_budget" else value
    return TrainConfig(model=r["model"], dataset=dataset, out=str(out), **kw)


def _tune(r: dict[str, Any], ctx: Any, out: Path, data: dict[str, Any], console: Console) -> None:
    """A `model = "auto"` retriever: genrec.training.auto.tune within time_budget minutes, as `genrec train
    --model auto`; a finished tuning in `out` is reused (the pipeline resumes)."""
    from genrec.training.auto import MAX_MEMBERS, tune
    from genrec.training.trainer import TrainConfig

    if (out / "tuning.json").exists() and (out / "manifest.json").exists():
        console.print(f"  {out}: auto run finished before, reused")
        return
    kw = {k: r[k] for k in ("batch_size", "device", "event_inputs") if k in r}
    if isinstance(targets := r.get("target_events"), str):  # "purchase,cart" as on the command line
        kw["target_events"] = [t.strip() for t in targets.split(",") if t.strip()]
    elif targets is not None:
        kw["target_events"] = targets
    base = TrainConfig(model="auto", dataset=ctx.name, out=str(out), seed=r.get("seed", data.get("seed", 42)),
                       threads=r.get("threads", data.get("threads")),
                       read={k: data[k] for k in READ_KEYS if k in data}, **kw)  # fmt: skip
    tune(base, float(r["time_budget"]) * 60, dataset=ctx.ds, console=console, restart=True,
         max_members=r.get("max_members", MAX_MEMBERS))  # fmt: skip


def _trained_two_tower(part: Path, opts: dict[str, Any]) -> bool:
    """Whether part/ holds a two-tower trained with these keys (by an earlier run of the same config)."""
    if not (part / "manifest.json").exists():
        return False
    cfg = Bundle.open(part).component(role="retrieval").config
    stored = {**cfg["model"], **cfg["features"], **cfg["train"]}
    return all(k in stored and stored[k] == v for k, v in opts.items())


def train_pipeline(config: str | Path, out: str | Path, console: Console | None = None) -> Bundle:
    """Train every component the config declares and write them as ONE bundle at `out`."""
    from genrec.data.datasets import load_dataset
    from genrec.pipeline.runs import Context
    from genrec.runtime import setup
    from genrec.stack.train import train_ranking_model
    from genrec.training.trainer import train

    console = console or Console()
    path, out = Path(config), Path(out)
    cfg = load_pipeline_config(path)
    data = cfg["data"]
    setup(data.get("threads"))
    read = read_options(path, data)
    ds = load_dataset(data["dataset"], seed=data.get("seed", 42), read=read)
    if ds.report is not None:  # a user's file: what became of its rows, as `genrec train` prints it
        ds.report.print(console)
    ctx = Context(data["dataset"], seed=data.get("seed", 42), ds=ds)
    work = out / "work"
    parts: list[Path] = []
    for r in cfg["retrieval"]:
        model = r["model"]
        part = work / f"{model}{len([p for p in parts if p.name.startswith(model)]) or ''}"
        console.rule(f"retrieval: {model} -> {part}")
        try:
            opts = {k: v for k, v in r.items() if k not in STAGE_KEYS["retrieval"]}
            if model == "two-tower" and _trained_two_tower(part, opts):
                console.print(f"{part}: trained with these keys already, reused")
            elif model == "two-tower":
                train_ranking_model("two-tower", ctx.name, part, context=ctx, console=console,
                                    threads=data.get("threads"), **opts)  # fmt: skip
            elif model == "auto":
                _tune(r, ctx, part, data, console)
            else:
                train(_sequential_config(r, ctx.name, part, data), dataset=ctx.ds, console=console)
        except TypeError as e:
            raise ConfigError(f"{path}: [[retrieval]] ({model}): {e}") from None
        parts.append(part)
    ranking = cfg.get("ranking")
    sources = [Bundle.open(p) for p in parts]
    if ranking is not None:
        part = work / ranking["model"]
        console.rule(f"ranking: {ranking['model']} on the candidates of {', '.join(p.name for p in parts)}")
        opts = {k: v for k, v in ranking.items() if k != "model"}
        train_ranking_model(ranking["model"], ctx.name, part, context=ctx, console=console,
                            retrieval=[str(p) for p in parts], threads=data.get("threads"), **opts)  # fmt: skip
        sources = [Bundle.open(part)]  # the ranker bundle carries copies of the retrievers, named as it uses them
    writer = BundleWriter(out, ctx.ds, data_name=ctx.name)
    for src in sources:
        for name in src.components:
            writer.copy_component(src, name)
    retrievers = [n for n, c in writer.components.items() if c["role"] == "retrieval"]
    specs: list[dict[str, Any]] = []
    for name, r in zip(retrievers, cfg["retrieval"], strict=True):
        spec = {"stage": "retrieve", "component": name, "k": r.get("k", 200)}
        spec["index"] = r.get("index", "auto" if r["model"] == "two-tower" else "exact")
        specs.append(spec)
    specs.append({"stage": "popular", **{"fill_factor": 3, **cfg.get("popular", {})}})
    if ranking is not None:
        specs.append({"stage": "rank", "component": ranking["model"]})
    specs.append({"stage": "rerank", **{"exclude_seen": True, "exclude_out_of_stock": True, **cfg.get("rerank", {})}})
    writer.set_pipeline(specs)
    writer.set_metrics({n: c["metrics"] for n, c in writer.components.items()})
    return writer.commit()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def dump_toml(cfg: dict[str, Any]) -> str:
    """A pipeline config (tables and arrays of tables of scalars, lists, inline tables) as TOML text, e.g. a
    config rewritten by a benchmark or a test; tomllib reads it back unchanged."""
    lines: list[str] = []
    for key, value in cfg.items():
        if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            for table in value:
                lines += [f"[[{key}]]", *(f"{k} = {_toml_value(v)}" for k, v in table.items()), ""]
        elif isinstance(value, dict):
            lines += [f"[{key}]", *(f"{k} = {_toml_value(v)}" for k, v in value.items()), ""]
        else:
            lines.insert(0, f"{key} = {_toml_value(value)}")
    return "\n".join(lines)
