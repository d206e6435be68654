import dataclasses
import json
import math

import pytest
import torch

from genrec.bundle import Bundle, load_sequential
from genrec.data.datasets import load_synthetic
from genrec.training.losses import next_item_loss
from genrec.training.trainer import TrainConfig, load_checkpoint, train


@pytest.fixture(scope="module")
def shop():
    return load_synthetic("small", seed=1)


def small_cfg(out, **kw) -> TrainConfig:
    base = dict(model="hstu", dataset="synthetic:small", out=str(out), epochs=8, max_len=30, dim=32,
                batch_size=128, seed=3, threads=2, patience=100)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_short_run_beats_popularity_and_writes_run_folder(shop, tmp_path) -> None:
    res = train(small_cfg(tmp_path / "run"), dataset=shop)
    pop_valid = res.history[0]["valid"]  # noqa: F841  (kept for debugging output)
    assert res.best_valid["NDCG@10"] > 2.0 * _popularity_valid(shop)
    assert res.test["NDCG@10"] > 2.0 * res.popularity_test["NDCG@10"]
    for f in (
        "manifest.json",
        "vocab.json",
        "histories.parquet",
        "components/hstu/model.pt",
        "last.pt",
        "history.json",
        "curves.png",
        "metrics.json",
    ):
        assert (tmp_path / "run" / f).exists(), f
    assert not (tmp_path / "run" / "best.pt").exists()  # moved into the bundle
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["best_epoch"] == res.best_epoch
    bundle = Bundle.open(tmp_path / "run")
    assert bundle.metrics == metrics and bundle.component("hstu").metrics == metrics and bundle.matches(shop.sequences)
    model = load_sequential(bundle, "hstu")
    assert model.config.dim == 32 and not model.training


def _popularity_valid(shop) -> float:
    from genrec.data.sequences import leave_one_out
    from genrec.evaluation.evaluate import evaluate_scorer, popularity_scorer

    split = leave_one_out(shop.sequences)
    return evaluate_scorer(popularity_scorer(split), split, "valid", 30)["NDCG@10"]


