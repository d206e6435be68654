"""Feature rows for CTR-style models: a dense matrix plus per-key jagged sparse ids, sliced into KJT batches.

dense:  (R, F_dense) float32
sparse: for every key, values (sum_r n_r,) int64 and offsets (R + 1,) (single-valued keys: n_r = 1)
labels: (R,) float32 in {0, 1}; groups: (R,) int64 list id (a user's candidate list), optional
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # torchrec is optional (genrec[torchrec]): imported where a KJT is built
    from torchrec import KeyedJaggedTensor


def last_of(values: np.ndarray, offsets: np.ndarray, empty: int = 0) -> np.ndarray:
    """The last value of each row of a jagged array, `empty` for an empty row (also when all rows are)."""
    out = np.full(len(offsets) - 1, empty, dtype=values.dtype if len(values) else np.int64)
    has = offsets[1:] > offsets[:-1]
    out[has] = values[offsets[1:][has] - 1]
    return out


def take_jagged(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` of a jagged array -> (values, offsets) of the selection, in that order."""
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    out_off = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=out_off[1:])
    idx = np.arange(out_off[-1], dtype=np.int64) - np.repeat(out_off[:-1] - starts, lengths)
    return values[idx], out_off


@dataclass
class SparseColumns:
    values: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]

    @property
    def keys(self) -> list[str]:
        return list(self.values)

    @classmethod
    def single(cls, columns: dict[str, np.ndarray]) -> SparseColumns:
        """One id per row for every key: {key: (R,) int64}."""
        n = len(next(iter(columns.values()))) if columns else 0
        off = np.arange(n + 1, dtype=np.int64)
        return cls({k: np.asarray(v, np.int64) for k, v in columns.items()}, {k: off for k in columns})

    def add(self, key: str, values: np.ndarray, offsets: np.ndarray | None = None) -> None:
        values = np.asarray(values, np.int64)
        self.values[key] = values
        self.offsets[key] = offsets if offsets is not None else np.arange(len(values) + 1, dtype=np.int64)

    def take(self, rows: np.ndarray) -> SparseColumns:
        vals, offs = {}, {}
        for k in self.values:
            vals[k], offs[k] = take_jagged(self.values[k], self.offsets[k], rows)
        return SparseColumns(vals, offs)

    def tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(values, offsets) per key as tensors (no copy): what a model's KJT-free inference path reads."""
        return (
            {k: torch.from_numpy(v) for k, v in self.values.items()},
            {k: torch.from_numpy(o) for k, o in self.offsets.items()},
        )

    def to_kjt(self) -> KeyedJaggedTensor:
        from torchrec import KeyedJaggedTensor

        keys = self.keys
        lengths = [np.diff(self.offsets[k]) for k in keys]
        return KeyedJaggedTensor(
            keys=keys,
            values=torch.from_numpy(np.concatenate([self.values[k] for k in keys])),
            lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
        )


@dataclass
class Rows:
    dense: np.ndarray  # (R, F) float32
    sparse: SparseColumns
    labels: np.ndarray  # (R,) float32
    groups: np.ndarray | None = None  # (R,) list id, rows of one list are contiguous

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> Rows:
        return Rows(
            self.dense[rows],
            self.sparse.take(rows),
            self.labels[rows],
            None if self.groups is None else self.groups[rows],
        )

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, KeyedJaggedTensor, torch.Tensor]:
        """(dense (B, F), KJT over B rows, labels (B,)) for the given row indices."""
        sub = self.take(rows)
        return torch.from_numpy(sub.dense), sub.sparse.to_kjt(), torch.from_numpy(sub.labels)
