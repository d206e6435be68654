import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from genrec.bundle import Bundle, load_sequential
from genrec.data.datasets import Dataset, load_synthetic
from genrec.models.sequential import SequentialConfig
from genrec.training import auto, trainer
from genrec.training.auto import (
    FAMILIES,
    FULL_SOFTMAX_MAX_ITEMS,
    DataStats,
    data_stats,
    make_study,
    search_space,
    suggest,
)
from genrec.training.trainer import TrainConfig, prepare


def test_auto_picks_a_valid_setting_within_the_budget_and_writes_the_report(tmp_path) -> None:
    budget_min = 0.6
    out = tmp_path / "auto"
    cmd = [sys.executable, "-m", "genrec.cli", "train", "--model", "auto", "--dataset", "synthetic:tiny",
           "--time-budget", str(budget_min), "--threads", "1", "--out", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    wall = time.perf_counter() - t0  # the whole command: interpreter start, search, final run, test, report
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert wall <= 1.1 * budget_min * 60, f"{wall:.1f}s for a {budget_min * 60:.0f}s budget"

    report = json.loads((out / "tuning.json").read_text())
    space = search_space(data_stats(load_synthetic("tiny", 42)))
    complete = [t for t in report["trials"] if t["state"] == "complete"]
    assert len(report["trials"]) >= 2 and complete
    chosen = report["chosen"]["params"]
    assert chosen["family"] in FAMILIES and chosen["dim"] in space.dims and chosen["max_len"] in space.max_lens
    assert space.dropout[0] - 1e-9 <= chosen["dropout"] <= space.dropout[1] + 1e-9
    assert chosen["loss"] == "full"  # 200 items: a full softmax
    assert chosen["temperature"] in space.temperatures
    best = max(complete, key=lambda t: t["best_valid_ndcg10"])
    assert report["chosen"]["trial"] == best["number"]  # chosen on validation
    # the final run continues the winner: its validation can only be as good or better
    assert report["final"]["valid"]["NDCG@10"] >= best["best_valid_ndcg10"] - 1e-6
    for t in complete:
        assert t["curve"] and len(t["curve"]) == t["epochs"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["metrics"]["NDCG@10"]) and metrics["metrics"] == report["final"]["test"]
    model = load_sequential(out)  # a normal bundle: evaluate / recommend / serve work on it
    meta = Bundle.open(out).component(role="retrieval").config
    assert meta["train"]["model"] == chosen["family"] and meta["train"]["ema"] == auto.EMA_DECAY
    if "ensemble" in meta:  # its first member is the final run
        model = model.members[0]
    assert model.config.max_len == chosen["max_len"] and model.config.dim == chosen["dim"]
    assert meta["train"]["item_attributes"] == chosen["attributes"]
    assert model.config.temperature == chosen["temperature"]
    assert "Chosen: trial" in (out / "tuning.md").read_text() and "Shipped: " in (out / "tuning.md").read_text()
    assert (out / "tuning.png").stat().st_size > 1000
    assert "chosen" in proc.stdout and "test split" in proc.stdout
    assert not list((out / "trials").glob("*/*.pt"))  # the shipped weights are in the bundle, no copies left
    ens = report["ensemble"]  # the final model alone, or an ensemble with other trials that validated higher
    if "members" in ens:
        assert meta["ensemble"]["members"] == ens["members"] and ens["members"][0]["name"] == "final"
        assert ens["steps"][-1]["NDCG@10"] > ens["candidates"]["final"]
    else:
        assert "skipped" in ens or list(ens["steps"][-1]["members"]) == ["final"]


def test_auto_ships_an_ensemble_of_its_final_run_and_trials_when_chosen(tmp_path, monkeypatch) -> None:
    """With a selection that keeps the final run and another trial, the ensemble path runs end to end inside the
    budget: the bundle holds both, weighted, and the report says so."""
    from genrec.models.ensemble import Ensemble
    from genrec.training.ensemble import select

    def keep_two(cands, split, *args, **kw):  # the real search, then its weights replaced by final + the next one
        sel = select(cands, split, *args, **kw)
        return dataclasses.replace(sel, weights={cands[0].name: 0.75, cands[1].name: 0.25})

    monkeypatch.setattr(auto, "select", keep_two)
    shop = load_synthetic("tiny", 42)
    out, budget = tmp_path / "auto", 30.0
    t0 = time.perf_counter()
    res = auto.tune(TrainConfig(model="auto", dataset="synthetic:tiny", out=str(out), threads=1), budget, shop)
    assert time.perf_counter() - t0 <= 1.1 * budget
    report = json.loads((out / "tuning.json").read_text())
    complete = [t for t in report["trials"] if t["state"] == "complete"]
    if len(complete) < 2:
        pytest.skip("one complete trial: nothing to ensemble")
    if "skipped" in report["ensemble"]:  # tiny data: a slow last epoch can eat the second the step needs
        pytest.skip(f"ensemble step skipped: {report['ensemble']['skipped']}")
    assert "members" in report["ensemble"], report["ensemble"]
    members = report["ensemble"]["members"]
    assert [m["name"] for m in members][0] == "final" and [m["weight"] for m in members] == [0.75, 0.25]
    model = load_sequential(out)
    assert isinstance(model, Ensemble) and len(model.members) == len(members)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "ensemble" and metrics["metrics"] == res.test == report["final"]["test"]
    assert "Shipped: an ensemble" in (out / "tuning.md").read_text()
    assert not list((out / "trials").glob("*/*.pt")) and not (out / "best.pt").exists()


def test_max_members_one_ships_the_final_run_alone_and_keeps_no_time_for_the_ensemble(tmp_path, monkeypatch) -> None:
    """--max-members 1 (one encoder per served request): no ensemble step runs, none of its time is reserved."""

    def never(*args, **kw):
        raise AssertionError("the ensemble selection ran with max_members=1")

    monkeypatch.setattr(auto, "select", never)
    assert auto.ensemble_evals(1) == 0.0 < auto.ensemble_evals(2) < auto.ensemble_evals(3)
    out, budget = tmp_path / "auto", 20.0
    t0 = time.perf_counter()
    res = auto.tune(TrainConfig(model="auto", dataset="synthetic:tiny", out=str(out), threads=1), budget,
                    load_synthetic("tiny", 42), max_members=1)  # fmt: skip
    assert time.perf_counter() - t0 <= 1.1 * budget
    report = json.loads((out / "tuning.json").read_text())
    assert "--max-members 1" in report["ensemble"]["skipped"]
    assert Bundle.open(out).component(role="retrieval").kind != "ensemble"
    assert json.loads((out / "metrics.json").read_text())["metrics"] == res.test
    with pytest.raises(ValueError, match="max_members"):
        auto.tune(TrainConfig(model="auto", dataset="synthetic:tiny", out=str(tmp_path / "b")), budget, max_members=0)


def test_max_members_is_an_auto_option() -> None:
    import typer.main
    from typer.testing import CliRunner

    from genrec.cli import app
    from genrec.training.ensemble import MAX_MEMBERS

    commands = typer.main.get_command(app).commands
    for cmd in ("train", "ensemble"):  # the literal defaults of the CLI (no torch import at start-up)
        assert {p.name: p.default for p in commands[cmd].params}["max_members"] == MAX_MEMBERS
    res = CliRunner().invoke(app, ["train", "--model", "hstu", "--max-members", "2"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "--max-members is for --model auto" in res.output
    args = ["train", "--model", "auto", "--dataset", "synthetic:tiny", "--time-budget", "1", "--max-members", "0"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "must be at least 1" in res.output and "Traceback" not in res.output


def _stats(**kw) -> DataStats:
    base = dict(name="x", users=1000, items=500, events=20_000, median_len=30.0, p90_len=80.0, max_len=400,
                density=0.04, has_timestamps=False, has_event_types=False, has_attributes=False,
                train_lengths=np.full(1000, 18))  # fmt: skip
    return DataStats(**{**base, **kw})


def test_search_space_follows_the_data() -> None:
    small = search_space(_stats())
    assert small.losses == ("full",) and small.attributes == (False,)
    assert 80 in small.max_lens and max(small.max_lens) <= 200 and small.dropout == (0.1, 0.4)
    big = search_space(_stats(items=FULL_SOFTMAX_MAX_ITEMS + 1, median_len=6.0, p90_len=14.0, has_attributes=True))
    assert set(big.losses) == {"sampled", "in-batch"} and big.attributes == (False, True)
    assert big.dropout[0] >= 0.3 and max(big.max_lens) <= 40  # short histories: short windows, more dropout
    # the first trial uses the catalog's attributes when it has them, and a temperature from the space
    assert big.default["attributes"] and not small.default["attributes"]
    assert small.default["temperature"] in small.temperatures and len(small.temperatures) > 1
    # trials compare settings at a constant lr; the schedule (a cosine anneal) is the final run's
    assert small.schedules == big.schedules == ("constant",) and small.default["schedule"] == "constant"


def test_action_tokens_are_searched_where_the_log_has_event_types_and_fixed_when_asked() -> None:
    plain, typed = search_space(_stats()), search_space(_stats(has_event_types=True))
    assert plain.events == (False,) and not plain.default["events"]
    assert set(typed.events) == {True, False} and typed.default["events"]  # first trial with them
    assert search_space(_stats(has_event_types=True), event_inputs=False).events == (False,)
    with pytest.raises(ValueError, match="event_type"):
        search_space(_stats(), event_inputs=True)
    study = make_study(typed, 0)
    seen = set()
    for _ in range(12):
        trial = study.ask()
        seen.add(suggest(trial, typed)["events"])
        study.tell(trial, 0.1)
    assert seen == {True, False}


def test_a_trial_trains_on_the_asked_targets_with_its_action_tokens(tmp_path, monkeypatch) -> None:
    """--target-events and --event-inputs reach every trial: `genrec train --model auto` used to drop them."""
    from typer.testing import CliRunner

    from genrec.cli import app

    seen: list[TrainConfig] = []

    def fake_tune(base: TrainConfig, budget_s: float, **kw) -> None:
        seen.append(base)
        raise ValueError("stop here")

    monkeypatch.setattr(auto, "tune", fake_tune)
    res = CliRunner().invoke(app, ["train", "--model", "auto", "--dataset", "synthetic:tiny", "--time-budget", "1",
                                   "--target-events", "purchase, cart", "--no-event-inputs", "--out", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 2 and "stop here" in res.output
    assert seen[0].target_events == ["purchase", "cart"] and seen[0].event_inputs is False
    space = search_space(_stats(has_event_types=True))
    p = {**space.default, "events": True}
    cfg = auto.trial_config(p, seen[0], tmp_path / "t", 60.0)
    assert cfg.target_events == ["purchase", "cart"] and cfg.event_inputs is True
    _, split, model = prepare(cfg, load_synthetic("tiny", 42))
    assert model.config.num_event_types == 3  # view, cart, purchase as input tokens


def test_the_same_seed_samples_the_same_settings() -> None:
    space = search_space(_stats(has_attributes=True))

    def sample(seed: int) -> list[dict]:
        study, out = make_study(space, seed), []
        for k in range(6):
            trial = study.ask()
            out.append(suggest(trial, space))
            study.tell(trial, 0.1 + 0.01 * k)
        return out

    first = sample(7)
    assert first == sample(7) and first != sample(8)
    assert first[0] == {k: v for k, v in space.default.items()}  # the middle of the space goes first


def test_no_dataset_presets_a_beauty_named_dataset_and_a_user_file_get_the_same_defaults() -> None:
    assert not hasattr(trainer, "DATASET_DEFAULTS")
    shop = load_synthetic("tiny", 0)
    configs = []
    for name in ("amazon-beauty", "events"):
        ds = Dataset(dataclasses.replace(shop.sequences, name=name), catalog=shop.catalog)
        _, _, model = prepare(TrainConfig(model="hstu", dataset=name), ds)
        configs.append(model.config.to_dict())
    assert configs[0] == configs[1]
    assert configs[0]["max_len"] == 200 and configs[0]["dropout"] == SequentialConfig.dropout


def test_a_user_file_gets_the_same_search_space_as_the_same_data_built_in(tmp_path) -> None:
    from genrec.data.datasets import load_dataset
    from genrec.data.synthetic import generate_shop, shop_config

    shop = generate_shop(shop_config("tiny", seed=0))
    shop.events.write_csv(tmp_path / "events.csv")
    shop.catalog.write_csv(tmp_path / "catalog.csv")
    user, built_in = (data_stats(load_dataset(n)) for n in (str(tmp_path / "events.csv"), "synthetic:tiny"))
    assert user.has_attributes and user.has_timestamps and user.items == built_in.items
    assert search_space(user) == search_space(built_in)


def test_auto_needs_a_time_budget() -> None:
    from typer.testing import CliRunner

    from genrec.cli import app

    res = CliRunner().invoke(app, ["train", "--model", "auto", "--dataset", "synthetic:tiny"])
    assert res.exit_code == 2 and "--time-budget" in res.output


def test_auto_refuses_the_options_it_chooses_instead_of_ignoring_them() -> None:
    from typer.testing import CliRunner

    from genrec.cli import app

    args = ["train", "--model", "auto", "--dataset", "synthetic:tiny", "--time-budget", "1"]
    res = CliRunner().invoke(app, [*args, "--dim", "64", "--lr", "0.01"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "--model auto chooses --dim, --lr itself" in res.output
    assert "Traceback" not in res.output


def test_a_budget_too_small_for_one_trial_is_a_clear_error(tmp_path) -> None:
    from genrec.training.auto import tune

    with pytest.raises(ValueError, match="time-budget"):
        tune(TrainConfig(dataset="synthetic:tiny", out=str(tmp_path / "a"), threads=1), budget_s=0.0)


def _ship_as_trained(final, cfg, best, ds, others, time_left, needed, console, max_members=3):  # noqa: ARG001
    """auto.ship for stand-in training (no weights to load): the final run's result as it came."""
    return final, {"skipped": "stand-in training"}


def test_the_search_loop_holds_its_deadline_and_survives_a_failing_setting(tmp_path, monkeypatch) -> None:
    """The loop alone, with a stand-in for training: 50 ms epochs whose score depends on the setting."""
    from genrec.training.trainer import RunResult

    calls = []

    def fake_train(cfg, dataset=None, console=None, restart=False, on_epoch=None, score_test=True):  # noqa: ARG001
        calls.append(cfg.out)
        if len(calls) == 2:  # the second setting cannot train
            raise RuntimeError("out of memory\ndetails")
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "config.json").write_text("{}")
        history, best = [], (0, -1.0)
        for epoch in range(1, 1000):
            time.sleep(0.05)
            valid = {"NDCG@10": cfg.lr * 10 * (1 - 0.5**epoch)}
            history.append({"epoch": epoch, "seconds": 0.04, "eval_seconds": 0.01, "valid": valid})
            best = max(best, (epoch, valid["NDCG@10"]), key=lambda b: b[1])
            if on_epoch(history):
                break
        test = {"NDCG@10": 0.5} if score_test else {}
        return RunResult(Path(cfg.out), history, best[0], {"NDCG@10": best[1]}, test, test, 0.05 * len(history))

    monkeypatch.setattr(auto, "train", fake_train)
    monkeypatch.setattr(auto, "ship", _ship_as_trained)
    shop = load_synthetic("tiny", 0)
    data_stats(shop)  # imports warm: the budget below is for the loop
    t0 = time.perf_counter()
    auto.tune(TrainConfig(dataset="synthetic:tiny", out=str(tmp_path / "a"), seed=1), budget_s=12.0, dataset=shop)
    wall = time.perf_counter() - t0
    assert wall <= 12.0 * 1.1
    report = json.loads((tmp_path / "a" / "tuning.json").read_text())
    states = {t["state"] for t in report["trials"]}
    assert "failed" in states and "complete" in states
    assert all(t["stop"] == "out of memory" for t in report["trials"] if t["state"] == "failed")
    complete = [t for t in report["trials"] if t["state"] == "complete"]
    assert report["chosen"]["params"]["lr"] == max(t["params"]["lr"] for t in complete)  # the best score wins
    failed = [t["number"] for t in report["trials"] if t["state"] == "failed"]
    assert report["chosen"]["trial"] not in failed


def _converging_train(calls: list):
    """A stand-in for trainer.train whose curves peak at epoch 2 and stop PATIENCE epochs later (converged)."""
    from genrec.training.trainer import RunResult

    def fake_train(cfg, dataset=None, console=None, restart=False, on_epoch=None, score_test=True):  # noqa: ARG001
        calls.append(dataclasses.replace(cfg))
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "config.json").write_text("{}")
        history = []
        for epoch in range(1, 1000):
            time.sleep(0.02)
            valid = {"NDCG@10": cfg.lr * 10 / (1 + abs(epoch - 2))}
            history.append({"epoch": epoch, "seconds": 0.015, "eval_seconds": 0.005, "valid": valid})
            if on_epoch(history) or epoch - 2 >= auto.PATIENCE:
                break
        best = max(history, key=lambda h: h["valid"]["NDCG@10"])
        test = {"NDCG@10": 0.5} if score_test else {}
        return RunResult(Path(cfg.out), history, best["epoch"], best["valid"], test, test, 0.02 * len(history))

    return fake_train


def _only_schedule(monkeypatch, schedule: str) -> None:
    real = auto.search_space

    def space(st, event_inputs=None):
        sp = real(st, event_inputs)
        return dataclasses.replace(sp, schedules=(schedule,), default={**sp.default, "schedule": schedule})

    monkeypatch.setattr(auto, "search_space", space)


def _tune_converging(tmp_path: Path, monkeypatch, schedule: str, calls: list, budget: float) -> dict:
    """auto.tune on the tiny shop with converging stand-in trials of one lr schedule; checks the budget held and
    returns tuning.json."""
    monkeypatch.setattr(auto, "train", _converging_train(calls))
    monkeypatch.setattr(auto, "ship", _ship_as_trained)
    _only_schedule(monkeypatch, schedule)
    shop = load_synthetic("tiny", 0)
    t0 = time.perf_counter()
    auto.tune(TrainConfig(dataset="synthetic:tiny", out=str(tmp_path / "a"), seed=1), budget_s=budget, dataset=shop)
    assert time.perf_counter() - t0 <= budget * 1.1
    return json.loads((tmp_path / "a" / "tuning.json").read_text())


def _assert_search_went_past_its_usual_share(report: dict, budget: float) -> None:
    assert report["search_extended"]
    reserve = auto.RESERVE_S + 0.02 * budget
    usual_end = auto.SEARCH_FRACTION * (budget - reserve)
    assert max(t["curve"][0][0] for t in report["trials"] if t.get("curve")) > usual_end  # trials after it


def test_a_converged_cosine_leader_leaves_its_resume_time_to_more_trials(tmp_path, monkeypatch) -> None:
    """Curves that peak at epoch 2 converge early; with the lr already decayed (cosine), the search goes on past
    its usual share of the budget."""
    budget = 12.0
    report = _tune_converging(tmp_path, monkeypatch, "cosine", [], budget)
    _assert_search_went_past_its_usual_share(report, budget)


def test_a_converged_constant_lr_leader_hands_most_of_its_time_to_trials_and_is_annealed(tmp_path, monkeypatch) -> None:
    """A constant-lr leader that plateaued inside its slice: the search goes on past its usual share, keeping
    PATIENCE of the leader's epochs, and the winner is resumed with its lr decayed to the end (cosine in time, no
    early stop)."""
    calls: list = []
    budget = 12.0
    report = _tune_converging(tmp_path, monkeypatch, "constant", calls, budget)
    _assert_search_went_past_its_usual_share(report, budget)
    assert report["final"]["resumed"] and report["final"]["annealed"]
    final = calls[-1]
    assert final.out == str(tmp_path / "a") and final.schedule == "cosine" and final.patience >= final.epochs
    assert all(c.schedule == "constant" for c in calls[:-1])  # the trials themselves as sampled
    assert "lr annealed" in (tmp_path / "a" / "tuning.md").read_text()


def test_a_big_log_gets_trial_epochs_over_a_sample_of_users() -> None:
    """When a whole epoch would not fit EPOCHS_PER_SLICE validated epochs in a slice, a trial's epoch trains a
    sample of users; a log the size of ML-1M or Beauty trains every user each epoch."""
    big = _stats(users=100_000, items=200_000, events=3_000_000, train_lengths=np.full(100_000, 28))
    small = _stats()
    costs = auto.CostModel(big)
    p = {**search_space(big).default}
    users = costs.epoch_users(p, slice_s=140.0)
    assert users is not None and auto.MIN_EPOCH_USERS <= users < big.users
    chunk = costs.epoch_seconds({**p, "epoch_users": users}, prior=True)
    assert chunk * auto.EPOCHS_PER_SLICE <= 140.0 * 1.01 or users == auto.MIN_EPOCH_USERS
    assert auto.CostModel(small).epoch_users({**search_space(small).default}, slice_s=140.0) is None
    cfg = auto.trial_config({**p, "epoch_users": users}, TrainConfig(), Path("x"), 140.0)
    assert cfg.epoch_users == users and "epochs of" in auto.describe({**p, "epoch_users": users})