def test_resume_continues_where_it_stopped(shop, tmp_path) -> None:
    full = train(small_cfg(tmp_path / "full", epochs=4, model="sasrec", threads=1), dataset=shop)
    train(small_cfg(tmp_path / "half", epochs=2, model="sasrec", threads=1), dataset=shop)  # "killed" after epoch 2
    resumed = train(small_cfg(tmp_path / "half", epochs=4, model="sasrec", threads=1), dataset=shop)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(resumed.history, full.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    wa = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "half" / "last.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])


def test_sampled_and_in_batch_losses_track_full_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.nn.functional.normalize(torch.randn(201, 16, generator=g), dim=-1)
    targets = torch.randint(1, 201, (64,), generator=g)
    states = torch.nn.functional.normalize(table[targets] + 0.3 * torch.randn(64, 16, generator=g), dim=-1)
    full = next_item_loss(states, targets, table, 0.1, "full")
    sampled = next_item_loss(states, targets, table, 0.1, "sampled", num_negatives=200, generator=g)
    in_batch = next_item_loss(states, targets, table, 0.1, "in-batch")
    assert 0 < in_batch < sampled < full * 1.05  # fewer negatives -> smaller loss
    assert sampled > 0.5 * full
    with pytest.raises(ValueError):
        next_item_loss(states, targets, table, 0.1, "bce")


def test_sampled_loss_equals_cross_entropy_over_positive_and_per_sequence_negatives() -> None:
    g = torch.Generator().manual_seed(3)
    table = torch.nn.functional.normalize(torch.randn(21, 8, generator=g), dim=-1)
    offsets = torch.tensor([0, 5, 6, 13])
    states = torch.nn.functional.normalize(torch.randn(13, 8, generator=g), dim=-1)
    targets = torch.randint(1, 21, (13,), generator=g)
    loss = next_item_loss(states, targets, table, 0.1, "sampled", 6, generator=torch.Generator().manual_seed(0),
                          offsets=offsets)  # fmt: skip
    neg = torch.randint(1, 21, (3, 6), generator=torch.Generator().manual_seed(0))  # the same draw
    rows = []
    for b in range(3):
        for t in range(int(offsets[b]), int(offsets[b + 1])):
            logits = torch.cat([table[targets[t]][None], table[neg[b]]]) @ states[t] / 0.1
            logits[1:][neg[b] == targets[t]] = float("-inf")  # a negative equal to the target is not a negative
            rows.append(torch.logsumexp(logits, 0) - logits[0])
    torch.testing.assert_close(loss, torch.stack(rows).mean())


@pytest.mark.parametrize("bound", [25.0, math.inf])  # skips / takes the max-shift
def test_fused_product_logsumexp_equals_autograd_reference(bound: float) -> None:
    from genrec.training.losses import _ProductLogSumExp, product_lse_reference

    g = torch.Generator().manual_seed(5)
    sp = torch.randn(3, 7, 8, generator=g, requires_grad=True)
    ne = torch.randn(3, 5, 8, generator=g, requires_grad=True)
    hits = torch.tensor([0, 4, 12, 13, 40, 104])  # flat (b, i, k) positions, incl. rows with two hits
    w = torch.randn(3, 7, generator=g)
    ref = product_lse_reference(sp, ne, hits, bound)
    fast = _ProductLogSumExp.apply(sp, ne, hits, bound)
    torch.testing.assert_close(fast, ref)
    for a, b in zip(torch.autograd.grad((fast * w).sum(), (sp, ne)), torch.autograd.grad((ref * w).sum(), (sp, ne)),
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)
    # a row whose only negative is a hit contributes nothing and keeps finite gradients
    one = _ProductLogSumExp.apply(sp[:1, :1], ne[:1, :1], torch.tensor([0]), bound)
    (grad,) = torch.autograd.grad(torch.logaddexp(torch.zeros(1, 1), one).sum(), sp)
    assert one.item() < -60 and torch.isfinite(grad).all()


def test_accidental_hits_equal_brute_force_comparison() -> None:
    from genrec.training.losses import accidental_hits

    g = torch.Generator().manual_seed(2)
    neg = torch.randint(1, 9, (4, 6), generator=g)  # small catalog: duplicates and many hits
    tgt = torch.randint(0, 9, (4, 11), generator=g)  # 0 = padding, never a hit
    brute = ((neg[:, None, :] == tgt[:, :, None]) & (tgt[:, :, None] > 0)).view(-1).nonzero().squeeze(1)
    assert len(brute) > 10
    assert torch.equal(accidental_hits(neg, tgt, 8).sort().values, brute)


def test_cosine_schedule_decays_over_epochs_or_time_budget() -> None:
    from genrec.training.trainer import LR_FLOOR, TrainConfig, lr_factor

    by_epochs = TrainConfig(schedule="cosine", epochs=10)
    assert lr_factor(by_epochs, 1, 0.0, 0.0) == 1.0
    assert abs(lr_factor(by_epochs, 6, 0.0, 0.0) - (LR_FLOOR + (1 - LR_FLOOR) / 2)) < 1e-9  # halfway
    assert lr_factor(by_epochs, 10, 1.0, 0.0) == LR_FLOOR
    by_time = TrainConfig(schedule="cosine", epochs=10, time_budget_s=100.0)
    assert lr_factor(by_time, 1, 0.0, 25.0) > lr_factor(by_time, 9, 0.0, 75.0)  # time, not epochs, drives it
    assert lr_factor(by_time, 1, 0.0, 500.0) == LR_FLOOR
    assert lr_factor(TrainConfig(), 5, 0.5, 99.0) == 1.0
    with pytest.raises(ValueError, match="schedule"):  # refused when configured, not at the first step
        TrainConfig(schedule="step")


def test_full_softmax_loss_equals_cross_entropy() -> None:
    g = torch.Generator().manual_seed(4)
    table = torch.nn.functional.normalize(torch.randn(31, 8, generator=g), dim=-1)
    states = torch.nn.functional.normalize(torch.randn(9, 8, generator=g), dim=-1).requires_grad_()
    targets = torch.randint(1, 31, (9,), generator=g)
    loss = next_item_loss(states, targets, table, 0.05, "full")
    ref = torch.nn.functional.cross_entropy(states @ table[1:].T / 0.05, targets - 1)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, states)[0], torch.autograd.grad(ref, states)[0])


