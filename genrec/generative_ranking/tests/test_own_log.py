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
    with pytest.raises(ValueError, match="needs an event_type column"):
        load_action_dataset(str(folder / "log.csv"), read=ReadOptions(columns={"user_id": "customer"}))
    with pytest.raises(DataError, match="file not found"):
        load_action_dataset(str(tmp_path / "none.csv"))
    with pytest.raises(ValueError, match="unknown action dataset"):
        load_action_dataset("ml-20m")
