"""Encoders fitted on training rows only: categorical vocabularies with a reserved bucket, numeric scalers, crosses.

Index 0 of every categorical feature is the reserved bucket for values never seen in training (and for
missing values), so a new brand or occupation at serving time maps to a learned "unknown" row instead of
failing or aliasing a real value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

UNSEEN = 0


@dataclass
class CategoryEncoder:
    """Raw string values -> ids 1..V in first-seen order of the training values; anything else -> 0."""

    min_count: int = 1  # values seen fewer times in training also go to the reserved bucket
    vocab: dict[str, int] = field(default_factory=dict)

    def fit(self, values: Iterable[str | None]) -> CategoryEncoder:
        counts = Counter(v for v in values if v is not None and v != "")
        keep = [v for v, c in counts.items() if c >= self.min_count]
        self.vocab = {v: i + 1 for i, v in enumerate(keep)}
        return self

    @property
    def size(self) -> int:
        """Table rows needed: V + the reserved bucket."""
        return len(self.vocab) + 1

    def transform(self, values: Sequence[str | None]) -> np.ndarray:
        """(N,) raw values -> (N,) int64 ids."""
        get = self.vocab.get
        return np.fromiter((get(v, UNSEEN) if v is not None else UNSEEN for v in values), np.int64, len(values))


@dataclass
class NumericScaler:
    """x -> (x - mean) / std with statistics of the training rows; NaN (missing) -> 0, the training mean."""

    mean: float = 0.0
    std: float = 1.0
    log: bool = False  # log1p(max(x, 0)) first, for heavy-tailed counts and prices

    def _pre(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        return np.log1p(np.maximum(x, 0.0)) if self.log else x

    def fit(self, x: np.ndarray) -> NumericScaler:
        v = self._pre(x)
        v = v[np.isfinite(v)]
        if len(v):
            self.mean, self.std = float(v.mean()), float(v.std()) or 1.0
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (self._pre(x) - self.mean) / self.std
        return np.where(np.isfinite(z), z, 0.0).astype(np.float32)


def hash_cross(a: np.ndarray, b: np.ndarray, buckets: int) -> np.ndarray:
    """Crossed feature of two id columns (N,), (N,) -> (N,) ids in 1..buckets; 0 if either side is unseen.

    A multiplicative hash of the pair (a one-hot product feature without a |A| x |B| vocabulary)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    h = (a * 1_000_003 + b * 7_919 + 12_345) % buckets + 1
    return np.where((a == UNSEEN) | (b == UNSEEN), UNSEEN, h)
