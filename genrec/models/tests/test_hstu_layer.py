import pytest
import torch

from genrec.models import build_model
from genrec.models.hstu import HSTU, KVCache


def _model(name: str = "hstu") -> HSTU:
    torch.manual_seed(0)
    model = build_model(name, num_items=40, max_len=24, dropout=0.0)
    with torch.no_grad():  # non-zero rab tables so the position / time bias paths are exercised
        for layer in model.layers:
            layer.pos_bias.normal_(0, 0.5)
            layer.time_bias.normal_(0, 0.5)
    return model.eval()


def _split(values: torch.Tensor, offsets: torch.Tensor, cut: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of each sequence before / from its cut."""
    pre = torch.cat([values[offsets[b] : offsets[b] + c] for b, c in enumerate(cut)])
    post = torch.cat([values[offsets[b] + c : offsets[b + 1]] for b, c in enumerate(cut)])
    return pre, post


@pytest.mark.parametrize("name", ["hstu", "hstu-large"])
@pytest.mark.parametrize("use_time", [True, False])
def test_cached_forward_over_prefix_and_new_tokens_equals_forward_over_the_concatenation(
    name: str, use_time: bool
) -> None:
    model = _model(name)
    g = torch.Generator().manual_seed(3)
    offsets = torch.tensor([0, 9, 14, 26])  # three users, 9 / 5 / 12 tokens
    cut = [6, 0, 11]  # prefix lengths: one user has no prefix, one a single new token
    n = int(offsets[-1])
    items = torch.randint(1, 41, (n,), generator=g)
    ts = torch.randint(1, 10**5, (n,), generator=g).cumsum(0) if use_time else None
    pos = torch.cat([torch.arange(int(e - s)) for s, e in zip(offsets[:-1], offsets[1:], strict=True)])
    x_full = model.embed(items, pos)
    pre_off = torch.tensor([0, *torch.tensor(cut).cumsum(0).tolist()])
    new_off = offsets - pre_off
    x_pre, x_new = _split(x_full, offsets, cut)
    t_pre, t_new = _split(ts, offsets, cut) if use_time else (None, None)
    with torch.no_grad():
        for layer in model.layers:
            full_next = layer(x_full, offsets, ts)
            x_pre, kv = layer(x_pre, pre_off, t_pre, return_kv=True)
            x_new, kv2 = layer.cached_forward(x_new, new_off, kv, t_new)
            want_pre, want_new = _split(full_next, offsets, cut)
            torch.testing.assert_close(x_pre, want_pre, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(x_new, want_new, atol=1e-5, rtol=1e-5)
            _, _, _, k_full = layer.project(x_full)
            torch.testing.assert_close(kv2.k, k_full)  # the updated cache is the concatenation's
            assert torch.equal(kv2.offsets, offsets)
            x_full = full_next
    assert not torch.allclose(x_new, torch.zeros_like(x_new))


def test_targets_see_the_cache_and_themselves_only() -> None:
    model = _model()
    layer = model.layers[0]
    x = torch.randn(7, 50)
    ts = torch.arange(7) * 1000
    with torch.no_grad():
        _, kv = layer(x, torch.tensor([0, 7]), ts, return_kv=True)
        cands = torch.randn(4, 50)
        t = torch.tensor(9000)
        together, same = layer.cached_forward(cands, torch.tensor([0, 4]), kv, t, append=False)
        assert same is kv
        alone = torch.cat([layer.cached_forward(c[None], torch.tensor([0, 1]), kv, t, append=False)[0] for c in cands])
        torch.testing.assert_close(together, alone)
        # a target appended alone to the sequence = the same row of forward over history + that one token
        full = layer(torch.cat([x, cands[:1]]), torch.tensor([0, 8]), torch.cat([ts, t[None]]))
        torch.testing.assert_close(together[0], full[-1], atol=1e-5, rtol=1e-5)
        # explicit positions: the general path agrees with the one-request fast path
        cut = layer.cached_forward(cands, torch.tensor([0, 4]), kv, t.expand(4), False, torch.full((4,), 7))[0]
        torch.testing.assert_close(cut, together, atol=1e-5, rtol=1e-5)
        earlier = layer.cached_forward(cands, torch.tensor([0, 4]), kv, t.expand(4), False, torch.full((4,), 3))[0]
        assert not torch.allclose(earlier, together)


def test_cached_forward_errors() -> None:
    layer = _model().layers[0]
    x = torch.randn(3, 50)
    with torch.no_grad():
        _, kv = layer(x, torch.tensor([0, 3]), torch.arange(3), return_kv=True)
        with pytest.raises(ValueError, match="timestamps"):
            layer.cached_forward(x[:1], torch.tensor([0, 1]), kv)
        with pytest.raises(ValueError, match="positions"):
            layer.cached_forward(x[:1], torch.tensor([0, 1]), kv, torch.tensor(5), positions=torch.tensor([1]))
    length_scaled = build_model("hstu", num_items=5, max_len=8, attn_scale="length").layers[0]
    empty = KVCache(torch.zeros(0, 1, 50), torch.zeros(0, 1, 50), torch.tensor([0, 0]), None)
    with pytest.raises(ValueError, match="divisor"):
        length_scaled.cached_forward(x[:1], torch.tensor([0, 1]), empty)


@pytest.mark.parametrize("name", ["hstu", "hstu-large"])
@pytest.mark.parametrize("use_time", [True, False])
@pytest.mark.parametrize("lengths", [[9, 1, 12], [7]])
def test_user_states_run_only_the_last_query_and_equal_the_full_encoding(
    name: str, use_time: bool, lengths: list[int]
) -> None:
    model = _model(name)
    g = torch.Generator().manual_seed(5)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    n = int(offsets[-1])
    items = torch.randint(1, 41, (n,), generator=g)
    ts = torch.randint(1, 10**5, (n,), generator=g).cumsum(0) if use_time else None
    with torch.no_grad():
        want = model.encode(items, offsets, ts)[offsets[1:] - 1]
        got = model.user_states(items, offsets, ts)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    model.config.attn_scale = "length"  # a per-length divisor cannot use the cache: the full encoding
    for layer in model.layers:
        layer.c.attn_scale = "length"
    with torch.no_grad():
        torch.testing.assert_close(
            model.user_states(items, offsets, ts), model.encode(items, offsets, ts)[offsets[1:] - 1]
        )
