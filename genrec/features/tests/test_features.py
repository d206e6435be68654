import numpy as np
import polars as pl
import pytest
import torch

from genrec.data.datasets import Dataset
from genrec.data.sequences import build_sequences, leave_one_out
from genrec.features import UNSEEN, CategoryEncoder, NumericScaler, RankingFeaturizer, build_feature_tables
from genrec.features.tables import RawTable, encode_table


def test_category_encoder_reserved_bucket_and_min_count():
    enc = CategoryEncoder(min_count=2).fit(["a", "b", "a", None, "c", "c"])
    ids = enc.transform(["a", "c", "b", "zzz", None])
    assert ids[0] != UNSEEN and ids[1] != UNSEEN and ids[0] != ids[1]
    assert ids[2] == UNSEEN  # seen once in training: below min_count
    assert ids[3] == UNSEEN and ids[4] == UNSEEN  # unseen / missing
    assert enc.size == 3


def test_numeric_scaler_uses_training_rows_only():
    raw = RawTable(4, cat={"brand": ["x", "y", "x", "new"]}, num={"price": np.array([1.0, 3.0, 1000.0, np.nan])})
    t = encode_table(raw, fit_rows=np.array([0, 1]))
    assert t.cat["brand"][3] == UNSEEN and t.cat["brand"][2] == t.cat["brand"][0]
    np.testing.assert_allclose(t.num["price"][:2], [-1.0, 1.0], atol=1e-6)  # mean 2, std 1 from rows 0-1
    assert t.num["price"][2] > 100  # the outlier was not part of the statistics
    assert t.num["price"][3] == 0.0  # missing -> training mean
    assert NumericScaler(log=True).fit(np.array([0.0, np.e - 1])).mean == 0.5


def _hand_dataset() -> Dataset:
    # user u1: a b c d e ; user u2: a b f ; item f (only in u2's test target) has a brand never seen in training
    ev = [("u1", i, t) for t, i in enumerate("abcde")] + [("u2", i, 10 + t) for t, i in enumerate("abf")]
    events = pl.DataFrame(
        {"user_id": [e[0] for e in ev], "item_id": [e[1] for e in ev], "timestamp": [e[2] for e in ev]}
    )
    catalog = pl.DataFrame(
        {
            "item_id": list("abcdef"),
            "category": ["k1", "k1", "k2", "k2", "k1", "k3"],
            "brand": ["B1", "B2", "B1", "B2", "B1", "NEW"],
            "price": [10.0, 20.0, 30.0, 40.0, 50.0, 9999.0],
        }
    )
    users = pl.DataFrame({"user_id": ["u1", "u2"], "region": ["north", "south"]})
    return Dataset(build_sequences(events, name="hand"), catalog=catalog, users=users)


def test_feature_tables_and_rows_on_hand_made_tables():
    ds = _hand_dataset()
    split = leave_one_out(ds.sequences)
    t = build_feature_tables(ds, split)
    v = ds.sequences.item_vocab
    f = v.index("f")
    assert t.items.cat["brand"][f] == UNSEEN and t.items.cat["category"][f] == UNSEEN
    assert t.category[f] == UNSEEN and t.category[v.index("a")] != UNSEEN
    # train events: u1 a b c (d, e held out); u2 a (b, f held out): popularity counts from those only
    pop = t.items.num["popularity"]
    assert pop[v.index("a")] > pop[v.index("b")] and pop[v.index("d")] == pop[v.index("f")]
    # price statistics come from training items a, b, c only: the 9999 of test-only f is not in the mean
    price = t.items.num["price"]
    assert abs(price[[v.index("a"), v.index("b"), v.index("c")]].mean()) < 1e-5

    feat = RankingFeaturizer(t, ds.sequences)
    rows = feat.rows(
        np.array([0, 0]), np.array([v.index("e"), v.index("a")]), np.array([4, 4]), labels=np.array([1, 0])
    )
    # history before position 4 of u1 = a b c d; last item d
    h0 = rows.sparse.values["hist_items"][rows.sparse.offsets["hist_items"][0] : rows.sparse.offsets["hist_items"][1]]
    assert [v.raw(int(i)) for i in h0] == list("abcd")
    assert v.raw(int(rows.sparse.values["last_item"][0])) == "d"
    kjt = rows.sparse.to_kjt()
    assert set(kjt.keys()) == set(feat.schema().sparse_keys())
    assert rows.dense.shape == (2, len(feat.schema().dense))
    # recent_cat_share: e is k1 and 2 of a b c d are k1; a is also k1
    share = rows.dense[:, feat.dense_names().index("recent_cat_share")]
    np.testing.assert_allclose(share, [0.5, 0.5])
    # every sparse id fits its table
    for spec in feat.schema().tables:
        for key in spec.features:
            assert rows.sparse.values[key].max(initial=0) < spec.num_embeddings
    assert isinstance(kjt.values(), torch.Tensor)


