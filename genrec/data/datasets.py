"""Named datasets (`--dataset`): public benchmarks under $GENREC_DATA_DIR, genrec's synthetic shop, or a file.

ml-1m          the SASRec split: ml-1m/sasrec/ml-1m.txt.gz (6,040 users, 3,416 items, 999,611 events)
ml-100k        ml-100k/u.data with timestamps (943 users, 1,682 items, 100,000 events)
amazon-beauty  amazon-beauty/Beauty.txt, S3-Rec split (22,363 users, 12,101 items, 198,502 events)
synthetic      genrec's simulated shop (offline default); `synthetic:SIZE` picks a preset size
PATH           the user's own event log (CSV/TSV/Parquet/JSONL), optional catalog beside it
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

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


@dataclass
class Dataset:
    """Sequences plus optional side tables (catalog keyed by raw item_id, user features)."""

    sequences: SequenceData
    catalog: pl.DataFrame | None = None
    users: pl.DataFrame | None = None


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
    return Dataset(seq, catalog=catalog)


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
    return Dataset(build_sequences(events, name="ml-100k"), catalog=catalog)


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
    return Dataset(seq, catalog=catalog)


def load_synthetic(size: str = "small", seed: int = 0) -> Dataset:
    from genrec.data.synthetic import SHOP_SIZES, generate_shop, shop_config

    if size not in SHOP_SIZES:
        raise ValueError(f"unknown synthetic size {size!r}; choose from {', '.join(SHOP_SIZES)}")
    shop = generate_shop(shop_config(size, seed=seed))
    seq = build_sequences(shop.events, name=f"synthetic-{size}")
    return Dataset(seq, catalog=shop.catalog, users=shop.users)


def load_path(path: Path, catalog: Path | None = None) -> Dataset:
    from genrec.data.io import read_catalog, read_events

    events = read_events(path)
    if catalog is None:
        for cand in ("catalog.parquet", "catalog.csv", "catalog.jsonl"):
            if (path.parent / cand).exists():
                catalog = path.parent / cand
                break
    cat = read_catalog(catalog) if catalog else None
    return Dataset(build_sequences(events, name=path.stem), catalog=cat)


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """Resolve a --dataset value to sequences (+ side tables)."""
    root = data_dir()
    if name == "ml-1m":
        return load_ml1m(root)
    if name == "ml-100k":
        return load_ml100k(root)
    if name == "amazon-beauty":
        return load_beauty(root)
    if name == "synthetic" or name.startswith("synthetic:"):
        return load_synthetic(name.partition(":")[2] or "small", seed)
    path = Path(name)
    if path.exists():
        return load_path(path)
    if path.suffix or len(path.parts) > 1:  # meant as a file
        raise FileNotFoundError(f"file not found: {path}")
    raise ValueError(
        f"unknown dataset {name!r}: use ml-1m, ml-100k, amazon-beauty, synthetic[:SIZE] or a path to an event file"
    )