def test_refit_trains_the_chosen_epochs_on_train_and_valid(shop, tmp_path) -> None:
    from genrec.training.trainer import refit_config

    src = train(small_cfg(tmp_path / "src", epochs=3, model="sasrec", threads=1, item_attributes=True), dataset=shop)
    cfg = refit_config(tmp_path / "src", tmp_path / "refit")
    assert (cfg.fit, cfg.stop_epoch, cfg.item_attributes, cfg.refit_of) == (
        "train+valid", src.best_epoch, True, str(tmp_path / "src"),
    )  # fmt: skip
    res = train(cfg, dataset=shop)
    assert [h["epoch"] for h in res.history] == list(range(1, src.best_epoch + 1))
    assert all(h["valid"] is None for h in res.history) and res.best_epoch == src.best_epoch
    metrics = json.loads((tmp_path / "refit" / "metrics.json").read_text())
    assert metrics["fit"] == "train+valid" and metrics["split"] == "test"
    assert res.test["NDCG@10"] > 2.0 * res.popularity_test["NDCG@10"]
    with pytest.raises(ValueError, match="refit"):
        refit_config(tmp_path / "refit", tmp_path / "again")
    train(small_cfg(tmp_path / "timed", epochs=1, schedule="cosine", time_budget_s=60.0), dataset=shop)
    with pytest.raises(ValueError, match="wall time"):
        refit_config(tmp_path / "timed", tmp_path / "again")


def test_weight_ema_averages_and_restores() -> None:
    from genrec.training.averaging import WeightEMA

    model = torch.nn.Linear(3, 2)
    ema = WeightEMA(model, decay=0.75)
    ema.steps = 100  # past the warm-up: d_t = 0.75
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(4.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], start + 1.0)  # 0.75 * w0 + 0.25 * (w0 + 4)
    with ema.applied(model):
        torch.testing.assert_close(model.weight, start + 1.0)
    torch.testing.assert_close(model.weight, start + 4.0)  # the trained weights come back
    with pytest.raises(ValueError):
        WeightEMA(model, decay=1.0)
    fresh = WeightEMA(model, decay=0.999)  # warm-up: the first step weighs the new weights by 0.9
    with torch.no_grad():
        model.weight.add_(10.0)
    fresh.update(model)
    torch.testing.assert_close(fresh.shadow["weight"], start + 4.0 + 9.0)


def test_ema_run_saves_the_averaged_weights_and_resumes(shop, tmp_path) -> None:
    full = train(small_cfg(tmp_path / "full", epochs=3, model="sasrec", threads=1, ema=0.9), dataset=shop)
    train(small_cfg(tmp_path / "half", epochs=2, model="sasrec", threads=1, ema=0.9), dataset=shop)
    resumed = train(small_cfg(tmp_path / "half", epochs=3, model="sasrec", threads=1, ema=0.9), dataset=shop)
    for a, b in zip(resumed.history, full.history, strict=True):
        assert a["valid"]["NDCG@10"] == pytest.approx(b["valid"]["NDCG@10"], abs=1e-6)
    train(small_cfg(tmp_path / "one", epochs=1, model="sasrec", threads=1, ema=0.9), dataset=shop)
    last = load_checkpoint(tmp_path / "one" / "last.pt")
    best = Bundle.open(tmp_path / "one").state_dict("sasrec")  # epoch 1 is best: it holds the average
    torch.testing.assert_close(best["item_emb.weight"], last["ema"]["shadow"]["item_emb.weight"])
    assert not torch.equal(best["item_emb.weight"], last["model"]["item_emb.weight"])


def test_on_epoch_stops_the_run_and_a_torn_last_pt_is_named(shop, tmp_path) -> None:
    seen: list[int] = []

    def stop_at_two(history: list[dict]) -> bool:
        seen.append(history[-1]["epoch"])
        return len(history) == 2

    res = train(small_cfg(tmp_path / "run", epochs=5, model="sasrec", threads=1), dataset=shop, on_epoch=stop_at_two)
    assert seen == [1, 2] and [h["epoch"] for h in res.history] == [1, 2] and res.test["NDCG@10"] > 0
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "last.pt").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(ValueError, match=r"torn/last.pt: checkpoint is corrupt.*--restart"):
        train(small_cfg(tmp_path / "torn", epochs=1, model="sasrec", threads=1), dataset=shop)


