"""Stages and re-ranking rules on the model bundle directly, config loading, and a plugged-in ranker stage."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.serving.config import ConfigError, load_config
from genrec.serving.metrics import Registry
from genrec.serving.pipeline import Candidates, RequestContext, ServingModel
from genrec.serving.store import StoredEvent


def build(tiny_run: Path, tmp_path: Path, **cfg) -> ServingModel:
    path = tmp_path / "serving.json"
    path.write_text(json.dumps(cfg))
    return ServingModel.load(tiny_run, load_config(path))


def recommend(b: ServingModel, user: str, k: int = 10, live: list[StoredEvent] | None = None, **kw) -> Candidates:
    return b.run(b.context(user, k, live or [], **kw))


def test_category_cap_and_boost(tiny_run: Path, tmp_path: Path, bundle: ServingModel) -> None:
    user = bundle.users.ids[3]
    plain = recommend(bundle, user, k=30)
    cats = Counter(bundle.catalog.category[plain.items.numpy()].tolist())
    assert max(cats.values()) > 3, "needs a user whose top 30 repeat a category"
    capped = build(tiny_run, tmp_path, rules={"max_per_category": 3})
    out = recommend(capped, user, k=20)  # 8 categories x 3 >= 20: the cap can be met
    assert len(out) == 20
    assert max(Counter(capped.catalog.category[out.items.numpy()].tolist()).values()) <= 3
    # k over cap x categories: the page is back-filled with the best capped-out items, after all the others
    full = recommend(capped, user, k=30)
    assert len(full) == 30 and len(set(full.items.tolist())) == 30
    n_cats = len(set(capped.catalog.category[full.items.numpy()].tolist()))
    head = full.items.numpy()[: 3 * n_cats]
    assert max(Counter(capped.catalog.category[head].tolist()).values()) <= 3
    # boosting the category of the 20th item pulls that category's items to the top
    boost_cat = bundle.catalog.category_names[int(bundle.catalog.category[int(plain.items[19])])]
    boosted = build(tiny_run, tmp_path, rules={"boosts": [{"field": "category", "value": boost_cat, "weight": 1000.0}]})
    top = recommend(boosted, user, k=5)
    assert {boosted.catalog.category_names[int(boosted.catalog.category[int(i)])] for i in top.items} == {boost_cat}


def test_exclude_purchased_only(tiny_run: Path, tmp_path: Path, bundle: ServingModel) -> None:
    b = build(
        tiny_run, tmp_path, rules={"exclude_seen": False, "exclude_purchased": True, "exclude_out_of_stock": False}
    )
    user = bundle.users.ids[2]
    top = recommend(b, user, k=5)
    bought, viewed = top.items[0].item(), top.items[1].item()  # two items the model likes: buy one, view the other
    live = [
        StoredEvent("p", user, b.vocab.raw(bought), "purchase", 1_800_000_000, 1),
        StoredEvent("v", user, b.vocab.raw(viewed), "view", 1_800_000_001, 2),
    ]
    got = recommend(b, user, k=b.num_items, live=live).items.tolist()
    assert bought not in got and viewed in got


def test_custom_ranker_stage_plugs_in_by_config(tiny_run: Path, tmp_path: Path) -> None:
    stages = [
        {"name": "retrieval", "num_candidates": 50},
        {"name": "ranker", "factory": "genrec.serving.tests.test_pipeline:make_reverse_ranker", "weight": -1.0},
        {"name": "rerank"},
    ]
    b = build(tiny_run, tmp_path, stages=stages)
    assert [s.name for s in b.stages] == ["retrieval", "ranker", "rerank"]
    ctx = b.context(b.users.ids[0], 5, [])
    out = b.run(ctx)
    assert set(out.stages) == {"ranker"} and set(ctx.timings) == {"retrieval", "ranker", "rerank"}
    base = build(tiny_run, tmp_path)
    retrieved = base.run(base.context(b.users.ids[0], 50, [])).items.tolist()
    assert out.items.tolist() == retrieved[::-1][:5]  # the ranker's (reversed) order won


class ReverseRanker:
    """A stand-in for a DLRM ranker: rescores the candidates (here: negated retrieval scores)."""

    name = "ranker"

    def __init__(self, bundle: ServingModel, weight: float) -> None:
        self.weight = weight

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        return Candidates(cands.items, cands.scores * self.weight, [self.name] * len(cands), [0] * len(cands))


def make_reverse_ranker(bundle: ServingModel, weight: float = -1.0) -> ReverseRanker:
    return ReverseRanker(bundle, weight)


def test_history_joins_dataset_and_live_and_collapses_repeats(bundle: ServingModel) -> None:
    user = bundle.users.ids[0]
    base = bundle.history(user, [])
    last = bundle.vocab.raw(int(base.items[-1]))
    live = [
        StoredEvent("1", user, last, "view", 10, 1),  # same item as the dataset's last: one token
        StoredEvent("2", user, "unknown-sku", "view", 11, 2),  # skipped by the model
        StoredEvent("3", user, bundle.vocab.raw(1), "cart", 12, 3),
    ]
    h = bundle.history(user, live)
    assert len(h.items) == len(base.items) + 3 and h.num_dataset == len(base.items)
    assert np.all(np.diff(h.timestamps) >= 0)  # live clocks older than the dataset are clamped
    tokens, _, codes = h.model_tokens(10_000)
    base_tokens, _, base_codes = base.model_tokens(10_000)
    assert tokens.tolist() == base_tokens.tolist() + [1]
    ev = bundle.event_vocab
    assert ev is not None  # the run's collapsed token takes its last event's type, as training's tokens do
    assert codes.tolist() == base_codes[:-1].tolist() + [ev.index("view"), ev.index("cart")]
    assert len(h.model_tokens(5)[0]) == 5


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("max_k = 10\n[rules]\nmax_per_categry = 3\n")
    with pytest.raises(ConfigError, match="rules: unknown key.*max_per_categry"):
        load_config(p)
    p.write_text("max_batch = 0\n")
    with pytest.raises(ConfigError, match="max_batch"):
        load_config(p)
    p.write_text('store = "redis://x:1/0"\n[[stages]]\nname = "retrieval"\n')
    cfg = load_config(p, store="sqlite:///y.db")
    assert cfg.store == "sqlite:///y.db" and cfg.stages == [{"name": "retrieval"}]


def test_unknown_stage_is_a_clear_error(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown stage 'dlrm'"):
        build(tiny_run, tmp_path, stages=[{"name": "dlrm"}])


def test_prometheus_text_format() -> None:
    r = Registry()
    c = r.counter("x_total", "help", ("a",))
    h = r.histogram("lat_seconds", "help", ("s",), buckets=(0.01, 0.1))
    c.inc(a='q"uote')
    for v in (0.005, 0.01, 0.05, 3.0):
        h.observe(v, s="retrieval")
    text = r.render()
    assert 'x_total{a="q\\"uote"} 1' in text
    assert 'lat_seconds_bucket{s="retrieval",le="0.01"} 2' in text  # le is inclusive
    assert 'lat_seconds_bucket{s="retrieval",le="0.1"} 3' in text
    assert 'lat_seconds_bucket{s="retrieval",le="+Inf"} 4' in text
    assert 'lat_seconds_count{s="retrieval"} 4' in text and "# TYPE lat_seconds histogram" in text
    assert torch.isfinite(torch.tensor(float(text.split('lat_seconds_sum{s="retrieval"} ')[1].split()[0])))


def test_documented_example_config_loads(tmp_path: Path) -> None:
    import genrec.serving.config as config_module

    example = config_module.__doc__.split("\n\n", 1)[1]
    p = tmp_path / "serving.toml"
    p.write_text(example)
    cfg = load_config(p)
    assert cfg.rules.max_per_category == 3 and cfg.rules.boosts[0].value == "c3"
    assert [s["name"] for s in cfg.stages] == ["retrieval", "popular", "rerank"]


def test_offline_recommender_agrees_with_the_served_retrieval(bundle: ServingModel) -> None:
    """Recommender.recommend (CLI path) and the served pipeline share Recommender.scores: same top items."""
    b = bundle
    user = b.users.ids[4]
    h = b.history(user, [], details=True)
    offline = b.rec.recommend(h.raw_items, k=10, timestamps=h.timestamps.tolist(), exclude_seen=True,
                              events=h.event_types)  # fmt: skip
    assert len(offline) == 10 and not {r.item_id for r in offline} & set(h.raw_items)
    served = recommend(b, user, k=b.num_items)
    in_stock_offline = [r.item_id for r in offline if b.catalog.in_stock[b.vocab.index(r.item_id)]]
    assert [b.vocab.raw(int(i)) for i in served.items[: len(in_stock_offline)]] == in_stock_offline
