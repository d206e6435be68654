import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from genrec.bundle import atomic_save
from genrec.training.loop import CheckpointError, Epoch, LoopConfig, fit, read_checkpoint

QUIET = Console(quiet=True)


def scripted(model: torch.nn.Module, scores: list[float], metric: str):
    """An epoch that stamps the epoch number into the weights, and a validation that reads the next score."""
    calls = iter(scores)

    def train_epoch(ep: Epoch) -> dict[str, float]:
        with torch.no_grad():
            model.weight.fill_(ep.number)
        return {"loss": 1.0 / ep.number}

    return train_epoch, lambda: {metric: next(calls)}


@pytest.mark.parametrize(
    "mode, best_epoch, epochs_run",
    [("min", 2, 4), ("max", 1, 3)],  # patience 2: stop 2 epochs after the best
)
def test_early_stop_follows_the_metric_direction(mode: str, best_epoch: int, epochs_run: int) -> None:
    model = torch.nn.Linear(2, 1)
    train_epoch, validate = scripted(model, [0.5, 0.4, 0.45, 0.46, 0.47, 0.3], "logloss")
    cfg = LoopConfig(epochs=6, metric="logloss", mode=mode, patience=2)
    res = fit(model, train_epoch, cfg, validate, console=QUIET)
    assert (res.best_epoch, len(res.history), res.stopped) == (best_epoch, epochs_run, "patience")
    assert res.best_valid == {"logloss": [0.5, 0.4][best_epoch - 1]}
    assert torch.all(model.weight == best_epoch)  # the best epoch's weights, not the last one's
    with pytest.raises(ValueError, match="mode"):
        LoopConfig(epochs=1, mode="up")


def test_unknown_metric_and_missing_validation_are_errors() -> None:
    model = torch.nn.Linear(2, 1)
    train_epoch, validate = scripted(model, [0.5], "AUC")
    with pytest.raises(ValueError, match="'NDCG@10'.*AUC"):
        fit(model, train_epoch, LoopConfig(epochs=1, metric="NDCG@10"), validate, console=QUIET)
    with pytest.raises(ValueError, match="validate"):
        fit(model, train_epoch, LoopConfig(epochs=1, metric="AUC"), console=QUIET)


@pytest.mark.parametrize("reserve, epochs_run", [(0, 3), (1, 2)])
def test_time_budget_holds_with_validation_included(reserve: int, epochs_run: int) -> None:
    # epochs of 0.25 s training + 0.15 s validation: 3 fit in 1.3 s, a 4th would end at 1.6 s;
    # keeping one validation's time free for a final test scoring leaves room for 2
    model = torch.nn.Linear(2, 1)

    def train_epoch(ep: Epoch) -> dict[str, float]:
        time.sleep(0.25)
        return {}

    def validate() -> dict[str, float]:
        time.sleep(0.15)
        return {"AUC": 0.5}

    budget = 1.3
    t0 = time.perf_counter()
    cfg = LoopConfig(epochs=50, metric="AUC", time_budget_s=budget, reserve_evals=reserve)
    res = fit(model, train_epoch, cfg, validate, console=QUIET)
    wall = time.perf_counter() - t0
    assert res.stopped == "time budget" and len(res.history) == epochs_run
    assert wall + reserve * 0.15 <= 1.1 * budget and res.elapsed <= budget
    assert res.elapsed == pytest.approx(wall, abs=0.1)  # elapsed is the loop's whole time, validation included
    assert all(h["eval_seconds"] >= 0.15 for h in res.history)


def test_the_first_epoch_keeps_the_estimated_validation_time_free() -> None:
    """Before any validation was timed, estimate_eval's seconds are kept out of the first epoch's time_left."""
    left: list[float] = []

    def train_epoch(ep: Epoch) -> dict[str, float]:
        left.append(ep.time_left())
        return {}

    cfg = LoopConfig(epochs=1, metric="AUC", time_budget_s=10.0)
    fit(torch.nn.Linear(2, 1), train_epoch, cfg, lambda: {"AUC": 0.5}, console=QUIET, estimate_eval=lambda: 4.0)
    assert left[0] == pytest.approx(6.0, abs=0.2)
    fit(torch.nn.Linear(2, 1), train_epoch, cfg, lambda: {"AUC": 0.5}, console=QUIET)
    assert left[1] == pytest.approx(10.0, abs=0.2)  # nothing to go on: the whole budget


