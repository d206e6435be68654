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


def test_ivf_trains_on_a_sample_when_asked():
    x, q = clustered()
    exact = ExactIndex(x)
    full = FaissIndex.build(x, kind="ivf", nlist=40, nprobe=8)
    sampled = FaissIndex.build(x, kind="ivf", nlist=40, nprobe=8, train_size=800)  # 20 points per cell
    assert sampled.index.is_trained and sampled.index.ntotal == len(x)
    r_full = recall_vs_exact(full, exact, q, k=50)["recall@50"]
    r_sampled = recall_vs_exact(sampled, exact, q, k=50)["recall@50"]
    assert r_sampled > 0.9 and abs(r_full - r_sampled) < 0.05
    # a different sample gives other centroids: the argument is used
    assert not np.allclose(faiss_centroids(full), faiss_centroids(sampled))


def faiss_centroids(ix: FaissIndex) -> np.ndarray:
    return ix.index.quantizer.reconstruct_n(0, ix.index.nlist)
