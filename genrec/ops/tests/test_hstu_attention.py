import pytest
import torch

import genrec.ops.hstu_attention as ha
from genrec.ops.hstu_attention import hstu_attention, hstu_attention_jagged, time_buckets


def jagged_batch(lengths: list[int], heads: int, d: int, seed: int = 0, device: str = "cpu") -> dict:
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    offsets = torch.tensor([0] + lengths).cumsum(0).to(device)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device).requires_grad_()  # noqa: E731
    return {
        "q": mk(n, heads, d),
        "k": mk(n, heads, d),
        "v": mk(n, heads, d),
        "offsets": offsets,
        "pos_bias": mk(16),
        "time_bias": mk(32),
        "timestamps": torch.randint(0, 10**7, (n,), generator=g).sort().values.to(device),
    }


def assert_matches_reference(b: dict, backend: str = "padded", scale: float | None = None, **kw: int) -> None:
    """Output and gradients (q, k, v and both biases) of a fast path equal the reference's on batch b."""
    leaves = [t for name in ("q", "k", "v", "pos_bias", "time_bias") if (t := b[name]) is not None]
    ref = hstu_attention(**b, scale=scale, backend="reference")
    fast = hstu_attention_jagged(**b, scale=scale, **kw) if backend == "jagged" else hstu_attention(**b, scale=scale)
    torch.testing.assert_close(fast, ref)
    w = torch.randn_like(ref)
    for a, c in zip(
        torch.autograd.grad((fast * w).sum(), leaves), torch.autograd.grad((ref * w).sum(), leaves), strict=True
    ):
        torch.testing.assert_close(a, c)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("scale", [None, 40.0])
