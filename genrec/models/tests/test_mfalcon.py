import pytest
import torch

from genrec.models import build_model
from genrec.models.mfalcon import (
    candidate_states,
    encode_with_cache,
    naive_candidate_states,
    naive_score_candidates,
    score_candidates,
)


def _model(name: str, **kw):
    torch.manual_seed(0)
    model = build_model(name, num_items=60, max_len=32, dropout=0.0, **kw)
    with torch.no_grad():  # non-zero rab tables so the position / time bias paths are exercised
        for layer in model.layers:
            layer.pos_bias.normal_(0, 0.5)
            layer.time_bias.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["hstu", "hstu-large"])
@pytest.mark.parametrize("use_time", [True, False])
@pytest.mark.parametrize("attn_scale", ["max_len", "length"])
def test_mfalcon_equals_append_and_run(name: str, use_time: bool, attn_scale: str) -> None:
    model = _model(name, attn_scale=attn_scale)
    g = torch.Generator().manual_seed(1)
    hist = torch.randint(1, 61, (13,), generator=g)
    ts = torch.randint(0, 10**7, (13,), generator=g).sort().values if use_time else None
    cands = torch.randint(1, 61, (37,), generator=g)
    request_time = int(ts[-1]) + 86_400 if use_time else None
    cache = encode_with_cache(model, hist, ts, request_time)
    fast = candidate_states(model, cache, cands, micro_batch=8)  # several micro-batches, a ragged last one
    slow, prefix = naive_candidate_states(model, hist, ts, cands, micro_batch=16, request_time=request_time)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache.state, prefix, atol=1e-5, rtol=1e-5)
    for head in ["target", "retrieval", lambda s, c: s[:, 0] * c]:
        torch.testing.assert_close(
            score_candidates(model, hist, ts, cands, 8, request_time, head),
            naive_score_candidates(model, hist, ts, cands, 16, request_time, head),
            atol=1e-4,
            rtol=1e-5,
        )


def test_candidates_do_not_see_each_other_and_depend_on_history() -> None:
    model = _model("hstu")
    hist, cands = torch.tensor([3, 9, 27, 4]), torch.tensor([5, 6, 7])
    cache = encode_with_cache(model, hist)
    together = candidate_states(model, cache, cands)
    alone = torch.cat([candidate_states(model, cache, cands[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone)
    other = candidate_states(model, encode_with_cache(model, torch.tensor([3, 9, 27, 8])), cands)
    assert not torch.allclose(other, together)


def test_empty_history_and_bad_input() -> None:
    model = _model("hstu")
    cands = torch.tensor([1, 2, 3])
    fast = score_candidates(model, torch.zeros(0, dtype=torch.long), None, cands)
    slow = naive_score_candidates(model, torch.zeros(0, dtype=torch.long), None, cands)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="eval"):
        score_candidates(model.train(), torch.tensor([1]), None, cands)
    with pytest.raises(ValueError, match="history_timestamps"):
        score_candidates(model.eval(), torch.tensor([1, 2]), torch.tensor([5]), cands)
    with pytest.raises(TypeError):
        score_candidates(build_model("sasrec", num_items=60).eval(), torch.tensor([1]), None, cands)
