"""The Criteo display-ads sample (criteo-sample/{train,dev,test}.tsv) as feature Rows for CTR models.

Each line: label, I1..I13 (integer counts, empty = missing), C1..C26 (hashed categorical strings, empty =
missing), tab-separated, no header. Dense: log1p(max(x, 0)) standardised with train statistics (missing ->
the train mean). Categorical: genrec.features.ctr.encode_categoricals (train values seen at least `min_count`
times; everything else shares the reserved bucket 0). Crossed features (wide part only): every pair
among the `cross_from` lowest-cardinality categorical features, hashed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from genrec.data.io import DataError
from genrec.features.ctr import CTRData, encode_categoricals
from genrec.features.encoders import NumericScaler, hash_cross
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


def load_criteo(root: Path, min_count: int = 2, cross_from: int = 5, cross_buckets: int = 1 << 16) -> CTRData:
    folder = root / "criteo-sample"
    raw = {s: read_criteo(folder / f"{s}.tsv") for s in ("train", "dev", "test")}
    ids, tables = encode_categoricals(SPARSE, {s: cats for s, (_, _, cats) in raw.items()}, min_count)
    scalers = [NumericScaler(log=True).fit(raw["train"][1][:, j]) for j in range(13)]
    # crosses between the lowest-cardinality features (few values: the crosses stay dense enough to learn)
    sizes = {t.features[0]: t.num_embeddings for t in tables}
    small = sorted(range(len(SPARSE)), key=lambda j: (sizes[SPARSE[j]], j))
    small = [j for j in small if sizes[SPARSE[j]] > 2][:cross_from]
    crosses = [(SPARSE[a], SPARSE[b]) for a, b in itertools.combinations(sorted(small), 2)]
    out = {}
    for split, (labels, dense, _) in raw.items():
        x = np.stack([sc.transform(dense[:, j]) for j, sc in enumerate(scalers)], 1)
        sp = SparseColumns.single(ids[split])
        for a, b in crosses:
            sp.add(f"x_{a}_{b}", hash_cross(ids[split][a], ids[split][b], cross_buckets))
        out[split] = Rows(x, sp, labels)
    tables += [TableSpec(f"t_x_{a}_{b}", cross_buckets + 1, [f"x_{a}_{b}"], wide_only=True) for a, b in crosses]
    protocol = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
    return CTRData(out["train"], out["dev"], out["test"], FeatureSchema(dense=DENSE, tables=tables), protocol)
