import torch

from genrec.training.selection import BestWeights


def test_best_weights_keeps_the_best_epoch_and_stops_after_patience() -> None:
    model = torch.nn.Linear(2, 1)
    best = BestWeights(model, patience=2)
    scores = {1: 0.3, 2: 0.5, 3: 0.4, 4: 0.45}
    for epoch, score in scores.items():
        assert not best.exhausted(epoch)
        with torch.no_grad():
            model.weight.fill_(epoch)
        assert best.update(epoch, score) == (epoch in (1, 2))
    assert best.exhausted(5) and best.epoch == 2 and best.score == 0.5
    best.restore()
    assert torch.all(model.weight == 2.0)  # epoch 2's weights, not the last epoch's
