import torch
from torchrec import KeyedJaggedTensor

from genrec.models.dlrm import DLRM, DLRMConfig, dot_interaction
from genrec.models.sparse import FeatureSchema, TableSpec
from genrec.models.wide_deep import WideDeep, WideDeepConfig


def test_dot_interaction_equals_hand_computation():
    z0 = torch.tensor([[1.0, 2.0]])
    z = torch.tensor([[[3.0, 0.0], [0.0, -1.0], [1.0, 1.0]]])  # 3 sparse features, d = 2
    out = dot_interaction(z0, z)
    # [z0, <z0,z1>, <z0,z2>, <z0,z3>, <z1,z2>, <z1,z3>, <z2,z3>]
    expected = [1.0, 2.0, 3.0, -2.0, 3.0, 0.0, 3.0, -1.0]
    assert out.tolist() == [expected]


def _schema() -> FeatureSchema:
    return FeatureSchema(
        dense=["x0", "x1"],
        tables=[
            TableSpec("t_item_id", 10, ["cand", "hist"], "mean"),
            TableSpec("t_brand", 5, ["brand"]),
            TableSpec("t_x", 50, ["x_cross"], wide_only=True),
        ],
    )


def _kjt(order: list[str]) -> KeyedJaggedTensor:
    data = {
        "cand": ([1, 2], [1, 1]),
        "hist": ([3, 4, 5], [2, 1]),
        "brand": ([1, 0], [1, 1]),
        "x_cross": ([7, 9], [1, 1]),
    }
    return KeyedJaggedTensor(
        keys=order,
        values=torch.tensor([v for k in order for v in data[k][0]]),
        lengths=torch.tensor([n for k in order for n in data[k][1]], dtype=torch.int32),
    )


def test_dlrm_forward_matches_manual_and_reads_by_key():
    torch.manual_seed(0)
    m = DLRM(DLRMConfig(_schema(), dim=4, bottom=[8], top=[8])).eval()
    dense = torch.randn(2, 2)
    a = m(dense, _kjt(["cand", "hist", "brand", "x_cross"]))
    b = m(dense, _kjt(["x_cross", "brand", "hist", "cand"]))  # key order must not matter
    torch.testing.assert_close(a, b)
    # manual: embeddings of each feature, mean-pooled history, then the interaction and top MLP
    w = m.ebc.embedding_bags["t_item_id"].weight
    wb = m.ebc.embedding_bags["t_brand"].weight
    z = torch.stack([w[[1, 2]], torch.stack([w[[3, 4]].mean(0), w[5]]), wb[[1, 0]]], 1)
    manual = m.top(dot_interaction(m.bottom(dense), z)).squeeze(-1)
    torch.testing.assert_close(a, manual)
    assert a.shape == (2,)


def test_wide_deep_sums_wide_and_deep_and_crosses_reach_only_the_wide_part():
    torch.manual_seed(0)
    m = WideDeep(WideDeepConfig(_schema(), dim=4, deep_layers=[8])).eval()
    dense, kjt = torch.randn(2, 2), _kjt(["cand", "hist", "brand", "x_cross"])
    with torch.no_grad():
        before = m(dense, kjt)
        m.wide.ebc.embedding_bags["t_x"].weight[7] = 5.0  # row 0's cross id
        after = m(dense, kjt)
        deep = m.deep(torch.cat([dense, *(m.deep_ebc(kjt)[k] for k in m.deep_keys)], 1)).squeeze(-1)
        torch.testing.assert_close(after, m.wide(dense, kjt) + deep)
    torch.testing.assert_close(after - before, torch.tensor([5.0, 0.0]))
    assert "x_cross" not in m.deep_keys
