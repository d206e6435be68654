"""Generative ranking: causality, candidate scoring = appending each candidate alone, masked multi-task loss,
the data / example builders, metrics, and a short run that must beat popularity on purchases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrec.evaluation.metrics import auc, ndcg_at_k, ranking_report
from genrec.generative_ranking import baselines as bl
from genrec.generative_ranking.data import collapse_runs, load_shop
from genrec.generative_ranking.examples import eval_examples, popularity, split_train, train_examples
from genrec.generative_ranking.train import RankTrainConfig, fit_hstu, multitask_loss, predict_hstu
from genrec.models.hstu_ranker import HSTURanker, HSTURankerConfig, appended_logits

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shop():
    return load_shop("tiny")


def make_model(shop, mode: str, attributes: bool = True, seed: int = 0, **kw) -> HSTURanker:
    torch.manual_seed(seed)
    m = HSTURanker(
        HSTURankerConfig(
            shop.num_items,
            shop.num_actions,
            len(shop.tasks),
            shop.attribute_sizes() if attributes else {},
            token_mode=mode,
            max_len=30,
            dim=16,
            num_item_stats=3 if attributes else 0,
            **kw,
        )
    )
    if attributes:
        m.set_item_attributes({k: torch.from_numpy(v) for k, v in shop.item_attributes.items()})
        m.set_item_stats(torch.randn(shop.num_items + 1, 3))
    # random (not initial) weights, so that every path carries signal
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


def user_history(shop, u: int = 5, n: int = 12):
    s = int(shop.offsets[u])
    sl = slice(s, s + n)
    return (
        torch.from_numpy(shop.items[sl]),
        torch.from_numpy(shop.actions[sl]),
        torch.from_numpy(shop.timestamps[sl]),
    )


@pytest.mark.parametrize("mode", ["summed", "interleaved"])
def test_later_action_does_not_change_earlier_predictions(shop, mode: str) -> None:
    model = make_model(shop, mode)
    items, actions, times = user_history(shop)
    n = len(items)
    cands = torch.tensor([3, 7, 11, 19, 23, 42])
    cuts = torch.tensor([0, 2, 5, 6, 9, 12])  # candidate j sees events [0, cuts[j])

    def logits(acts: torch.Tensor, its: torch.Tensor) -> torch.Tensor:
        return model(
            its,
            acts,
            times,
            torch.tensor([0, n]),
            cands,
            cuts,
            times[cuts.clamp(max=n - 1)],
            torch.tensor([0, len(cands)]),
        )

    base = logits(actions, items)
    t = 6  # change event 6's action and item: candidates with cut <= 6 must not move, later ones must
    acts2, items2 = actions.clone(), items.clone()
    acts2[t] = actions[t] % shop.num_actions + 1
    items2[t] = items[t] % shop.num_items + 1
    changed = logits(acts2, items2)
    early = cuts <= t
    torch.testing.assert_close(changed[early], base[early], rtol=0, atol=1e-6)
    assert (changed[~early] - base[~early]).abs().amax(1).min() > 1e-4, "a later cut must see the change"
    only_action = logits(acts2, items)  # the action alone matters too (it is a token / embedding)
    assert (only_action[~early] - base[~early]).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["summed", "interleaved"])
@pytest.mark.parametrize("use_time", [True, False])
def test_shared_prefix_scoring_equals_appending_each_candidate_alone(shop, mode: str, use_time: bool) -> None:
    model = make_model(shop, mode, use_time=use_time)
    items, actions, times = user_history(shop, u=9, n=15)
    cands = torch.tensor([1, 4, 9, 16, 25, 36, 49, 64])
    t_req = int(times[-1]) + 3600
    shared = torch.logit(model.score(items, actions, times, cands, request_time=t_req), eps=0)
    alone = torch.stack([appended_logits(model, items, actions, times, int(c), t_req) for c in cands])
    torch.testing.assert_close(shared, alone, rtol=1e-4, atol=1e-4)
    # and the candidates really differ (the check is not vacuous)
    assert shared.std(0).max() > 1e-3


def test_multitask_loss_masks_missing_labels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 2, requires_grad=True)
    labels = torch.tensor([[1, 1], [0, float("nan")], [1, 0], [0, float("nan")], [1, 1], [0, 0]])
    loss = multitask_loss(logits, labels)
    loss.backward()
    missing = torch.isnan(labels)
    assert torch.all(logits.grad[missing] == 0)
    assert torch.all(logits.grad[~missing] != 0)
    # equal to the per-task means over present labels, averaged over tasks
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = (bce(logits[:, 0], labels[:, 0]) + bce(logits[~missing[:, 1], 1], labels[~missing[:, 1], 1])) / 2
    torch.testing.assert_close(loss, expected)
    # a wild logit where the label is missing changes nothing
    wild = logits.detach().clone()
    wild[missing] = 1e4
    torch.testing.assert_close(multitask_loss(wild, labels), loss.detach())
    # a task with no label at all is left out, not averaged in as 0
    only = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    torch.testing.assert_close(multitask_loss(logits[:2].detach(), only), bce(logits[:2, 0].detach(), only[:, 0]))


def test_collapse_runs_keeps_first_time_and_highest_action() -> None:
    items = np.array([5, 5, 5, 7, 5, 5, 2])
    users = np.array([0, 0, 0, 0, 0, 1, 1])
    acts = np.array([1, 2, 3, 1, 1, 2, 1])
    ts = np.arange(7) * 10
    i, u, a, t = collapse_runs(items, users, acts, ts)
    assert i.tolist() == [5, 7, 5, 5, 2] and u.tolist() == [0, 0, 0, 1, 1]
    assert a.tolist() == [3, 1, 1, 2, 1] and t.tolist() == [0, 30, 40, 50, 60]


def test_examples_hold_out_the_test_window(shop) -> None:
    window = 3
    train, evaluated = split_train(shop, window)
    assert len(train.items) == len(shop.items) - window * len(evaluated)
    pop = popularity(train)
    trx = train_examples(train, 30, 2, pop, 0, horizon=window, cut_every=2)
    tex = eval_examples(shop, evaluated, window, 30, 20, pop, 1)
    assert tex.num_users == len(evaluated)
    for b in range(0, tex.num_users, 37):
        u = int(tex.users[b])
        s, e = int(shop.offsets[u]), int(shop.offsets[u + 1])
        held = set(shop.items[e - window : e].tolist())
        cs, ce = tex.cand_offsets[b], tex.cand_offsets[b + 1]
        pos = tex.labels[cs:ce, 0] == 1
        assert set(tex.cand_items[cs:ce][pos].tolist()) == held  # positives = the held-out items
        assert not set(tex.cand_items[cs:ce][~pos].tolist()) & set(shop.items[s:e].tolist())  # negatives unseen
        hs, he = tex.hist_offsets[b], tex.hist_offsets[b + 1]
        assert tex.hist_items[hs:he].tolist() == shop.items[max(s, e - window - 30) : e - window].tolist()
        assert np.all(tex.cand_cuts[cs:ce] == he - hs)
    # training examples only ever see training events, and every cut is inside its user's window
    lengths = np.diff(trx.hist_offsets)
    assert np.all(trx.cand_cuts >= 1) and np.all(trx.cand_cuts < np.repeat(lengths, np.diff(trx.cand_offsets)))
    assert np.nanmax(trx.labels) == 1 and np.nanmin(trx.labels) == 0


def test_metrics() -> None:
    rng = np.random.default_rng(0)
    y, s = rng.random(200) < 0.3, rng.random(200)
    s[:50] = 0.5  # ties
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in s[y] for b in s[~y]])
    assert auc(y, s) == pytest.approx(brute)
    groups = np.array([0, 0, 0, 1, 1])
    gains = np.array([0, 2, 1, 1, 0])
    assert ndcg_at_k(groups, gains, np.array([0.1, 0.9, 0.5, 0.8, 0.1])) == pytest.approx(1.0)
    assert ndcg_at_k(groups, gains, np.array([0.9, 0.1, 0.5, 0.1, 0.8])) < 0.8
    assert ndcg_at_k(groups, gains, np.zeros(5)) < 1.0  # ties count against the scorer


def test_short_run_predicts_purchases_better_than_popularity(shop) -> None:
    window = 3
    train, evaluated = split_train(shop, window)
    pop = popularity(train)
    trx = train_examples(train, 30, 2, pop, 0)
    tex = eval_examples(shop, evaluated, window, 30, 30, pop, 1)
    torch.manual_seed(0)
    model = HSTURanker(HSTURankerConfig(shop.num_items, shop.num_actions, 3, token_mode="summed", max_len=30, dim=32))
    fit_hstu(model, trx, RankTrainConfig(epochs=10, lr=3e-3, batch_users=16), quiet=True)
    hstu = ranking_report(shop.tasks, tex.labels, predict_hstu(model, tex), tex.cand_user())
    counts = bl.task_counts(train)
    popm = bl.fit_popularity(counts, trx)
    popr = ranking_report(shop.tasks, tex.labels, bl.predict_popularity(popm, counts, tex), tex.cand_user())
    assert popr["purchase/auc"] > 0.5  # popularity is a real baseline here, not a strawman
    assert hstu["purchase/auc"] > popr["purchase/auc"] + 0.05, (hstu, popr)


def test_per_task_ctr_rankers_train_on_the_same_rows(shop) -> None:
    train, evaluated = split_train(shop, 3)
    pop = popularity(train)
    trx = train_examples(train, 20, 1, pop, 0)
    tex = eval_examples(shop, evaluated, 3, 20, 10, pop, 1)
    counts = bl.task_counts(train)
    ftr, fte = bl.featurize(trx, shop, counts), bl.featurize(tex, shop, counts)
    for kind in bl.PER_TASK_KINDS:
        models, scaler, keys, _ = bl.fit_per_task(kind, shop, ftr, trx.labels, epochs=1)
        probs = bl.predict_per_task(models, scaler, keys, shop, fte)
        assert probs.shape == tex.labels.shape and np.all((probs > 0) & (probs < 1))
        report = ranking_report(shop.tasks, tex.labels, probs, tex.cand_user())
        assert report["view/auc"] > 0.55, (kind, report)  # learns something from the features
