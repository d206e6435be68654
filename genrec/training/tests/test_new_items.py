"""Catalog items without events: in the vocabulary, vectors from their attributes alone, tokenizer in the bundle."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from genrec.bundle import ATTRIBUTES_FILE, Bundle, load_attribute_tokenizer, load_sequential
from genrec.data.datasets import load_dataset
from genrec.data.sequences import leave_one_out
from genrec.features.tables import AttributeTokenizer, item_attribute_tokens
from genrec.training.trainer import TrainConfig, train

CATEGORIES, PER_CATEGORY = 4, 8


def write_shop(folder: Path, cold: int = 2, users: int = 160, seed: int = 0, cold_in_catalog: bool = True) -> Path:
    """Each user browses one category; the last `cold` items of every category have no events and are in the
    catalog only (or nowhere: items a shop adds after training)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        c = u % CATEGORIES
        for t, i in enumerate(rng.integers(0, PER_CATEGORY - cold, 8)):
            rows.append((f"u{u}", f"c{c}-i{i}", t))
    events = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    events.write_csv(folder / "events.csv")
    catalog = pl.DataFrame(
        {
            "item_id": [f"c{c}-i{i}" for c in range(CATEGORIES) for i in range(PER_CATEGORY)],
            "category": [f"cat{c}" for c in range(CATEGORIES) for _ in range(PER_CATEGORY)],
            "brand": [f"brand{c}" for c in range(CATEGORIES) for _ in range(PER_CATEGORY)],
            "price": [float(1 + i) for _ in range(CATEGORIES) for i in range(PER_CATEGORY)],
        }
    )
    if not cold_in_catalog:
        catalog = catalog.filter(pl.col("item_id").str.extract(r"-i(\d+)$").cast(pl.Int64) < PER_CATEGORY - cold)
    catalog.write_csv(folder / "catalog.csv")
    return folder / "events.csv"


def test_catalog_items_without_events_join_the_vocabulary(tmp_path: Path) -> None:
    ds = load_dataset(str(write_shop(tmp_path)))
    v = ds.sequences.item_vocab
    assert len(v) == CATEGORIES * PER_CATEGORY and ds.report.items == CATEGORIES * (PER_CATEGORY - 2)
    assert v.ids[-2:] == [f"c{CATEGORIES - 1}-i{PER_CATEGORY - 2}", f"c{CATEGORIES - 1}-i{PER_CATEGORY - 1}"]
    assert "c0-i7" in v and v.index("c0-i7") not in set(ds.sequences.items.tolist())


def test_tokenizer_encodes_catalog_rows_as_training_did(tmp_path: Path) -> None:
    ds = load_dataset(str(write_shop(tmp_path)))
    tokens, tok = item_attribute_tokens(ds, leave_one_out(ds.sequences))
    again = AttributeTokenizer.from_dict(tok.to_dict())
    rows = again.encode(ds.catalog)
    idx = [ds.sequences.item_vocab.index(i) for i in ds.catalog["item_id"].to_list()]
    for r, i in enumerate(idx):
        assert set(rows[r].tolist()) - {0} == set(tokens[i].tolist()) - {0}
    cold = ds.sequences.item_vocab.index("c1-i7")
    assert (tokens[cold] > 0).sum() == 3  # category + brand + price bucket, all from values seen in training
    new = again.encode(pl.DataFrame({"item_id": ["x"], "category": ["cat1"], "brand": ["never-seen"]}))
    assert set(new[0].tolist()) - {0} == set(tokens[cold].tolist()) & set(new[0].tolist()) - {0}
    assert (new > 0).sum() == 1  # the unseen brand and the missing price give no token


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("shop")
    events = write_shop(folder)
    cfg = TrainConfig(
        model="sasrec", dataset=str(events), out=str(folder / "run"), epochs=6, batch_size=32, dim=16, max_len=16,
        threads=1, item_attributes=True, lr=3e-3, num_negatives=16,
    )  # fmt: skip
    train(cfg)
    return folder, folder / "run"


def test_untrained_items_are_their_attributes_and_recommendable(cold_run: tuple[Path, Path]) -> None:
    _, run = cold_run
    b = Bundle.open(run)
    assert ATTRIBUTES_FILE in b.component().files
    tok = load_attribute_tokenizer(b)
    model = load_sequential(b)
    v = b.item_vocab
    cold = [v.index(f"c{c}-i{i}") for c in range(CATEGORIES) for i in (PER_CATEGORY - 2, PER_CATEGORY - 1)]
    w = model.item_emb.weight.detach()
    assert torch.all(w[cold] == 0) and torch.all(w[v.index("c0-i0")] != 0)  # id rows never trained stay zero
    assert tok.size == model.config.num_attribute_tokens
    # a cat0 user's state scores cat0's cold items above every other category's cold items
    hist = torch.tensor([v.index(f"c0-i{i}") for i in (0, 1, 2, 3)])
    with torch.no_grad():
        scores = model.score_all(model.user_states(hist, torch.tensor([0, 4])))[0]
    own, others = scores[cold[:2]], scores[cold[2:]]
    assert own.min() > others.max()


def test_id_dropout_and_growing_the_item_table() -> None:
    from genrec.models import build_model

    torch.manual_seed(0)
    model = build_model("sasrec", 6, dim=8, max_len=4, num_attribute_tokens=3, attributes_per_item=2, id_dropout=0.5)
    model.set_item_attributes(torch.tensor([[0, 0], [1, 0], [1, 2], [2, 0], [3, 0], [3, 1], [2, 3]]))
    trained = torch.tensor([False, True, True, True, True, False, False])
    model.freeze_untrained_ids(trained)
    attrs_only = model.attr_emb(model.item_attrs).sum(1) / (model.item_attrs > 0).sum(1, keepdim=True).clamp(min=1)
    model.eval()
    torch.testing.assert_close(model.item_vectors()[~trained], attrs_only[~trained])  # untrained: attributes alone
    assert not torch.allclose(model.item_vectors()[trained], attrs_only[trained])
    model.train()  # some trained items lose their id part in a training forward, never all, and it varies
    dropped = torch.stack([(model.item_vectors() == attrs_only).all(1) for _ in range(20)])  # (20, 7)
    assert dropped[:, ~trained].all() and 0 < dropped[:, trained].float().mean() < 1
    model.item_vectors().sum().backward()
    assert torch.all(model.item_emb.weight.grad[~trained] == 0)  # untrained rows stay zero under the optimizer
    grown = model.with_item_attributes(torch.cat([model.item_attrs, torch.tensor([[2, 1]])]))
    assert grown.config.num_items == 7 and not grown.training
    model.eval()
    torch.testing.assert_close(grown.item_table()[:7], model.item_table())
    assert torch.all(grown.item_emb.weight[7] == 0) and grown.item_table()[7].norm() > 0.99
    with pytest.raises(ValueError, match="item rows"):
        model.with_item_attributes(model.item_attrs[:3])
