"""Nearest-neighbour search over item embeddings: exact torch top-k (reference) and faiss HNSW / IVF."""

from genrec.index.ann import ANNIndex, ExactIndex, FaissIndex, load_index, recall_vs_exact

__all__ = ["ANNIndex", "ExactIndex", "FaissIndex", "load_index", "recall_vs_exact"]
