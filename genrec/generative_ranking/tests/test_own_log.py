"""Generative ranking on a user's own event log with event types."""

import numpy as np
import polars as pl
import pytest

from genrec.data.io import DataError, ReadOptions
from genrec.generative_ranking.data import load_action_dataset, load_shop


def test_own_log_with_any_event_names_matches_the_built_in_shop(tmp_path):
    from genrec.data.synthetic import generate_shop, shop_config

    shop = generate_shop(shop_config("tiny", seed=4))
    folder = tmp_path / "store"
    folder.mkdir()
    renamed = shop.events.with_columns(pl.col("event_type").replace({"cart": "add_to_cart"})).rename(
        {"user_id": "customer", "event_type": "action"}
    )
    renamed.write_csv(folder / "log.csv", separator=";")
    shop.catalog.write_parquet(folder / "catalog.parquet")
    read = ReadOptions(columns={"user_id": "customer", "event_type": "action"})
    data = load_action_dataset(str(folder / "log.csv"), read=read)
    ref = load_shop("tiny", seed=4)
    # the funnel order comes from the counts: views outnumber carts, which outnumber purchases
    assert data.action_names == ["view", "add_to_cart", "purchase"] and data.tasks == data.action_names
    assert data.name == "store" and data.num_users == ref.num_users and data.num_items == ref.num_items
    np.testing.assert_array_equal(data.actions, ref.actions)
    np.testing.assert_array_equal(data.offsets, ref.offsets)
    np.testing.assert_array_equal(data.task_labels, ref.task_labels)
    assert set(data.item_attributes) == {"category", "brand", "price"}
    # no catalog file, but the log's rows carry each item's category: that is the attribute
    flat = renamed.join(shop.catalog.select("item_id", "category"), on="item_id")
    (tmp_path / "flat").mkdir()
    flat.write_csv(tmp_path / "flat" / "log.csv", separator=";")
    data = load_action_dataset(str(tmp_path / "flat" / "log.csv"), read=read)
    assert set(data.item_attributes) == {"category"}
    cats = dict(zip(shop.catalog["item_id"].cast(pl.Utf8).to_list(), shop.catalog["category"].to_list(), strict=True))
    codes = data.item_attributes["category"]
    for i in (1, 2, 3):  # items with the same category share its code
        same = [j for j in range(1, data.num_items + 1) if cats[data.item_vocab.raw(j)] == cats[data.item_vocab.raw(i)]]
        assert len({int(codes[j]) for j in same}) == 1 and codes[i] > 0
    # "action" is a name logs use for the event type: found without --columns
    assert load_action_dataset(str(folder / "log.csv"), read=ReadOptions(columns={"user_id": "customer"})).tasks
    renamed.drop("action").write_csv(folder / "views.csv", separator=";")
    with pytest.raises(ValueError, match="needs an event_type column"):
        load_action_dataset(str(folder / "views.csv"), read=ReadOptions(columns={"user_id": "customer"}))
    with pytest.raises(DataError, match="file not found"):
        load_action_dataset(str(tmp_path / "none.csv"))
    with pytest.raises(ValueError, match="unknown action dataset"):
        load_action_dataset("ml-20m")


def test_genrank_train_takes_the_reading_options(tmp_path):
    """`genrec genrank train --dataset events.csv` with --columns --sep --timestamp-format --catalog, like `genrec train`."""
    from typer.testing import CliRunner

    from genrec.bundle import Bundle
    from genrec.cli import app
    from genrec.data.synthetic import generate_shop, shop_config

    shop = generate_shop(shop_config("tiny", seed=4))
    log = (
        shop.events.rename({"user_id": "customer", "item_id": "sku", "event_type": "action"})
        .with_columns(pl.from_epoch("timestamp").dt.strftime("%d/%m/%Y %H:%M:%S").alias("when"))
        .drop("timestamp")
    )
    log.write_csv(tmp_path / "events.csv", separator="|")
    (tmp_path / "side").mkdir()
    shop.catalog.rename({"item_id": "sku"}).write_parquet(tmp_path / "side" / "products.parquet")
    base = ["genrank", "train", "--dataset", str(tmp_path / "events.csv"), "--epochs", "1", "--max-len", "20",
            "--dim", "16", "--max-users", "60"]  # fmt: skip
    opts = ["--columns", "user_id=customer,item_id=sku,event_type=action,timestamp=when", "--sep", "|",
            "--timestamp-format", "%d/%m/%Y %H:%M:%S", "--catalog", str(tmp_path / "side" / "products.parquet")]  # fmt: skip
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "run"), *opts])
    assert res.exit_code == 0, res.output
    comp = Bundle.open(tmp_path / "run").component(role="ranking")
    assert comp.config["run"]["read"]["columns"]["event_type"] == "action"
    assert comp.config["action_names"] == ["view", "cart", "purchase"]
    assert comp.config["model"]["attributes"]  # the catalog given by --catalog became item attributes
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad"), *opts[2:]])  # without --columns
    assert res.exit_code != 0 and "Traceback" not in res.output
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad"), "--columns", "userid=customer"])
    assert res.exit_code == 2 and "unknown genrec column 'userid'" in " ".join(res.output.split())
