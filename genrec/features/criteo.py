"""The Criteo display-ads sample (criteo-sample/{train,dev,test}.tsv) as feature Rows for CTR models.

Each line: label, I1..I13 (integer counts, empty = missing), C1..C26 (hashed categorical strings, empty =
missing), tab-separated, no header. Dense: log1p(max(x, 0)) standardised with train statistics (missing ->
the train mean). Categorical: vocabulary of train values seen at least `min_count` times; everything else
(rare, unseen in train, missing) shares the reserved bucket 0. Crossed features (wide part only): every pair
among the `cross_from` lowest-cardinality categorical features, hashed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrec.data.io import DataError
from genrec.features.encoders import CategoryEncoder, NumericScaler, hash_cross
from genrec.features.jagged import Rows, SparseColumns
from genrec.features.schema import FeatureSchema, TableSpec

DENSE = [f"I{i}" for i in range(1, 14)]
SPARSE = [f"C{i}" for i in range(1, 27)]


def read_criteo(path: Path) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """-> labels (N,), dense (N, 13) float with NaN for missing, categorical columns (26 lists of N strings)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; set GENREC_DATA_DIR to the folder that holds criteo-sample/")
    labels, dense, cats = [], [], [[] for _ in SPARSE]
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            p = line.rstrip("\n").split("\t")
            if len(p) != 40:
                raise DataError(path, f"expected 40 tab-separated fields, found {len(p)}", row=line_no)
            if p[0] not in ("0", "1"):
                raise DataError(path, f"label must be 0 or 1, got {p[0]!r}", row=line_no, column="label")
            labels.append(float(p[0]))
            row = []
            for j, v in enumerate(p[1:14]):
                try:
                    row.append(float(v) if v else np.nan)
                except ValueError:
                    raise DataError(path, f"not a number: {v!r}", row=line_no, column=DENSE[j]) from None
            dense.append(row)
            for j, v in enumerate(p[14:]):
                cats[j].append(v)
    return np.array(labels, np.float32), np.array(dense, np.float64), cats


@dataclass
class CriteoData:
    train: Rows
    dev: Rows
    test: Rows
    schema: FeatureSchema


def load_criteo(root: Path, min_count: int = 2, cross_from: int = 5, cross_buckets: int = 1 << 16) -> CriteoData:
    folder = root / "criteo-sample"
    raw = {s: read_criteo(folder / f"{s}.tsv") for s in ("train", "dev", "test")}
    _, tr_dense, tr_cats = raw["train"]
    scalers = [NumericScaler(log=True).fit(tr_dense[:, j]) for j in range(13)]
    encs = [CategoryEncoder(min_count).fit(col) for col in tr_cats]
    # crosses between the lowest-cardinality features (few values: the crosses stay dense enough to learn)
    small = sorted(range(len(SPARSE)), key=lambda j: (encs[j].size, j))
    small = [j for j in small if encs[j].size > 2][:cross_from]
    crosses = list(itertools.combinations(sorted(small), 2))
    out = {}
    for split, (labels, dense, cats) in raw.items():
        x = np.stack([sc.transform(dense[:, j]) for j, sc in enumerate(scalers)], 1)
        ids = {name: enc.transform(col) for name, enc, col in zip(SPARSE, encs, cats, strict=True)}
        sp = SparseColumns.single(ids)
        for a, b in crosses:
            sp.add(f"x_{SPARSE[a]}_{SPARSE[b]}", hash_cross(ids[SPARSE[a]], ids[SPARSE[b]], cross_buckets))
        out[split] = Rows(x, sp, labels)
    tables = [TableSpec(f"t_{n}", enc.size, [n]) for n, enc in zip(SPARSE, encs, strict=True)]
    tables += [
        TableSpec(f"t_x_{SPARSE[a]}_{SPARSE[b]}", cross_buckets + 1, [f"x_{SPARSE[a]}_{SPARSE[b]}"], wide_only=True)
        for a, b in crosses
    ]
    return CriteoData(out["train"], out["dev"], out["test"], FeatureSchema(dense=DENSE, tables=tables))