def test_covisitation_counts_training_prefixes_only():
    ds = _hand_dataset()
    split = leave_one_out(ds.sequences)
    t = build_feature_tables(ds, split)
    v = ds.sequences.item_vocab.index
    cv = t.covisit
    got = cv.lookup(
        np.array([v("a"), v("a"), v("b"), v("c"), v("c"), 0]),
        np.array([v("b"), v("c"), v("c"), v("d"), v("a"), v("a")]),
    )
    # train prefixes: u1 = a b c (d, e held out), u2 = a (b, f held out): c -> d is a validation transition
    np.testing.assert_array_equal(got, [1, 1, 1, 0, 0, 0])


def test_item_attribute_tokens_share_ids_across_items():
    from genrec.features.tables import item_attribute_tokens

    ds = _hand_dataset()
    ds.attributes = ("category", "brand")
    tokens, tok = item_attribute_tokens(ds, leave_one_out(ds.sequences))
    size = tok.size
    v = ds.sequences.item_vocab
    a, c, e, f = (set(tokens[v.index(x)].tolist()) - {0} for x in "acef")
    assert tokens.shape[0] == ds.sequences.num_items + 1 and not tokens[0].any()
    assert 0 < tokens.max() <= size
    # a and e (held out, but its values occur in training) share category k1 and brand B1; c only brand B1;
    # f's category and brand occur in no training item, so it gets no tokens
    assert a == e and len(a) == 2 and len(a & c) == 1
    assert not f


def test_numeric_attributes_become_quantile_tokens_for_sequence_models():
    from genrec.features.tables import item_attribute_tokens

    ds = _hand_dataset()  # default attributes: category, brand and price (numeric)
    tokens, _ = item_attribute_tokens(ds, leave_one_out(ds.sequences))
    v = ds.sequences.item_vocab
    a, b, c, f = (set(tokens[v.index(x)].tolist()) - {0} for x in "abcf")
    assert len(a) == len(c) == 3  # category + brand + price bucket
    # training items a, b, c cost 10, 20, 30: three different buckets; f (9999, never trained on) lands in the
    # top bucket, which it shares with c, and that is its only token
    assert len(f) == 1 and f <= c and not f & a and not f & b


