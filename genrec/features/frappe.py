"""Frappe context-aware app usage (Baltrunas et al. 2015) in the NFM authors' libFM form, as CTR feature Rows.

$GENREC_DATA_DIR/frappe-partial/frappe.{validation,test}.libfm.gz (the 202k-row training file is not in the
shared data). Each line: `label idx:1 ... idx:1` with label 1 (the user opened the app in that context) or -1
(one of 2 sampled negatives per positive), then exactly 10 one-hot fields in a fixed order (FIELDS), global
indices 0..5381. No dense features.

Splits (the upstream test file is kept whole and scored once): frappe.validation.libfm is shuffled with
`split_seed` and cut into train (1 - dev_fraction) and dev (model selection); frappe.test.libfm is test.
Categorical ids: genrec.features.ctr.encode_categoricals on the train part (values unseen there -> bucket 0).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from genrec.data.io import DataError
from genrec.features.ctr import CTRData, encode_categoricals
from genrec.features.jagged import Rows, SparseColumns
from genrec.features.schema import FeatureSchema

# (field, first global index, number of values) in line order; 5,382 indices in all
FIELDS = (
    ("user", 0, 957),
    ("item", 957, 4082),
    ("daytime", 5039, 7),
    ("weekday", 5046, 7),
    ("isweekend", 5053, 2),
    ("homework", 5055, 3),
    ("cost", 5058, 2),
    ("weather", 5060, 9),
    ("country", 5069, 80),
    ("city", 5149, 233),
)
SPARSE = [name for name, _, _ in FIELDS]
FOLDER = "frappe-partial"


def read_frappe(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One libFM file (.gz or plain) -> labels (N,) float32 in {0, 1}, field values (N, 10) int64 (local index
    inside each field, 0-based). Errors name the file, line and field."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; set GENREC_DATA_DIR to the folder that holds {FOLDER}/")
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        lines = f.read().splitlines()
    labels, rows, line_nos = [], [], []
    for line_no, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(FIELDS) + 1:
            raise DataError(path, f"expected a label and {len(FIELDS)} idx:1 fields, found {len(parts)}", row=line_no)
        if parts[0] not in ("1", "-1"):
            raise DataError(path, f"label must be 1 or -1, got {parts[0]!r}", row=line_no, column="label")
        labels.append(parts[0] == "1")
        rows.append(parts[1:])
        line_nos.append(line_no)
    local = np.full((len(rows), len(FIELDS)), -1, np.int64)
    for j, (name, first, size) in enumerate(FIELDS):
        for r, parts in enumerate(rows):
            tok = parts[j]
            idx = tok[:-2]
            if tok.endswith(":1") and idx.isdigit() and first <= int(idx) < first + size:
                local[r, j] = int(idx) - first
            else:
                raise DataError(
                    path,
                    f"expected idx:1 with idx in [{first}, {first + size}), got {tok!r}",
                    row=line_nos[r],
                    column=name,
                )
    return np.array(labels, np.float32), local


def load_frappe(root: Path, dev_fraction: float = 0.2, split_seed: int = 0, min_count: int = 1) -> CTRData:
    if not 0 < dev_fraction < 1:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    folder = root / FOLDER
    pool_y, pool_x = read_frappe(folder / "frappe.validation.libfm.gz")
    test_y, test_x = read_frappe(folder / "frappe.test.libfm.gz")
    order = np.random.default_rng(split_seed).permutation(len(pool_y))
    n_dev = int(round(dev_fraction * len(order)))
    parts = {
        "train": (pool_y[order[n_dev:]], pool_x[order[n_dev:]]),
        "dev": (pool_y[order[:n_dev]], pool_x[order[:n_dev]]),
        "test": (test_y, test_x),
    }
    columns = {s: [x[:, j].astype(str).tolist() for j in range(len(FIELDS))] for s, (_, x) in parts.items()}
    ids, tables = encode_categoricals(SPARSE, columns, min_count)
    rows = {s: Rows(np.zeros((len(y), 0), np.float32), SparseColumns.single(ids[s]), y) for s, (y, _) in parts.items()}
    pct = round(100 * dev_fraction)
    protocol = {
        "train": f"frappe.validation.libfm, {100 - pct}% (shuffled, seed {split_seed})",
        "dev": f"frappe.validation.libfm, the other {pct}%: model selection",
        "test": "frappe.test.libfm, whole, scored once",
    }
    return CTRData(rows["train"], rows["dev"], rows["test"], FeatureSchema(dense=[], tables=tables), protocol)
