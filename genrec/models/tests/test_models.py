import numpy as np
import pytest
import torch

from genrec.models import build_model, model_from_config


@pytest.mark.parametrize("name", ["hstu", "hstu-large", "sasrec"])
def test_model_is_causal_over_a_jagged_batch(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_items=50, max_len=16, dropout=0.0).eval()
    items = torch.randint(1, 51, (20,))
    offsets = torch.tensor([0, 8, 20])
    ts = torch.arange(20) * 3600
    out = model.encode(items, offsets, ts)
    assert out.shape == (20, 50) and torch.allclose(out.norm(dim=-1), torch.ones(20))
    changed = items.clone()
    changed[15] = (changed[15] % 50) + 1  # a later item of the second user
    out2 = model.encode(changed, offsets, ts)
    torch.testing.assert_close(out2[:15], out[:15])
    assert not torch.allclose(out2[15:], out[15:])


def test_jagged_batch_equals_one_user_at_a_time() -> None:
    torch.manual_seed(0)
    model = build_model("hstu", num_items=30, max_len=16, dropout=0.0).eval()
    items = torch.randint(1, 31, (17,))
    offsets = torch.tensor([0, 4, 17])
    together = model.encode(items, offsets)
    alone = torch.cat([model.encode(items[:4], torch.tensor([0, 4])), model.encode(items[4:], torch.tensor([0, 13]))])
    torch.testing.assert_close(together, alone)


def test_presets_and_config_roundtrip() -> None:
    large = build_model("hstu-large", num_items=10)
    c = large.config
    assert (c.num_layers, c.num_heads, c.qk_dim, c.v_dim, c.dim, c.max_len) == (8, 2, 25, 25, 50, 200)
    assert c.temperature == 0.05
    again = model_from_config(c.to_dict())
    assert type(again) is type(large) and again.config == c
    with pytest.raises(ValueError):
        build_model("bert", num_items=10)


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_item_attributes_enter_input_and_output_vectors(name: str) -> None:
    model = build_model(name, num_items=4, max_len=8, dim=8, num_attribute_tokens=3, attributes_per_item=2)
    tokens = torch.tensor([[0, 0], [1, 2], [1, 0], [0, 0], [3, 0]])
    model.set_item_attributes(tokens)
    w, a = model.item_emb.weight, model.attr_emb.weight
    torch.testing.assert_close(model.item_vectors()[1], w[1] + (a[1] + a[2]) / 2)
    torch.testing.assert_close(model.item_vectors()[3], w[3])  # no attributes: the id embedding alone
    torch.testing.assert_close(model.item_vectors(torch.tensor([2, 1])), model.item_vectors()[[2, 1]])
    # the tokens travel with the weights
    again = model_from_config(model.config.to_dict())
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.item_vectors(), model.item_vectors())
    with pytest.raises(ValueError):
        model.set_item_attributes(torch.zeros(5, 3, dtype=torch.long))


def test_hstu_large_per_head_widths_follow_a_changed_width_or_head_count() -> None:
    assert (build_model("hstu-large", 50).config.qk_dim, build_model("hstu-large", 50).config.v_dim) == (25, 25)
    assert build_model("hstu-large", 50, dim=64).config.qk_dim == 32  # 2 heads of 32
    assert build_model("hstu-large", 50, num_heads=1).config.v_dim == 50
    assert build_model("hstu-large", 50, dim=64, qk_dim=16).config.qk_dim == 16  # explicit widths win


def test_a_tower_from_jagged_columns_equals_its_kjt_forward() -> None:
    from genrec.features.jagged import SparseColumns
    from genrec.features.schema import FeatureSchema, TableSpec
    from genrec.models.two_tower import Tower

    torch.manual_seed(0)
    schema = FeatureSchema(
        dense=["age"],
        tables=[TableSpec("t_user", 10, ["user"]), TableSpec("t_item", 20, ["recent", "last"], pooling="mean")],
    )
    tower = Tower(schema, emb_dim=8, hidden=[16], dim=4).eval()
    sp = SparseColumns(  # three rows; the second has no recent items (an empty mean-pooled bag)
        {"user": np.array([1, 2, 3]), "recent": np.array([4, 5, 6, 7]), "last": np.array([5, 9, 7])},
        {"user": np.array([0, 1, 2, 3]), "recent": np.array([0, 2, 2, 4]), "last": np.array([0, 1, 2, 3])},
    )
    dense = torch.randn(3, 1)
    with torch.no_grad():
        assert torch.equal(tower.forward_columns(dense, *sp.tensors()), tower(dense, sp.to_kjt()))