def test_any_catalog_column_is_an_attribute_lists_numbers_and_default_choice(tmp_path):
    from genrec.data.datasets import load_path
    from genrec.data.io import ReadOptions
    from genrec.features.tables import catalog_attributes, item_attribute_tokens, raw_tables

    n = 30
    events = pl.DataFrame(
        {
            "user_id": [f"u{i % 5}" for i in range(3 * n)],
            "item_id": [f"i{i % n}" for i in range(3 * n)],
            "timestamp": list(range(3 * n)),
        }
    )
    events.write_csv(tmp_path / "events.csv")
    catalog = pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n)],
            "sku": [f"S-{i}" for i in range(n)],  # an id: never an attribute by default
            "title": [f"Product number {i}" for i in range(n)],  # free text: one value per item
            "material": ["wood" if i % 2 else "steel" for i in range(n)],
            "tags": [["red", "sale"] if i % 3 == 0 else ["blue"] for i in range(n)],  # a list column
            "genres": ["Action|Comedy" if i % 2 else "Drama" for i in range(n)],  # a list as text
            "weight_kg": [float(i) for i in range(n)],
            # Amazon's 2023 metadata: records and lists of sentences are not attributes by default
            "details": [{"Brand": f"b{i % 3}", "Weight": "1 oz"} for i in range(n)],
            "images": [[{"large": f"https://x/{i}.jpg"}] for i in range(n)],
            "features": [[f"Made of {i} parts", f"Lasts {i} years"] for i in range(n)],
        }
    )
    catalog.write_parquet(tmp_path / "catalog.parquet")
    ds = load_path(tmp_path / "events.csv")
    assert catalog_attributes(ds.catalog) == ["material", "tags", "genres", "weight_kg"]
    with pytest.raises(ValueError, match="'details' holds records"):
        raw_tables(load_path(tmp_path / "events.csv", ReadOptions(attributes="details")))
    items, _, _ = raw_tables(ds)
    v = ds.sequences.item_vocab
    assert set(items.cat) == {"material"} and set(items.multi) == {"tags", "genres"}
    assert items.multi["tags"][v.index("i3")] == ["red", "sale"] and items.multi["genres"][v.index("i1")] == [
        "Action",
        "Comedy",
    ]
    assert set(items.num) == {"weight_kg"} and items.num["weight_kg"][v.index("i7")] == 7.0
    tokens, tok = item_attribute_tokens(ds, leave_one_out(ds.sequences))
    size = tok.size
    # material + tags (1 or 2) + genres (1 or 2) + a weight bucket; ten quantile buckets of 30 weights
    per_item = (tokens > 0).sum(1)
    assert per_item[v.index("i3")] == 1 + 2 + 2 + 1 and per_item[v.index("i0")] == 1 + 2 + 1 + 1
    assert size == (2 + 1) + (3 + 1) + (3 + 1) + (10 + 1)  # each attribute's values + its unseen bucket
    # i6 and i24 share material, tags and genres and differ in weight (6 vs 24 kg: different deciles)
    light, heavy = (set(tokens[v.index(x)].tolist()) - {0} for x in ("i6", "i24"))
    assert len(light ^ heavy) == 2 and len(light & heavy) == 1 + 2 + 1
    # chosen columns only, and a catalog without usable columns is a clear error, not a shape mismatch
    ds = load_path(tmp_path / "events.csv", ReadOptions(attributes="sku,material"))
    tokens, _ = item_attribute_tokens(ds, leave_one_out(ds.sequences))
    assert (tokens > 0).sum(1).max() == 2
    catalog.select("item_id", "title").write_parquet(tmp_path / "catalog.parquet")
    ds = load_path(tmp_path / "events.csv")
    with pytest.raises(ValueError, match="no attribute columns to use.*--attributes"):
        item_attribute_tokens(ds, leave_one_out(ds.sequences))


def test_covisit_dense_table_reads_like_the_sparse_keys():
    from genrec.features.covisit import CoVisitation

    rng = np.random.default_rng(0)
    v = 50
    keys = np.unique(rng.integers(1, v + 1, (400, 2)) @ np.array([v + 1, 1]))
    counts = rng.integers(1, 9, len(keys)).astype(np.float32)
    a, b = rng.integers(0, v + 1, 5000), rng.integers(0, v + 1, 5000)
    dense = CoVisitation(keys, counts, v).lookup(a, b)  # 51^2 entries: the dense path
    sparse = CoVisitation(keys, counts, v)
    sparse.DENSE_MAX_ENTRIES = 0  # the binary-search path
    np.testing.assert_array_equal(dense, sparse.lookup(a, b))
    assert dense.dtype == np.float32 and (dense > 0).any() and (dense[(a == 0) | (b == 0)] == 0).all()