class Dropped(torch.nn.Module):
    """Dropout (torch's RNG) in front of a linear layer: a resume must restore the RNG to replay the run."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(F.dropout(x, 0.3, self.training))


def regression_run(path, epochs: int) -> tuple[Dropped, list[dict]]:
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    model = Dropped()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    rng = np.random.default_rng(0)  # never reseeded: its state must travel with the checkpoint

    def train_epoch(ep: Epoch) -> dict[str, float]:
        ep.start(total=len(x), unit="rows")
        for rows in np.array_split(rng.permutation(len(x)), 4):
            loss = F.mse_loss(model(x[rows]).squeeze(1), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            ep.step(len(rows), loss=loss.item())
        return {"loss": ep.mean("loss")}

    def validate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            return {"mse": F.mse_loss(model(x).squeeze(1), y).item()}

    cfg = LoopConfig(epochs=epochs, metric="mse", mode="min", ema=0.8)
    res = fit(model, train_epoch, cfg, validate, state={"optimizer": opt, "rng": rng}, checkpoint=path, console=QUIET)
    return model, res.history


def test_resumed_run_equals_uninterrupted_one(tmp_path) -> None:
    full, full_hist = regression_run(tmp_path / "full.pt", 5)
    regression_run(tmp_path / "half.pt", 2)  # "killed" after epoch 2
    resumed, hist = regression_run(tmp_path / "half.pt", 5)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5]
    for a, b in zip(hist, full_hist, strict=True):
        assert a["loss"] == b["loss"] and a["valid"] == b["valid"]
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    ck = read_checkpoint(tmp_path / "half.pt")
    assert ck["epoch"] == 5 and set(ck["state"]) == {"optimizer", "rng"} and "ema" in ck and "best_model" in ck


def test_ema_is_what_validation_sees_and_what_is_kept() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    seen = []

    def train_epoch(ep: Epoch) -> dict[str, float]:
        for _ in range(20):
            with torch.no_grad():
                model.weight.add_(1.0)
            ep.step()
        return {}

    def validate() -> dict[str, float]:
        seen.append(model.weight.item())
        return {"score": -abs(model.weight.item() - 20.0)}  # best when the average is near 20

    start = model.weight.item()
    res = fit(model, train_epoch, LoopConfig(epochs=3, metric="score", ema=0.5), validate, console=QUIET)
    assert all(s < start + 20 * (i + 1) - 0.5 for i, s in enumerate(seen))  # the average lags the weights
    assert model.weight.item() == pytest.approx(seen[res.best_epoch - 1])


def test_on_epoch_stops_the_run_and_on_best_sees_each_better_epoch() -> None:
    model = torch.nn.Linear(2, 1)
    train_epoch, validate = scripted(model, [0.1, 0.3, 0.2, 0.9], "AUC")
    bests: list[int] = []
    res = fit(model, train_epoch, LoopConfig(epochs=4, metric="AUC"), validate, console=QUIET,
              on_best=bests.append, on_epoch=lambda history: history[-1]["epoch"] == 3)  # fmt: skip
    assert res.stopped == "callback" and len(res.history) == 3 and bests == [1, 2] and res.best_epoch == 2


def test_without_metric_every_epoch_is_the_final_one() -> None:
    model = torch.nn.Linear(2, 1)
    train_epoch, _ = scripted(model, [], "AUC")
    bests: list[int] = []
    res = fit(model, train_epoch, LoopConfig(epochs=3), on_best=bests.append, console=QUIET)
    assert bests == [1, 2, 3] and res.best_epoch == 3 and res.best_valid == {} and res.stopped == "epochs"
    assert [h["valid"] for h in res.history] == [None, None, None]
    assert torch.all(model.weight == 3)


class MemoryCheckpoint:
    """A Checkpoint kept in memory: the loop's part as given, the model's weights beside it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.path, self.model, self.saved = "memory", model, None

    def exists(self) -> bool:
        return self.saved is not None

    def save(self, loop: dict) -> None:
        self.saved = {"weights": {k: v.clone() for k, v in self.model.state_dict().items()}, "loop": dict(loop)}

    def load(self) -> dict:
        self.model.load_state_dict(self.saved["weights"])
        return self.saved["loop"]


def test_a_checkpoint_object_resumes_and_one_agreed_decision_stops_all() -> None:
    model = torch.nn.Linear(2, 1)
    ck = MemoryCheckpoint(model)
    train_epoch, validate = scripted(model, [0.1, 0.2, 0.3, 0.4], "AUC")
    fit(model, train_epoch, LoopConfig(epochs=2, metric="AUC"), validate, checkpoint=ck, keep_best=False, console=QUIET)
    assert ck.saved["loop"]["epoch"] == 2 and "best_model" not in ck.saved["loop"]  # on_best's job, not the loop's
    asked: list[bool] = []
    res = fit(model, train_epoch, LoopConfig(epochs=4, metric="AUC"), validate, checkpoint=ck, keep_best=False,
              agree=lambda stop: asked.append(stop) or len(asked) == 3, console=QUIET)  # fmt: skip
    # resumed at epoch 3; asked before and after it: the third question (before epoch 4) is answered "stop"
    assert [h["epoch"] for h in res.history] == [1, 2, 3] and asked == [False, False, False]
    assert res.best_epoch == 3 and torch.all(model.weight == 3)


@pytest.mark.parametrize("content, what", [(b"", "empty"), (b"not a zip at all", "corrupt")])
def test_unreadable_checkpoint_is_a_one_line_error_naming_the_file(tmp_path, content: bytes, what: str) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    model = torch.nn.Linear(2, 1)
    train_epoch, _ = scripted(model, [], "AUC")
    with pytest.raises(CheckpointError) as err:
        fit(model, train_epoch, LoopConfig(epochs=1), checkpoint=path, console=QUIET)
    msg = str(err.value)
    assert str(path) in msg and what in msg and "--restart" in msg and "\n" not in msg
    assert isinstance(err.value, ValueError)
    with pytest.raises(CheckpointError, match="not found.*--restart"):
        read_checkpoint(tmp_path / "missing.pt")
    # another model's checkpoint: named, not a traceback from load_state_dict
    atomic_save({"model": torch.nn.Linear(3, 1).state_dict(), "epoch": 1}, path)
    with pytest.raises(CheckpointError, match="does not match"):
        fit(model, train_epoch, LoopConfig(epochs=1), checkpoint=path, console=QUIET)
    res = fit(model, train_epoch, LoopConfig(epochs=1), checkpoint=path, resume=False, console=QUIET)
    assert len(res.history) == 1 and read_checkpoint(path)["epoch"] == 1