@pytest.mark.parametrize("use_time", [True, False])
@pytest.mark.parametrize("strips", [1, 2, 3])
def test_padded_equals_reference_forward_and_backward(
    heads: int, scale: float | None, use_time: bool, strips: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lengths up to 100, so that the padded path cuts its query rows into `strips` causal strips."""
    monkeypatch.setattr(ha, "PADDED_STRIPS", strips)
    assert len(ha.causal_strips(100, strips)) == strips
    b = jagged_batch([7, 1, 100, 12, 3, 64], heads, 8)
    if not use_time:
        b["time_bias"] = None
    assert_matches_reference(b, scale=scale)


def test_causal_strips_cover_rows_once() -> None:
    for n, k in [(200, 2), (200, 3), (201, 3), (40, 3), (7, 2)]:
        bounds = ha.causal_strips(n, k)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(e0 == s1 for (_, e0), (s1, _) in zip(bounds, bounds[1:], strict=False))
        assert len(bounds) == max(1, min(k, n // 32))


def test_reference_matches_dense_masked_formula() -> None:
    """One sequence by hand: SiLU(QK^T + rab) masked to j <= i, divided by n, times V."""
    b = jagged_batch([5], 1, 4)
    q, k, v = b["q"][:, 0], b["k"][:, 0], b["v"][:, 0]
    i = torch.arange(5)
    rab = b["pos_bias"][(i[:, None] - i[None, :]).clamp(0, 15)]
    a = torch.nn.functional.silu(q @ k.T + rab) * torch.tril(torch.ones(5, 5, dtype=torch.float64)) / 5
    out = hstu_attention(b["q"], b["k"], b["v"], b["offsets"], b["pos_bias"], backend="padded")
    torch.testing.assert_close(out[:, 0], a @ v)


def test_attention_is_causal_and_sequences_do_not_mix() -> None:
    b = jagged_batch([6, 9], 2, 8)
    out = hstu_attention(**b, backend="padded").detach()
    q, k, v = b["q"].detach().clone(), b["k"].detach().clone(), b["v"].detach().clone()
    k[10], v[10] = (
        torch.randn(2, 8, dtype=torch.float64),
        torch.randn(2, 8, dtype=torch.float64),
    )  # 2nd seq, pos 4
    out2 = hstu_attention(q, k, v, b["offsets"], b["pos_bias"], b["time_bias"], b["timestamps"], backend="padded")
    torch.testing.assert_close(out2[:10], out[:10])  # earlier positions and the other user unchanged
    assert not torch.allclose(out2[10:], out[10:])


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("scale", [None, 40.0])
@pytest.mark.parametrize("tile", [8, 128])
def test_jagged_equals_reference_forward_and_backward(heads: int, scale: float | None, tile: int) -> None:
    """Mixed short/long lengths (and an empty one): several buckets, and several causal strips when tile=8."""

    b = jagged_batch([37, 5, 1, 130, 0, 19, 64, 3, 90], heads, 8, seed=heads)
    assert_matches_reference(b, "jagged", scale, tile=tile)


def test_jagged_backend_without_time_and_via_dispatch() -> None:
    b = jagged_batch([12, 40, 7], 2, 4, seed=3)
    b["time_bias"] = None
    ref = hstu_attention(**b, backend="reference")
    torch.testing.assert_close(hstu_attention(**b, backend="jagged"), ref)


def test_bucket_plan_covers_every_sequence_and_bounds_padding() -> None:
    from genrec.ops.hstu_attention import plan_buckets

    lengths = (3, 200, 17, 199, 64, 1, 120, 8000, 45, 2048)
    plan = plan_buckets(lengths, 2)
    assert sum(c for c, _ in plan) == len(lengths)
    padded = sorted(n for c, n in plan for _ in range(c))
    assert all(p >= n for p, n in zip(padded, sorted(lengths), strict=True))  # each fits its bucket
    assert padded[-1] < 1.1 * 8000 and len(plan) > 1  # the long user does not drag the rest to 8000


def test_padded_cache_shared_across_layers_and_bf16_bias_grads_accumulate_in_fp32() -> None:
    b = jagged_batch([30, 4, 17], 2, 8)
    cache: dict = {}
    first = hstu_attention(**b, backend="padded", cache=cache)
    assert cache  # the first call stored the batch geometry ...
    second = hstu_attention(**b, backend="padded", cache=cache)  # ... and the next layer reuses it
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, hstu_attention(**b, backend="reference"))
    # bf16 inputs: the bias gradient is summed over ~B n^2 / 2 terms; accumulating in bf16 would lose most of it
    ref_grad = torch.autograd.grad(hstu_attention(**b, backend="reference").sum(), b["time_bias"])[0]
    low = {**b, **{k: b[k].detach().bfloat16() for k in ("q", "k", "v")}}
    tb = b["time_bias"].detach().float().requires_grad_()
    low["time_bias"], low["pos_bias"] = tb, b["pos_bias"].detach().float()
    (grad,) = torch.autograd.grad(hstu_attention(**low, backend="padded").float().sum(), tb)
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad.double(), ref_grad, rtol=0.05, atol=0.05 * ref_grad.abs().max().item())


@pytest.mark.parametrize("tile", [8, 128])
def test_fast_paths_run_in_bf16(tile: int) -> None:
    b = jagged_batch([30, 4, 17], 2, 8)
    low = {**b, **{k: b[k].detach().bfloat16().requires_grad_() for k in ("q", "k", "v")}}
    low["pos_bias"], low["time_bias"] = b["pos_bias"].detach().float(), b["time_bias"].detach().float()
    ref = hstu_attention(**b, backend="reference")
    for backend in ("padded", "jagged"):  # tile 8: the recomputing strips; 128: one plain product per bucket
        out = hstu_attention(**low) if backend == "padded" else hstu_attention_jagged(**low, tile=tile)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.double(), ref.detach(), rtol=0.05, atol=0.05)
        out.float().sum().backward()


def test_time_buckets_are_floor_log2_at_every_power_of_two() -> None:
    k = torch.arange(0, 52)
    gaps = torch.cat([2**k, 2**k - 1, -(2**k), torch.tensor([0])])
    want = torch.cat([k, (k - 1).clamp(min=0), k, torch.tensor([0])])  # gap 0 counts as 1 second
    assert torch.equal(time_buckets(gaps, 128), want)
    assert torch.equal(time_buckets(gaps, 20), want.clamp(max=19))


def test_gpu_settings_plan_fewer_buckets_but_still_split_off_a_long_user() -> None:
    from genrec.ops.hstu_attention import JAGGED_SETTINGS, jagged_settings, plan_buckets

    lengths = (3, 200, 17, 199, 64, 1, 120, 8000, 45, 2048)
    gpu = jagged_settings(torch.device("cuda"))
    assert gpu == JAGGED_SETTINGS["cuda"] and jagged_settings(torch.device("cpu")) == JAGGED_SETTINGS["cpu"]
    cpu_plan, gpu_plan = plan_buckets(lengths, 2, *JAGGED_SETTINGS["cpu"]), plan_buckets(lengths, 2, *gpu)
    assert len(gpu_plan) < len(cpu_plan)  # a launch costs more than a few padded elements on a GPU
    assert sorted(n for c, n in gpu_plan for _ in range(c))[-2] <= 2048 * 1.1  # 8000 is still a bucket of its own


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["padded", "jagged"])
def test_fast_paths_equal_reference_on_cuda(backend: str) -> None:
    """The GPU settings (1024-row strips) on a batch with a user longer than one strip, forward and backward."""
    b = jagged_batch([7, 1, 1500, 12, 300, 64], 2, 8, device="cuda")
    assert_matches_reference(b, backend)


def test_pair_time_buckets_equal_time_buckets_of_the_gaps() -> None:
    from genrec.ops.hstu_attention import pair_time_buckets

    powers = torch.tensor([2**k + d for k in range(1, 30) for d in (-1, 0, 1)])  # where float32 rounds up
    tq = torch.cat([torch.tensor([0, 1, 2, 3]), powers, torch.tensor([2**30 - 1])])  # span < 2^30: int32 path
    tk = torch.tensor([0, 5, 2**29])
    for a, b in [(tq, tk), (tq + 1_700_000_000, tk + 1_700_000_000)]:  # absolute unix times, same gaps
        out = pair_time_buckets(a, b, 40)
        assert out.dtype == torch.int32
        assert torch.equal(out.long(), time_buckets(a[:, None] - b[None, :], 40))
    wide = torch.tensor([0, 2**40, 3 * 2**35])  # span >= 2^30: the float64 path
    assert torch.equal(pair_time_buckets(wide, wide, 64).long(), time_buckets(wide[:, None] - wide[None, :], 64))
    batch = torch.randint(0, 10**6, (3, 7)).cumsum(1)  # (B, n) with the (B, T, e) shape of a strip
    assert torch.equal(
        pair_time_buckets(batch[:, 2:5], batch, 16).long(), time_buckets(batch[:, 2:5, None] - batch[:, None, :], 16)
    )
    assert pair_time_buckets(torch.zeros(2, 0, dtype=torch.long), batch[:2], 8).shape == (2, 0, 7)
