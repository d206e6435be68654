"""A model trained with --event-inputs reads (item, action) tokens; serving and the offline pipeline feed it the
same event types offline evaluation does: the bundle's histories by their codes, live events through the bundle's
event vocabulary, a type the vocabulary lacks as the reserved "action unknown" code 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.bundle import Bundle
from genrec.data.sequences import leave_one_out
from genrec.pipeline.pipeline import Pipeline
from genrec.serving.config import ServeConfig
from genrec.serving.pipeline import ServingModel
from genrec.serving.store import StoredEvent
from genrec.serving.tests.test_served_pipeline import assert_served_equals_offline


@pytest.fixture(scope="module")
def event_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rich.console import Console

    from genrec.training.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("events") / "hstu"
    cfg = TrainConfig(model="hstu", dataset="synthetic:tiny", epochs=1, max_len=20, dim=16, threads=1, out=str(out),
                      event_inputs=True)  # fmt: skip
    train(cfg, console=Console(quiet=True))
    torch.set_num_threads(1)
    return out


def test_offline_queries_are_the_evaluation_states(event_run: Path) -> None:
    """The pipeline's retrieval query = the trainer's evaluation state (items, times and event types)."""
    pipe = Pipeline.from_bundle(Bundle.open(event_run))
    stage = pipe.stages[0]
    model = stage.model
    assert model.event_emb is not None and stage.uses_events
    split = leave_one_out(pipe.sequences)
    u, e, _ = split.eval_inputs("test")
    u, e = u[:30], e[:30]
    q = stage.queries(pipe.offline_contexts(split.data, u, e))
    d, n = split.data, model.config.max_len
    for row, (user, end) in enumerate(zip(u.tolist(), e.tolist(), strict=True)):
        s = max(int(d.offsets[user]), end - n)
        items, ts, ev = (torch.from_numpy(x[s:end]) for x in (d.items, d.timestamps, d.event_types))
        off = torch.tensor([0, end - s])
        want = model.user_states(items, off, ts, ev)[0]
        torch.testing.assert_close(q[row], want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(want, model.user_states(items, off, ts)[0], atol=1e-4)  # the types matter


def test_served_top_k_equals_the_offline_pipeline(event_run: Path, tmp_path: Path) -> None:
    assert_served_equals_offline(event_run, tmp_path, users=20)


def test_a_live_event_type_changes_the_scores(event_run: Path) -> None:
    model = ServingModel.load(event_run, ServeConfig())
    assert model.event_vocab is not None and {"view", "purchase"} <= set(model.event_vocab.ids)
    user = model.users.ids[0]
    item = model.vocab.raw(5)

    def scores(event_type: str) -> tuple[torch.Tensor, np.ndarray]:
        ctx = model.context(user, 10, [StoredEvent("e1", user, item, event_type, 2_000_000_000, 1)])
        return model.stages[0].queries([ctx])[0], ctx.history.type_codes

    view, codes_view = scores("view")
    bought, codes_bought = scores("purchase")
    unknown, codes_unknown = scores("wishlist")  # a type training never saw: the reserved code 0
    assert codes_view[-1] == model.event_vocab.index("view") and codes_unknown[-1] == 0
    assert not torch.allclose(view, bought, atol=1e-4)
    assert not torch.allclose(view, unknown, atol=1e-4) and not torch.allclose(bought, unknown, atol=1e-4)
    # the CLI-style Recommender maps raw types the same way: same state, so same top items
    h = model.history(user, [StoredEvent("e1", user, item, "purchase", 2_000_000_000, 1)], details=True)
    assert model.rec is not None
    recs = model.rec.recommend(h.raw_items, 5, h.timestamps.tolist(), events=h.event_types)
    top = torch.topk(bought @ model.rec.model.item_table().T, 50).indices.tolist()
    seen = set(h.items.tolist())
    assert [r.item_id for r in recs] == [model.vocab.raw(i) for i in top if i not in seen][:5]


def test_batch_export_reads_the_event_types(event_run: Path) -> None:
    """`genrec recommend --all-users` (genrec/export.py) = Recommender.recommend with the users' event types."""
    from genrec.export import load_run_data, top_k_batches
    from genrec.serving.recommender import Recommender

    model, data = load_run_data(event_run)
    rec = Recommender.from_bundle(event_run)
    assert data.event_types is not None and data.event_vocab is not None
    users, items, _ = next(top_k_batches(model, data, 10, users=np.arange(8)))
    for u, top in zip(users.tolist(), items.tolist(), strict=True):
        a, e = int(data.offsets[u]), int(data.offsets[u + 1])
        history = [data.item_vocab.raw(int(i)) for i in data.items[a:e]]
        types = [data.event_vocab.raw(int(c)) for c in data.event_types[a:e]]
        got = rec.recommend(history, 10, data.timestamps[a:e].tolist(), events=types)
        assert [r.item_id for r in got] == [data.item_vocab.raw(i) for i in top]
        plain = rec.recommend(history, 10, data.timestamps[a:e].tolist())  # without types: another state
        assert [r.score for r in plain] != [r.score for r in got]