@pytest.mark.parametrize("kind", ["full", "sampled", "in-batch"])
def test_masked_loss_counts_only_the_target_positions(kind) -> None:
    g = torch.Generator().manual_seed(0)
    states = torch.nn.functional.normalize(torch.randn(7, 8, generator=g), dim=-1)
    table = torch.nn.functional.normalize(torch.randn(21, 8, generator=g), dim=-1)
    targets = torch.randint(1, 21, (7,), generator=g)
    offsets = torch.tensor([0, 3, 7])
    mask = torch.tensor([True, False, True, False, False, True, True])

    def loss(m, s=states, t=targets, o=offsets):
        return next_item_loss(s, t, table, 0.1, kind, 5, generator=torch.Generator().manual_seed(1), offsets=o, mask=m)

    assert loss(None).item() == pytest.approx(loss(torch.ones(7, dtype=torch.bool)).item(), rel=1e-6)
    masked = loss(mask)
    if kind == "full":  # the mean over the kept positions alone
        assert masked.item() == pytest.approx(loss(None, states[mask], targets[mask], None).item(), rel=1e-5)
    assert masked.item() != pytest.approx(loss(None).item(), rel=1e-3)
    assert loss(torch.zeros(7, dtype=torch.bool)).item() == 0.0


def test_event_types_are_input_tokens_of_sequence_models() -> None:
    from genrec.models import build_model

    items, offsets = torch.tensor([3, 5, 7, 2]), torch.tensor([0, 4])
    viewed, bought = torch.tensor([1, 1, 1, 1]), torch.tensor([1, 1, 3, 1])
    for name in ("sasrec", "hstu"):
        torch.manual_seed(0)
        model = build_model(name, 10, dim=16, max_len=8, num_event_types=3).eval()
        with torch.no_grad():
            a = model.encode(items, offsets, None, viewed)
            b = model.encode(items, offsets, None, bought)
        torch.testing.assert_close(a[:2], b[:2])  # causal: positions before the purchase cannot see it
        assert not torch.allclose(a[2:], b[2:])  # the action changes the state from its position on
        plain = build_model(name, 10, dim=16, max_len=8).eval()  # no event types: events are ignored
        with torch.no_grad():
            torch.testing.assert_close(plain.encode(items, offsets, None, bought), plain.encode(items, offsets))
        assert "event_emb.weight" in model.state_dict() and "event_emb.weight" not in plain.state_dict()


def test_training_with_event_inputs_and_purchase_targets(tmp_path) -> None:
    from genrec.data.sequences import leave_one_out

    shop = load_synthetic("tiny", seed=1)
    cfg = TrainConfig(model="sasrec", dataset="synthetic:tiny", out=str(tmp_path / "run"), epochs=1, max_len=20,
                      dim=16, threads=1, event_inputs=True, target_events=["purchase"])  # fmt: skip
    res = train(cfg, dataset=shop)
    from genrec.bundle import Bundle

    saved = Bundle.open(tmp_path / "run").component(role="retrieval").config
    assert saved["model"]["num_event_types"] == 3 and saved["train"]["target_events"] == ["purchase"]
    split = leave_one_out(shop.sequences, target_events=["purchase"])
    _, ends, _ = split.eval_inputs("test")
    purchase = shop.sequences.event_vocab.index("purchase")
    assert (shop.sequences.event_types[ends] == purchase).all() and len(ends) > 50
    assert 0.0 < res.test["HR@200"] <= 1.0
    with pytest.raises(ValueError, match="unknown event type 'buy'"):
        train(TrainConfig(**{**saved["train"], "target_events": ["buy"]}), dataset=shop)


