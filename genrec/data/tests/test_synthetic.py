import time

import numpy as np
import polars as pl
import pytest

from genrec.data.io import read_catalog, read_events
from genrec.data.sequences import build_sequences
from genrec.data.synthetic import EVENT_TYPES, SHOP_SIZES, Shop, generate_shop, shop_config


@pytest.fixture(scope="module")
def shop() -> Shop:
    return generate_shop(SHOP_SIZES["tiny"])


def catalog_rows(shop: Shop, item_ids: pl.Series) -> np.ndarray:
    """Catalog row index of each item id (ground-truth neighbour tables use catalog rows)."""
    index = {raw: j for j, raw in enumerate(shop.catalog["item_id"].to_list())}
    return item_ids.replace_strict(index, return_dtype=pl.Int64).to_numpy()


def test_tiny_is_small_and_fast():
    start = time.perf_counter()
    shop = generate_shop(SHOP_SIZES["tiny"])
    assert time.perf_counter() - start < 1.0
    assert shop.users.height == 300 and shop.catalog.height == 200
    assert 5_000 < shop.events.height < 20_000
    assert set(SHOP_SIZES) == {"tiny", "small", "medium", "large", "xl"}
    assert SHOP_SIZES["xl"].num_items == 1_000_000


def test_deterministic_for_a_seed(shop):
    again = generate_shop(SHOP_SIZES["tiny"])
    assert again.events.equals(shop.events)
    assert again.catalog.equals(shop.catalog) and again.users.equals(shop.users)
    other = generate_shop(shop_config("tiny", seed=1))
    assert not other.events.equals(shop.events)


def test_schema_and_funnel(shop):
    ev = shop.events
    assert ev.schema == pl.Schema(
        {
            "user_id": pl.Utf8,
            "item_id": pl.Utf8,
            "timestamp": pl.Int64,
            "event_type": pl.Utf8,
            "value": pl.Float64,
        }
    )
    assert set(ev["event_type"].unique()) == set(EVENT_TYPES)
    assert ev["timestamp"].is_sorted()
    # value is the price paid, present exactly on purchases
    bought = ev["event_type"] == "purchase"
    assert (ev["value"].is_not_null() == bought).all()
    assert ev.group_by("user_id").len()["len"].min() >= SHOP_SIZES["tiny"].min_events
    # per user: strictly increasing time, and a cart always follows a view of the same item
    ev = ev.with_columns(
        prev_item=pl.col("item_id").shift(1).over("user_id"),
        prev_type=pl.col("event_type").shift(1).over("user_id"),
        gap=pl.col("timestamp").diff().over("user_id"),
    )
    assert ev["gap"].drop_nulls().min() > 0
    carts = ev.filter(pl.col("event_type") == "cart")
    assert (carts["prev_item"] == carts["item_id"]).all() and (carts["prev_type"] == "view").all()
    # funnel narrows, and some consumables are bought again
    counts = ev["event_type"].value_counts().sort("count", descending=True)["event_type"].to_list()
    assert counts == ["view", "cart", "purchase"]
    assert ev.filter(bought).group_by("user_id", "item_id").len()["len"].max() > 1


def test_popularity_is_skewed(shop):
    counts = shop.events["item_id"].value_counts(sort=True)["count"].to_numpy()
    top = counts[: shop.catalog.height // 10].sum() / counts.sum()
    assert top > 0.4


def test_next_item_follows_the_previous(shop):
    data = build_sequences(shop.events, name="tiny")
    assert data.num_users == 300 and data.event_vocab is not None
    rows = catalog_rows(shop, pl.Series(data.item_vocab.ids))[data.items - 1]
    same_user = np.ones(len(rows) - 1, bool)
    same_user[data.offsets[1:-1] - 1] = False
    prev, nxt = rows[:-1], rows[1:]
    keep = same_user & (prev != nxt)  # funnel steps repeat the item: look at item changes only
    prev, nxt = prev[keep], nxt[keep]
    neighbours = np.concatenate([shop.complements, shop.substitutes], 1)[prev]
    hit = (neighbours == nxt[:, None]).any(1).mean()
    # chance level keeps the popularity of next items: pair each item with a shuffled successor
    chance = (neighbours == np.random.default_rng(0).permutation(nxt)[:, None]).any(1).mean()
    assert hit > 0.3 and hit > 5 * chance


def test_save_round_trips_through_readers(shop, tmp_path):
    folder = shop.save(tmp_path / "shop")
    assert read_events(folder / "events.parquet").equals(shop.events)
    assert read_catalog(folder / "catalog.parquet").equals(shop.catalog)
    assert pl.read_parquet(folder / "users.parquet").equals(shop.users)
