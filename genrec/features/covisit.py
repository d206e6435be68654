"""Item-to-item co-visitation counts from the training sequences: a classic ranking feature.

count(a -> b) = number of times b follows a within `window` positions in some user's training prefix.
Stored sparse as sorted pair keys a * (V + 1) + b with their counts, so catalogs of any size fit; looked up
in bulk with searchsorted. Only training events are counted (validation / test targets never are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genrec.data.sequences import Split


@dataclass
class CoVisitation:
    keys: np.ndarray  # (P,) int64 sorted pair keys
    counts: np.ndarray  # (P,) float32
    num_items: int

    @classmethod
    def from_split(cls, split: Split, window: int = 3) -> CoVisitation:
        items, off = split.train_items, split.train_offsets
        user = np.repeat(np.arange(len(off) - 1), np.diff(off))
        v = split.data.num_items + 1
        pairs = []
        for gap in range(1, window + 1):
            same = user[gap:] == user[:-gap]
            pairs.append(items[:-gap][same] * v + items[gap:][same])
        keys, counts = np.unique(np.concatenate(pairs) if pairs else np.zeros(0, np.int64), return_counts=True)
        return cls(keys, counts.astype(np.float32), split.data.num_items)

    def lookup(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N,), (N,) item ids -> (N,) count(a -> b), 0 when never seen (or either id is padding)."""
        q = np.asarray(a, np.int64) * (self.num_items + 1) + np.asarray(b, np.int64)
        pos = np.minimum(np.searchsorted(self.keys, q), max(len(self.keys) - 1, 0))
        hit = (self.keys[pos] == q) if len(self.keys) else np.zeros(len(q), bool)
        return np.where(
            hit & (np.asarray(a) > 0) & (np.asarray(b) > 0), self.counts[pos] if len(self.keys) else 0, 0
        ).astype(np.float32)
