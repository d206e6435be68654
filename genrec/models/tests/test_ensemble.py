import pytest
import torch

from genrec.models import build_model, model_from_config
from genrec.models.ensemble import Ensemble, EnsembleConfig, last_events


def test_last_events_keeps_each_sequences_last_n() -> None:
    offsets = torch.tensor([0, 5, 6, 6, 9])  # lengths 5, 1, 0, 3
    index, new = last_events(offsets, 2)
    assert new.tolist() == [0, 2, 3, 3, 5]
    assert index.tolist() == [3, 4, 5, 7, 8]


def test_ensemble_logits_are_the_weighted_sum_of_its_members_on_their_own_windows() -> None:
    torch.manual_seed(0)
    a = build_model("hstu", 40, max_len=6, dim=8, temperature=0.05).eval()
    b = build_model("sasrec", 40, max_len=3, dim=12, temperature=0.1).eval()
    ens = Ensemble(EnsembleConfig([a.config.to_dict(), b.config.to_dict()], [0.75, 0.25]))
    ens.members[0].load_state_dict(a.state_dict())
    ens.members[1].load_state_dict(b.state_dict())
    ens.eval()
    items = torch.tensor([3, 7, 9, 1, 4, 2, 8, 5, 6, 11, 12])
    offsets = torch.tensor([0, 8, 11])  # histories of 8 and 3 events
    got = ens.score_all(ens.user_states(items, offsets))
    want = []
    for m, w in ((a, 0.75), (b, 0.25)):
        L = m.config.max_len
        states = torch.cat([m.user_states(items[s:e][-L:], torch.tensor([0, min(e - s, L)]))
                            for s, e in ((0, 8), (8, 11))])  # fmt: skip
        want.append(w * m.score_all(states))
    assert torch.allclose(got, sum(want), atol=1e-5)
    assert ens.config.max_len == 6 and ens.config.dim == 20 and ens.config.temperature == 1.0
    # the config round-trips: what a bundle stores rebuilds the same architecture
    again = model_from_config(ens.config.to_dict())
    again.load_state_dict(ens.state_dict())
    assert torch.allclose(again.eval().score_all(again.user_states(items, offsets)), got)


def test_ensemble_members_must_share_the_catalog() -> None:
    a = build_model("hstu", 40, max_len=6, dim=8).config.to_dict()
    b = build_model("hstu", 41, max_len=6, dim=8).config.to_dict()
    with pytest.raises(ValueError, match="different catalogs"):
        EnsembleConfig([a, b], [0.5, 0.5])
    with pytest.raises(ValueError, match="one weight per member"):
        EnsembleConfig([a], [0.5, 0.5])
