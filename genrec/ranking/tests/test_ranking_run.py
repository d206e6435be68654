import numpy as np
import pytest
from rich.console import Console

from genrec.data.datasets import load_synthetic
from genrec.data.sequences import leave_one_out
from genrec.evaluation.metrics import auc, list_metrics
from genrec.features import RankingFeaturizer, build_feature_tables
from genrec.ranking.inference import DenseScaler, build_ranker, ctr_metrics, predict
from genrec.ranking.train import CTRConfig, fit_ctr


def _rows(feat, split, which, users, n_neg, rng):
    u, e, t = split.eval_inputs(which)
    keep = np.isin(u, users)
    u, e, t = u[keep], e[keep], t[keep]
    items = np.concatenate([t[:, None], rng.integers(1, split.data.num_items + 1, (len(u), n_neg))], 1)
    labels = np.zeros(items.shape, np.float32)
    labels[:, 0] = 1
    n = items.shape[1]
    return feat.rows(np.repeat(u, n), items.ravel(), np.repeat(e, n), labels=labels.ravel(), groups=np.repeat(u, n))


def test_auc_and_list_metrics_by_hand():
    assert auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.4, 0.5])) == 0.75
    assert auc(np.array([1, 0]), np.array([0.3, 0.3])) == 0.5
    m = list_metrics(np.array([0, 0, 0, 1, 1]), np.array([0, 1, 0, 1, 0]), np.array([0.9, 0.5, 0.1, 0.2, 0.2]), k=1)
    assert m["HR@1"] == 0.0  # list 0: positive ranked 2nd; list 1: tie counts against the positive
    assert list_metrics(np.array([0, 0]), np.array([1, 0]), np.array([0.9, 0.1]), k=1)["NDCG@1"] == 1.0


@pytest.mark.parametrize("kind", ["dlrm", "wide-deep"])
def test_short_ranking_run_beats_random_ordering(kind):
    ds = load_synthetic("tiny", seed=0)
    split = leave_one_out(ds.sequences)
    feat = RankingFeaturizer(build_feature_tables(ds, split), ds.sequences)
    rng = np.random.default_rng(0)
    users = split.eval_users
    hold = rng.random(len(users)) < 0.2
    train = _rows(feat, split, "valid", users[~hold], 10, rng)
    valid = _rows(feat, split, "valid", users[hold], 10, rng)
    test = _rows(feat, split, "test", users, 10, rng)
    scaler = DenseScaler().fit(train.dense)
    for r in (train, valid, test):
        r.dense = scaler.transform(r.dense)
    model = build_ranker(kind, feat.schema(), dim=8)
    fit_ctr(model, train, valid, CTRConfig(epochs=6, batch_size=256, lr=3e-3), Console(quiet=True))
    m = ctr_metrics(test, predict(model, test))
    random_m = ctr_metrics(test, rng.random(len(test)))
    assert m["AUC"] > random_m["AUC"] + 0.15, (m, random_m)
    assert m["NDCG@10"] > random_m["NDCG@10"] + 0.1


def test_factored_wide_deep_equals_the_model_on_its_rows():
    """The catalog-side precompute is an exact rewrite of W&D: same logits as model(rows) on real rows
    (item attributes, user attributes, request context, crosses, co-visitation, retrieval columns)."""
    import torch

    from genrec.features.ranking import FeatureConfig
    from genrec.ranking.inference import FactoredWideDeep

    ds = load_synthetic("tiny", seed=0)
    split = leave_one_out(ds.sequences)
    cfg = FeatureConfig(extra_dense=["hstu_score", "hstu_rank"])
    feat = RankingFeaturizer(build_feature_tables(ds, split), ds.sequences, cfg)
    rng = np.random.default_rng(0)
    u, e, _ = split.eval_inputs("test")
    u, e = u[:7], e[:7]
    req = feat.requests_at(u, e)
    of = np.repeat(np.arange(len(u)), 30)
    cands = rng.integers(1, split.data.num_items + 1, len(of))
    extra = rng.normal(size=(len(of), 2)).astype(np.float32)
    rows = feat.request_rows(req, of, cands, extra)
    scaler = DenseScaler().fit(rows.dense + rng.normal(size=rows.dense.shape))
    torch.manual_seed(0)
    model = build_ranker("wide-deep", feat.schema(), dim=8).eval()
    with torch.no_grad():
        for p in model.wide.parameters():  # the wide part starts at zero: give every weight a value to test
            p.normal_()
    fac = FactoredWideDeep.of(model, scaler, feat)
    assert fac is not None
    rows.dense = scaler.transform(rows.dense)
    dense, kjt, _ = rows.batch(np.arange(len(rows)))
    with torch.no_grad():
        want = model(dense, kjt)
    got = fac.logits(req, of, cands, extra)
    assert want.abs().max() > 1.0  # not a trivially zero model
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert FactoredWideDeep.of(build_ranker("dlrm", feat.schema(), dim=8), scaler, feat) is None
