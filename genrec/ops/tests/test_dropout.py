import pytest
import torch

from genrec.ops.dropout import Dropout, dropout, dropout_mask


def test_mask_rate_and_seeding() -> None:
    torch.manual_seed(0)
    m = dropout_mask((1000, 1000), 0.2)
    assert m.dtype == torch.bool and m.shape == (1000, 1000)
    assert abs(m.float().mean().item() - 0.8) < 0.002  # 4 standard errors of a 1e6-draw mean
    torch.manual_seed(0)
    assert torch.equal(dropout_mask((1000, 1000), 0.2), m)  # manual_seed fixes the mask
    assert not torch.equal(dropout_mask((1000, 1000), 0.2), m)  # and it advances


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_scales_kept_entries_and_routes_gradients(dtype: torch.dtype) -> None:
    x = torch.randn(300, 50).to(dtype).requires_grad_()
    y = dropout(x, 0.25)
    kept = y != 0
    assert y.dtype == dtype and 0.6 < kept.float().mean() < 0.9
    torch.testing.assert_close(y[kept], (x * (1 / 0.75)).to(dtype)[kept])
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.to(dtype) / 0.75)


def test_module_eval_and_edge_probabilities() -> None:
    x = torch.randn(10, 4)
    d = Dropout(0.5).eval()
    assert torch.equal(d(x), x)
    assert torch.equal(dropout(x, 0.0), x) and not dropout(x, 1.0).any()
    with pytest.raises(ValueError):
        Dropout(1.5)
