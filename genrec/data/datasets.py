"""Named datasets (`--dataset`): public benchmarks under $GENREC_DATA_DIR, genrec's synthetic shop, or a file.

ml-1m          the SASRec split: ml-1m/sasrec/ml-1m.txt.gz (6,040 users, 3,416 items, 999,611 events)
ml-100k        ml-100k/u.data with timestamps (943 users, 1,682 items, 100,000 events)
amazon-beauty  amazon-beauty/Beauty.txt, S3-Rec split (22,363 users, 12,101 items, 198,502 events)
synthetic      genrec's simulated shop (offline default); `synthetic:SIZE` picks a preset size
PATH           the user's own event log (CSV/TSV/Parquet/JSONL), read with ReadOptions (column names, separator,
               time format); its catalog is ReadOptions.catalog or catalog.* beside it. The load's ReadReport
               says what became of every row.
The item vocabulary is every item with events, then every catalog item without (in catalog order).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from genrec.data.io import DataError, ReadOptions
from genrec.data.sequences import SequenceData, build_sequences, from_item_lists

PUBLIC = ("ml-1m", "ml-100k", "amazon-beauty")


def data_dir() -> Path:
    """$GENREC_DATA_DIR, else ../shared/data next to the working directory if it exists."""
    env = os.environ.get("GENREC_DATA_DIR")
    if env:
        return Path(env)
    for cand in (Path.cwd() / "../shared/data", Path(__file__).resolve().parents[3] / "shared/data"):
        if cand.is_dir():
            return cand.resolve()
    return Path("data")


COVERAGE_WARNING = 0.9  # warn when the catalog describes fewer of the events' items than this


@dataclass
class ReadReport:
    """What became of a user file's rows (printed after reading)."""

    path: str
    rows: int  # data rows read
    merged: int  # rows folded into the previous token: same user, same item, consecutive (a view -> cart -> buy)
    duplicates: int  # of which exact duplicates (same user, item, timestamp and event type)
    ties: int  # rows sharing a user's timestamp with an earlier row (kept in file order)
    users: int
    items: int
    events: int  # tokens in the sequences
    event_types: dict[str, int] = field(default_factory=dict)  # rows per event type
    first: int | None = None  # earliest / latest timestamp
    last: int | None = None
    catalog: str | None = None
    catalog_items: int = 0
    covered: int = 0  # the events' items that the catalog lists
    k_core: int = 0  # > 1: the rows kept are the log's k-core
    rows_read: int = 0  # rows in the file with every value (before the k-core)
    incomplete: dict[str, int] = field(default_factory=dict)  # --drop-incomplete: file column -> rows dropped
    timestamp_format: tuple[str, str] | None = None  # a day/month order read from the data: (format, why)
    catalog_columns: list[str] = field(default_factory=list)  # no catalog file: the log's columns that describe items
    user_columns: list[str] = field(default_factory=list)  # the log's columns that describe its users
    whole_number_ids: list[str] = field(default_factory=list)  # id columns of 17850.0-style values read as 17850
    positions: dict[str, str] = field(default_factory=dict)  # a file without a header: genrec column -> position
    recognized: dict[str, str] = field(default_factory=dict)  # genrec column -> the file's, found by a known name
    layout: str | None = None  # "pairs" / "lists": a space-separated id file of a published split (no times)
    parts: list[str] = field(default_factory=list)  # a published split's train, valid and test files, read as one

    @property
    def coverage(self) -> float | None:
        return self.covered / self.items if self.catalog is not None and self.items else None

    def warnings(self) -> list[str]:
        cov = self.coverage
        if cov is not None and cov < COVERAGE_WARNING:
            return [
                f"the catalog {Path(self.catalog).name} describes {self.covered:,} of the {self.items:,} items in the "
                f"events ({cov:.0%}); the others get no attributes (check --catalog and the item id column)"
            ]
        return []

    def print(self, console: Any) -> None:
        """The report to a rich Console, as plain text, warnings in yellow (every command that reads a log)."""
        for line in self.lines():
            console.print(line, markup=False, highlight=False)
        for warning in self.warnings():
            console.print(f"[yellow]warning:[/] {warning}")

    def lines(self) -> list[str]:
        from datetime import UTC, datetime

        def day(t: int) -> str:
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")

        out = [f"read {Path(self.path).name}: {self.rows:,} rows, {self.users:,} users, {self.items:,} items"]
        if self.parts:
            out.append(f"  a published split read as one log: {' + '.join(self.parts)} (each user's last two "
                       "events are its validation and test events again)")  # fmt: skip
        if self.incomplete:
            cols = ", ".join(f"{v:,} without {k!r}" for k, v in self.incomplete.items())
            out.append(f"  dropped rows that lack a value (--drop-incomplete): {cols}")
        if self.k_core > 1:
            out.append(f"  {self.k_core}-core: {self.rows:,} of {self.rows_read:,} rows kept (users and items with at "
                       f"least {self.k_core} rows, repeatedly)")  # fmt: skip
        if self.positions:
            cols = ", ".join(f"{k} = column {v}" for k, v in self.positions.items())
            out.append(f"  no header row: {cols} (change with --columns NAME=POSITION)")
        if self.recognized:
            cols = ", ".join(f"{k} = {v!r}" for k, v in self.recognized.items())
            out.append(f"  columns recognised by name: {cols} (change with --columns NAME=COLUMN)")
        if self.layout:
            what = "user item pairs" if self.layout == "pairs" else "a user and their items per line"
            out.append(f"  space-separated ids, {what}: no timestamps, each user's events in file order")
        if self.event_types:
            out.append("  event types: " + ", ".join(f"{k} {v:,}" for k, v in self.event_types.items()))
        if self.whole_number_ids:
            cols = ", ".join(repr(c) for c in self.whole_number_ids)
            out.append(f"  ids written as whole-number floats read as integers (17850.0 -> 17850): {cols}")
        if self.timestamp_format is not None:
            fmt, why = self.timestamp_format
            out.append(f"  timestamps read as {fmt!r}, with or without a time ({why}; change with --timestamp-format)")
        if self.first is not None and self.last is not None:
            out.append(f"  time span: {day(self.first)} .. {day(self.last)}")
        if not self.layout:  # an order-only file: nothing merged, no times to tie
            out.append(
                f"  {self.merged:,} rows merged into the previous token (same user and item, consecutive: one "
                f"visit), {self.duplicates:,} of them exact duplicates"
            )
            out.append(f"  {self.ties:,} rows share a user's timestamp with an earlier row (ties keep file order)")
            out.append(
                f"  {self.events:,} events in the sequences ({self.rows - self.events:,} rows fewer, merged above)"
            )
        if self.user_columns:
            out.append(
                f"  user attributes from the log's own columns: {', '.join(self.user_columns)} (constant per user: "
                "features of the rankers and the two towers, and context-aware popularity for new users)"
            )
        if self.catalog_columns:
            out.append(
                f"  item attributes from the log's own columns: {', '.join(self.catalog_columns)} (constant per item;"
                f" per item the most frequent text, the median number; --catalog FILE replaces them)"
            )
        elif self.catalog is not None:
            out.append(
                f"  catalog {Path(self.catalog).name}: {self.catalog_items:,} items, describes {self.covered:,} of "
                f"{self.items:,} event items ({self.coverage:.0%})"
            )
        else:
            out.append("  no catalog (--catalog PATH, or catalog.* beside the events)")
        return out


