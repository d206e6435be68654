"""Item-to-item co-visitation counts from the training sequences: a classic ranking feature.

count(a -> b) = number of times b follows a within `window` positions in some user's training prefix.
Stored sparse as sorted pair keys a * (V + 1) + b with their counts, so catalogs of any size fit; looked up
in bulk with searchsorted; a catalog of up to 4,095 items also keeps them as a dense (V + 1)^2 table (at most
64 MB), read by index: the ranker looks up history x candidates pairs per request (20 x 200 on ML-1M), and
the binary search was a seventh of the served pipeline's time there. Only training events are counted
(validation / test targets never are).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genrec.data.sequences import Split


@dataclass
class CoVisitation:
    keys: np.ndarray  # (P,) int64 sorted pair keys
    counts: np.ndarray  # (P,) float32
    num_items: int
    _dense: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    DENSE_MAX_ENTRIES = 1 << 24  # (V + 1)^2 float32 entries: 64 MB

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
        if (self.num_items + 1) ** 2 <= self.DENSE_MAX_ENTRIES:
            if self._dense is None:
                dense = np.zeros((self.num_items + 1) ** 2, np.float32)
                dense[self.keys] = self.counts  # padding rows/columns: no pair has id 0, so they stay 0
                self._dense = dense
            return self._dense[q]
        pos = np.minimum(np.searchsorted(self.keys, q), max(len(self.keys) - 1, 0))
        hit = (self.keys[pos] == q) if len(self.keys) else np.zeros(len(q), bool)
        return np.where(
            hit & (np.asarray(a) > 0) & (np.asarray(b) > 0), self.counts[pos] if len(self.keys) else 0, 0
        ).astype(np.float32)
