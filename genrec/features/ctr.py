"""What the CTR loaders (genrec.features.criteo, genrec.features.frappe) share: the split container and the
categorical encoding fitted on the training split only.

Every categorical feature gets a vocabulary of the training values seen at least `min_count` times; anything
else (rare, unseen in training, missing) shares the reserved bucket 0, so the dev and test rows never add a
vocabulary entry. One embedding table per feature, `t_<name>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genrec.features.encoders import CategoryEncoder
from genrec.features.jagged import Rows
from genrec.features.schema import FeatureSchema, TableSpec


@dataclass
class CTRData:
    train: Rows
    dev: Rows  # model selection (epochs, settings) happens here; test is scored once
    test: Rows
    schema: FeatureSchema
    protocol: dict[str, str] = field(default_factory=dict)  # where each split comes from, in words


def encode_categoricals(
    names: Sequence[str], columns: dict[str, Sequence[Sequence[str]]], min_count: int = 1, train: str = "train"
) -> tuple[dict[str, dict[str, np.ndarray]], list[TableSpec]]:
    """columns: split -> one sequence of raw string values per feature (in `names` order), N rows each.

    Fits one CategoryEncoder per feature on columns[train]. Returns split -> {name: (N,) int64 ids} and the
    features' tables (size = vocabulary + the reserved bucket)."""
    encs = [CategoryEncoder(min_count).fit(col) for col in columns[train]]
    ids = {
        split: {n: enc.transform(col) for n, enc, col in zip(names, encs, cols, strict=True)}
        for split, cols in columns.items()
    }
    return ids, [TableSpec(f"t_{n}", enc.size, [n]) for n, enc in zip(names, encs, strict=True)]
