"""Maximum-inner-product search over item vectors.

    index = FaissIndex.build(vectors (M, d), ids (M,), kind="hnsw")
    scores, ids = index.search(queries (B, d), k)          # (B, k) each, best first; ids = caller's ids
    index.save(folder); load_index(folder)
`ExactIndex` (one matmul + top-k in torch) is the reference the approximate indexes are measured against and
the fallback when faiss is not installed. Vectors are used as given: L2-normalise them for cosine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


class ANNIndex(Protocol):
    kind: str

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, folder: str | Path) -> None: ...


def _write_meta(folder: Path, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "index.json.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(folder / "index.json")


class ExactIndex:
    kind = "exact"

    def __init__(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, np.float32))
        self.ids = np.arange(len(vectors)) if ids is None else np.asarray(ids, np.int64)

    def search(self, queries: np.ndarray, k: int, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """queries: (B, d) -> scores (B, k) float32, ids (B, k) int64, highest inner product first."""
        k = min(k, len(self.ids))
        q = torch.from_numpy(np.ascontiguousarray(queries, np.float32))
        s_out, i_out = [], []
        for p in range(0, len(q), batch):
            top = torch.topk(q[p : p + batch] @ self.vectors.T, k, dim=1)
            s_out.append(top.values.numpy())
            i_out.append(top.indices.numpy())
        scores = np.concatenate(s_out) if s_out else np.zeros((0, k), np.float32)
        idx = np.concatenate(i_out) if i_out else np.zeros((0, k), np.int64)
        return scores, self.ids[idx]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        _write_meta(folder, {"kind": "exact"})
        np.save(folder / "vectors.npy", self.vectors.numpy())
        np.save(folder / "ids.npy", self.ids)


class FaissIndex:
    """faiss inner-product index. kind: "hnsw" (graph; M neighbours, efSearch) or "ivf" (nlist cells, nprobe)."""

    def __init__(self, index: object, ids: np.ndarray, kind: str) -> None:
        self.index, self.ids, self.kind = index, np.asarray(ids, np.int64), kind

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: np.ndarray | None = None,
        kind: str = "hnsw",
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 256,
        nlist: int | None = None,
        nprobe: int = 16,
        train_size: int | None = None,
    ) -> FaissIndex:
        """train_size: IVF centroids from a random sample of that many vectors (k-means over all of 1M is
        minutes on a CPU; a few dozen points per cell place the cells as well)."""
        import faiss

        x = np.ascontiguousarray(vectors, np.float32)
        n, d = x.shape
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            nlist = nlist or max(1, int(4 * np.sqrt(n)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            if train_size is not None and train_size < n:
                index.train(x[np.sort(np.random.default_rng(0).choice(n, train_size, replace=False))])
            else:
                index.train(x)
            index.nprobe = min(nprobe, nlist)
        else:
            raise ValueError(f"unknown index kind {kind!r}: use hnsw or ivf")
        index.add(x)
        return cls(index, np.arange(n) if ids is None else ids, kind)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries: (B, d) -> scores (B, k), ids (B, k); slots faiss could not fill get id -1, score -inf."""
        import faiss

        # faiss's OpenMP team is per calling thread and defaults to every core: searched from a serving
        # thread, its idle workers spun on the core the HTTP thread needed. Follow torch's thread count.
        faiss.omp_set_num_threads(torch.get_num_threads())
        scores, idx = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        ids = np.where(idx >= 0, self.ids[np.maximum(idx, 0)], -1)
        return np.where(idx >= 0, scores, -np.inf).astype(np.float32), ids

    def save(self, folder: str | Path) -> None:
        import faiss

        folder = Path(folder)
        _write_meta(folder, {"kind": self.kind})
        tmp = folder / "index.faiss.tmp"
        faiss.write_index(self.index, str(tmp))
        tmp.replace(folder / "index.faiss")
        np.save(folder / "ids.npy", self.ids)


def load_index(folder: str | Path) -> ExactIndex | FaissIndex:
    folder = Path(folder)
    meta_path = folder / "index.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} holds no index (index.json is missing)")
    kind = json.loads(meta_path.read_text())["kind"]
    ids = np.load(folder / "ids.npy", allow_pickle=False)
    if kind == "exact":
        return ExactIndex(np.load(folder / "vectors.npy", allow_pickle=False), ids)
    import faiss

    return FaissIndex(faiss.read_index(str(folder / "index.faiss")), ids, kind)


def recall_vs_exact(
    index: ExactIndex | FaissIndex, exact: ExactIndex, queries: np.ndarray, k: int = 100
) -> dict[str, float]:
    """recall@k of `index` against exact search (share of the exact top-k it returns) and per-query latency.

    Latency is measured one query at a time (the online case), median and p99 in milliseconds; the
    exact index is timed the same way in the same call so the two can be compared."""
    _, truth = exact.search(queries, k)
    _, got = index.search(queries, k)
    hits = [len(np.intersect1d(a, b[b >= 0])) for a, b in zip(truth, got, strict=True)]
    out = {f"recall@{k}": float(np.sum(hits) / truth.size)}
    for name, ix in (("ann", index), ("exact", exact)):
        times = []
        for q in queries[: min(len(queries), 500)]:
            t0 = time.perf_counter()
            ix.search(q[None, :], k)
            times.append((time.perf_counter() - t0) * 1e3)
        out[f"{name}_latency_ms_p50"] = float(np.median(times))
        out[f"{name}_latency_ms_p99"] = float(np.percentile(times, 99))
    return out