@dataclass
class Dataset:
    """Sequences plus optional side tables (catalog keyed by raw item_id, user features).

    kind: where it came from ("ml-1m", "ml-100k", "amazon-beauty", "synthetic" or "file"; None: go by the
    sequences' name): it picks the side tables' reader, whatever the data is named. attributes: the catalog columns the models use (None: the
    default choice of genrec.features.tables). report: what reading a user file did to its rows."""

    sequences: SequenceData
    catalog: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    kind: str | None = None
    attributes: tuple[str, ...] | None = None
    report: ReadReport | None = None


def _require(path: Path, name: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"dataset {name!r} needs {path}; set GENREC_DATA_DIR to the folder that holds {name}/")
    return path


def _read_item_lists(path: Path, first_is_user: bool) -> tuple[list[list[int]], list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = [line.split() for line in f if line.strip()]
    if first_is_user:
        return [[int(x) for x in r[1:]] for r in rows], [r[0] for r in rows]
    return [[int(x) for x in r] for r in rows], [str(i + 1) for i in range(len(rows))]


def load_ml1m(root: Path) -> Dataset:
    path = _require(root / "ml-1m/sasrec/ml-1m.txt.gz", "ml-1m")
    # 'user item' pairs in order, users grouped: build per-user lists keeping file order.
    raw = np.loadtxt(gzip.open(path, "rt"), dtype=np.int64)
    users, starts = np.unique(raw[:, 0], return_index=True)
    order = np.argsort(starts, kind="stable")
    bounds = np.append(np.sort(starts), len(raw))
    lists = [raw[bounds[k] : bounds[k + 1], 1].tolist() for k in range(len(order))]
    seq = from_item_lists(lists, "ml-1m", [str(u) for u in users[order]])
    catalog = _ml1m_catalog(root)
    return Dataset(seq, catalog=catalog, kind="ml-1m")


def _ml1m_catalog(root: Path) -> pl.DataFrame | None:
    movies = root / "ml-1m/original/movies.dat"
    mapping = root / "ml-1m/sasrec/sas_to_original_items.txt"
    if not (movies.exists() and mapping.exists()):
        return None
    m = pl.read_csv(mapping, separator=" ", has_header=False, new_columns=["item_id", "movie_id"])
    lines = movies.read_bytes().decode("latin-1").splitlines()
    parts = [ln.split("::") for ln in lines if ln]
    mv = pl.DataFrame(
        {
            "movie_id": [int(p[0]) for p in parts],
            "title": [p[1] for p in parts],
            "genres": [p[2] for p in parts],
        }
    )
    return (
        m.join(mv, on="movie_id", how="left")
        .with_columns(pl.col("item_id").cast(pl.Utf8), pl.col("genres").str.split("|").list.first().alias("category"))
        .sort(pl.col("item_id").cast(pl.Int64))
    )


def load_ml100k(root: Path) -> Dataset:
    path = _require(root / "ml-100k/u.data", "ml-100k")
    df = pl.read_csv(path, separator="\t", has_header=False, new_columns=["user_id", "item_id", "rating", "timestamp"])
    events = df.select(
        pl.col("user_id").cast(pl.Utf8),
        pl.col("item_id").cast(pl.Utf8),
        pl.col("timestamp").cast(pl.Int64),
        pl.col("rating").cast(pl.Utf8).alias("event_type"),
    )
    catalog = None
    item_file = root / "ml-100k/u.item"
    if item_file.exists():
        rows = [ln.split("|") for ln in item_file.read_bytes().decode("latin-1").splitlines() if ln]
        genres = [ln.split("|")[0] for ln in (root / "ml-100k/u.genre").read_text().splitlines() if ln]
        catalog = pl.DataFrame(
            {
                "item_id": [r[0] for r in rows],
                "title": [r[1] for r in rows],
                "category": [
                    next((g for g, f in zip(genres, r[5:], strict=False) if f == "1"), "unknown") for r in rows
                ],
            }
        )
    return Dataset(build_sequences(events, name="ml-100k"), catalog=catalog, kind="ml-100k")


def load_beauty(root: Path) -> Dataset:
    path = _require(root / "amazon-beauty/Beauty.txt", "amazon-beauty")
    lists, users = _read_item_lists(path, first_is_user=True)
    seq = from_item_lists(lists, "amazon-beauty", users)
    catalog = None
    attr_file = root / "amazon-beauty/Beauty_item2attributes.json"
    if attr_file.exists():
        import json

        attrs = json.loads(attr_file.read_text())
        catalog = pl.DataFrame(
            {"item_id": list(attrs.keys()), "attributes": [list(map(int, v)) for v in attrs.values()]}
        ).sort(pl.col("item_id").cast(pl.Int64))
    return Dataset(seq, catalog=catalog, kind="amazon-beauty")


def load_synthetic(size: str = "small", seed: int = 0, attributes: tuple[str, ...] | None = None) -> Dataset:
    from genrec.data.synthetic import SHOP_SIZES, generate_shop, shop_config

    if size not in SHOP_SIZES:
        raise ValueError(f"unknown synthetic size {size!r}; choose from {', '.join(SHOP_SIZES)}")
    shop = generate_shop(shop_config(size, seed=seed))
    seq = build_sequences(shop.events, name=f"synthetic-{size}")
    return Dataset(seq, catalog=shop.catalog, users=shop.users, kind="synthetic", attributes=attributes)


def load_path(path: Path, read: ReadOptions | None = None) -> Dataset:
    """A user's event log (+ catalog), read with `read`, with a ReadReport of what became of its rows."""
    from genrec.data.io import event_columns, read_catalog, read_events, split_parts, whitespace_layout

    read = read or ReadOptions()
    path = Path(path)
    stats: dict = {}
    catalog = find_catalog(path, read)
    events = read_events(path, read, stats=stats, item_columns=catalog is None)
    cat = read_catalog(catalog, read) if catalog else None
    from_log: list[str] = []
    if cat is None and (items := stats.get("item_columns")) is not None:  # a flat export describes its items
        cat, from_log = items, [c for c in items.columns if c != "item_id"]
    if read.attributes is not None:
        if cat is None:
            raise ValueError("--attributes needs a catalog: pass --catalog PATH (or put catalog.* beside the events; "
                             "columns of the log that describe its items count too)")  # fmt: skip
        missing = [a for a in read.attributes if a not in cat.columns or a == "item_id"]
        if missing:
            listed = ", ".join(c for c in cat.columns if c != "item_id")
            raise DataError(catalog or path, f"no attribute column {missing[0]!r} (attribute columns: {listed})")
    # a published split's sequences are already what the models see: repeats stay, as in its protocol
    layout = whitespace_layout(path, read)
    seq = build_sequences(events, name=read.name or data_name(path), collapse_repeats=layout is None)
    report = _report(path, events, seq, catalog or path, cat)
    report.catalog_columns = from_log
    users = stats.get("user_columns")
    report.user_columns = [c for c in users.columns if c != "user_id"] if users is not None else []
    report.k_core, report.rows_read = read.k_core, stats["rows_read"]
    report.incomplete, report.timestamp_format = stats["incomplete"], stats.get("timestamp_format")
    report.whole_number_ids = stats.get("whole_number_ids", [])
    names = event_columns(path, read)
    if names["user_id"].isdigit():
        report.positions = {k: v for k, v in names.items() if v.isdigit()}
    report.recognized = {k: v for k, v in names.items() if v not in (k, read.columns.get(k)) and not v.isdigit()}
    report.layout = layout
    if len(parts := split_parts(path)) > 1:
        report.parts = [p.name for p in parts]
    return Dataset(seq, catalog=cat, users=users, kind="file", attributes=read.attributes, report=report)


def find_catalog(events: Path, read: ReadOptions) -> Path | None:
    """read.catalog, else catalog.{parquet,csv,tsv,jsonl} beside the events, else the published S3-Rec
    splits' NAME_item2attributes.json beside NAME.txt, else None."""
    if read.catalog:
        return Path(read.catalog)
    names = (*_CATALOGS, events.name.split(".")[0] + "_item2attributes.json")
    return next((events.parent / c for c in names if (events.parent / c).exists()), None)


_CATALOGS = ("catalog.parquet", "catalog.csv", "catalog.tsv", "catalog.jsonl", "catalog.xlsx")


_GENERIC_STEMS = {"events", "event", "log", "logs", "interactions", "ratings", "reviews", "clicks", "data", "train"}


def data_name(path: Path) -> str:
    """A run's data name: the file's stem ("Toys" for data/Toys.txt), or for a generically named file the
    events' folder ("shop" for shop/events.csv)."""
    stem = path.name.split(".")[0]
    folder = path.resolve().parent.name
    return folder if folder and stem.lower() in _GENERIC_STEMS else stem


def _report(
    path: Path, events: pl.DataFrame, seq: SequenceData, catalog: Path | None, cat: pl.DataFrame | None
) -> ReadReport:
    key = ["user_id", "item_id", "timestamp"] + (["event_type"] if "event_type" in events.columns else [])
    rows = events.height
    types = {}
    if "event_type" in events.columns:
        counts = events["event_type"].value_counts(sort=True)
        types = dict(zip(counts["event_type"].to_list(), counts["count"].to_list(), strict=True))
    item_ids = events["item_id"].unique()
    ts = events["timestamp"]
    return ReadReport(
        path=str(path),
        rows=rows,
        merged=rows - len(seq.items),
        duplicates=rows - events.select(key).n_unique(),
        ties=rows - events.select("user_id", "timestamp").n_unique(),
        users=seq.num_users,
        items=seq.num_items,
        events=len(seq.items),
        event_types=types,
        first=int(ts.min()) if ts.null_count() < rows else None,
        last=int(ts.max()) if ts.null_count() < rows else None,
        catalog=str(catalog) if cat is not None else None,
        catalog_items=cat.height if cat is not None else 0,
        covered=int(item_ids.is_in(cat["item_id"].implode()).sum()) if cat is not None else 0,
    )


def _looks_like_path(name: str) -> bool:
    suffixes = (".csv", ".tsv", ".txt", ".dat", ".gz", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")
    return "/" in name or "\\" in name or name.lower().endswith(suffixes)


def load_dataset(name: str, seed: int = 0, read: ReadOptions | None = None) -> Dataset:
    """Resolve a --dataset value to sequences (+ side tables). `read` applies to a user's file; of it, the
    built-in datasets take only `attributes` (the synthetic shop's catalog)."""
    read = read or ReadOptions()
    root = data_dir()
    builtin = name in PUBLIC or name == "synthetic" or name.startswith("synthetic:")
    if builtin:
        file_only = [k for k in ("columns", "sep", "timestamp_format", "catalog", "name") if k in read.to_dict()]
        if file_only:
            raise ValueError(f"--{file_only[0].replace('_', '-')} reads a user's file; {name!r} is a built-in dataset")
        if read.attributes is not None and not name.startswith("synthetic"):
            raise ValueError(f"--attributes picks columns of a catalog file; {name!r} has its own attribute set")
    if name == "ml-1m":
        ds = load_ml1m(root)
    elif name == "ml-100k":
        ds = load_ml100k(root)
    elif name == "amazon-beauty":
        ds = load_beauty(root)
    elif name == "synthetic" or name.startswith("synthetic:"):
        ds = load_synthetic(name.partition(":")[2] or "small", seed, attributes=read.attributes)
    elif Path(name).is_dir():
        found = [p for p in sorted(Path(name).glob("events.*")) if not p.name.endswith(".tmp")]
        if not found:
            raise DataError(name, f"file not found: {Path(name) / 'events.*'} (pass the event file itself)")
        ds = load_path(found[0], read)
    elif Path(name).exists():
        ds = load_path(Path(name), read)
    elif _looks_like_path(name):
        raise DataError(name, f"file not found: {name}")
    else:
        raise ValueError(
            f"unknown dataset {name!r}: use ml-1m, ml-100k, amazon-beauty, synthetic[:SIZE] or a path to an event file"
        )
    return with_catalog_items(ds)


def with_catalog_items(ds: Dataset) -> Dataset:
    """The item vocabulary grown by the catalog's items that have no events, appended (existing indices stay):
    new products are part of the full catalog, scored in evaluation and recommendable by their attributes."""
    if ds.catalog is None:
        return ds
    seq = ds.sequences
    vocab = seq.item_vocab.extend(ds.catalog["item_id"].cast(pl.Utf8).to_list())
    if len(vocab) == len(seq.item_vocab):
        return ds
    ds.sequences = replace(seq, item_vocab=vocab)
    return ds
