import pytest
import torch

from genrec.data.sequences import Vocab
from genrec.models import build_model
from genrec.models.mfalcon import naive_score_candidates
from genrec.serving.recommender import Recommender


def _rec(name: str = "hstu") -> Recommender:
    torch.manual_seed(0)
    model = build_model(name, num_items=40, max_len=16, dropout=0.0)
    return Recommender(model, Vocab([f"i{k}" for k in range(1, 41)]), Vocab(["u1"]))


def test_retrieval_head_agrees_with_recommend() -> None:
    rec = _rec()
    history = ["i3", "i7", "i11"]
    top = rec.recommend(history, k=5)
    ranked = rec.score_candidates(history, [r.item_id for r in reversed(top)])
    assert [r.item_id for r in ranked] == [r.item_id for r in top]
    for a, b in zip(ranked, top, strict=True):
        assert a.score == pytest.approx(b.score, rel=1e-5)


def test_target_head_is_mfalcon_and_matches_naive() -> None:
    rec = _rec()
    history, ts = ["i3", "i7", "i11", "i2"], [100, 5000, 90_000, 10**6]
    cands = [f"i{k}" for k in range(1, 41)]
    ranked = rec.score_candidates(history, cands, timestamps=ts, request_time=2 * 10**6, head="target", micro_batch=7)
    got = {r.item_id: r.score for r in ranked}
    idx = torch.tensor([rec.item_vocab.index(c) for c in cands])
    want = naive_score_candidates(
        rec.model, torch.tensor([3, 7, 11, 2]), torch.tensor(ts), idx, request_time=2 * 10**6, head="target"
    )
    assert [got[c] for c in cands] == pytest.approx(want.tolist(), rel=1e-4, abs=1e-4)
    assert [r.score for r in ranked] == sorted(got.values(), reverse=True)


def test_bad_requests_name_the_field() -> None:
    rec = _rec()
    with pytest.raises(ValueError, match="candidates: unknown item ids \\['nope'\\]"):
        rec.score_candidates(["i1"], ["i2", "nope"])
    with pytest.raises(ValueError, match="timestamps"):
        rec.score_candidates(["i1", "i2"], ["i3"], timestamps=[1])
    with pytest.raises(ValueError, match="head"):
        rec.score_candidates(["i1"], ["i3"], head="bogus")
    with pytest.raises(ValueError, match="HSTU"):
        _rec("sasrec").score_candidates(["i1"], ["i3"], head="target")
    assert [r.item_id for r in _rec("sasrec").score_candidates(["i1"], ["i3", "i4"])] != []