def test_event_inputs_default_on_when_the_data_has_event_types(tmp_path) -> None:
    from typer.testing import CliRunner

    from genrec.cli import app
    from genrec.data.datasets import Dataset
    from genrec.data.sequences import from_item_lists
    from genrec.training.trainer import prepare

    shop = load_synthetic("tiny", seed=0)
    cfg = TrainConfig(model="sasrec", dataset="synthetic:tiny", max_len=8, dim=16)
    assert prepare(cfg, shop)[2].event_emb is not None  # the default
    assert prepare(TrainConfig(**{**cfg.__dict__, "event_inputs": False}), shop)[2].event_emb is None
    plain = Dataset(sequences=from_item_lists([[1, 2, 3, 4]] * 4, "lists"))
    assert prepare(cfg, plain)[2].event_emb is None  # no event types: items only, no error
    for flag, types in (([], 3), (["--no-event-inputs"], 0)):
        out = tmp_path / f"run{len(flag)}"
        res = CliRunner().invoke(app, ["train", "--model", "sasrec", "--dataset", "synthetic:tiny", "--epochs", "1",
                                       "--max-len", "8", "--dim", "16", "--threads", "1", "--out", str(out), *flag])  # fmt: skip
        assert res.exit_code == 0, res.output
        assert Bundle.open(out).component(role="retrieval").config["model"]["num_event_types"] == types


def test_an_epoch_longer_than_the_budget_stops_inside_and_the_budget_holds(shop, tmp_path) -> None:
    """One epoch of a big log can outlast a tuning trial's slice: the epoch stops when the time left would not
    fit the validation, which still runs, and the call ends within its budget."""
    import time

    cfg = small_cfg(tmp_path / "run", model="hstu", dim=128, num_layers=4, max_len=100, threads=1, batch_size=16)
    whole = train(dataclasses.replace(cfg, out=str(tmp_path / "whole"), epochs=1), dataset=shop, score_test=False)
    epoch_s = whole.history[0]["seconds"]
    budget = epoch_s / 2 + whole.history[0]["eval_seconds"]
    t0 = time.perf_counter()
    res = train(dataclasses.replace(cfg, time_budget_s=budget), dataset=shop, score_test=False)
    wall = time.perf_counter() - t0
    assert len(res.history) == 1 and 0.1 < res.history[0]["fraction"] < 0.9
    assert res.best_valid and wall <= 1.15 * budget + 1.0  # + loading the model and data
    assert whole.history[0]["fraction"] == 1.0


def test_validation_scores_every_user_up_to_a_cost_then_a_fixed_sample() -> None:
    from genrec.training.trainer import MIN_VALID_USERS, VALID_SCORES, valid_users

    assert valid_users(TrainConfig(), 6_040, 3_416) == 6_040  # ML-1M: every user
    assert valid_users(TrainConfig(), 22_363, 12_101) == 22_363  # Amazon Beauty: every user
    assert valid_users(TrainConfig(), 100_000, 100_000) == VALID_SCORES // 100_000 == 5_000
    assert valid_users(TrainConfig(), 100_000, 10**7) == MIN_VALID_USERS
    assert valid_users(TrainConfig(valid_users=300), 100_000, 50) == 300


@pytest.mark.parametrize("kind", ["sampled", "in-batch"])
def test_a_loss_over_the_rows_used_equals_the_loss_over_the_whole_table(kind) -> None:
    """model.item_rows (only the targets' and negatives' rows) gives the loss and gradients of item_table()."""
    from genrec.models.sequential import SequentialConfig, SequentialModel

    torch.manual_seed(0)
    model = SequentialModel(SequentialConfig(num_items=500, dim=16, num_attribute_tokens=20, attributes_per_item=2))
    model.set_item_attributes(torch.randint(0, 21, (501, 2)))
    model.eval()  # no id dropout: both paths see the same vectors
    states = torch.nn.functional.normalize(torch.randn(12, 16), dim=-1)
    targets, offsets = torch.randint(1, 501, (12,)), torch.tensor([0, 5, 12])
    grads = []
    for table in (model.item_table(), model.item_rows):
        model.zero_grad()
        loss = next_item_loss(states, targets, table, 0.1, kind, 32, generator=torch.Generator().manual_seed(1),
                              offsets=offsets, num_items=500)  # fmt: skip
        loss.backward()
        grads.append((loss.item(), model.item_emb.weight.grad.clone(), model.attr_emb.weight.grad.clone()))
    (l0, g0, a0), (l1, g1, a1) = grads
    assert l0 == pytest.approx(l1, rel=1e-5)
    assert torch.allclose(g0, g1, atol=1e-6) and torch.allclose(a0, a1, atol=1e-6)
    with pytest.raises(ValueError, match="needs kind='sampled'"):
        next_item_loss(states, targets, model.item_rows, 0.1, "full")
