import numpy as np
import pytest

from genrec.index import ExactIndex, FaissIndex, load_index, recall_vs_exact


def clustered(n: int = 4000, queries: int = 200, d: int = 32, clusters: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Items and queries drawn around the same cluster centres (a structured set, like item embeddings)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(clusters, size=n + queries)] + 0.3 * rng.normal(size=(n + queries, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[:n], x[n:]


def test_exact_index_matches_brute_force():
    x, q = clustered(500, 20)
    scores, ids = ExactIndex(x, np.arange(500) + 7).search(q, 10)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10] + 7
    assert (ids == truth).all()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_against_exact(kind, tmp_path):
    x, q = clustered()
    ids = np.arange(len(x)) * 3  # caller ids differ from row numbers
    ann = FaissIndex.build(x, ids, kind=kind)
    exact = ExactIndex(x, ids)
    res = recall_vs_exact(ann, exact, q, k=100)
    assert res["recall@100"] > 0.9
    # a crippled index (probing 1 of many cells) must score visibly lower: the measurement can fail
    if kind == "ivf":
        bad = FaissIndex.build(x, ids, kind="ivf", nlist=256, nprobe=1)
        assert recall_vs_exact(bad, exact, q, k=100)["recall@100"] < res["recall@100"] - 0.1
    ann.save(tmp_path / kind)
    again = load_index(tmp_path / kind)
    assert (again.search(q[:5], 10)[1] == ann.search(q[:5], 10)[1]).all()
