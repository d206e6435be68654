"""Loading a user's files: reading options, the read report, names, missing files."""

from pathlib import Path

import polars as pl
import pytest

from genrec.data.datasets import load_dataset, load_path
from genrec.data.io import DataError, ReadOptions

HEADER = "user_id,item_id,timestamp,event_type\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_report_counts_merges_duplicates_ties_and_names_the_run_by_folder(tmp_path):
    rows = [
        "u1,a,100,view",
        "u1,a,160,cart",  # same item, consecutive: merged into the view's token
        "u1,a,160,cart",  # exact duplicate (also merged)
        "u1,b,160,view",  # same timestamp as the cart: a tie
        "u2,a,50,view",
        "u2,c,70,purchase",
    ]
    path = write(tmp_path / "my-shop" / "events.csv", HEADER + "\n".join(rows) + "\n")
    ds = load_path(path)
    r = ds.report
    assert (r.rows, r.merged, r.duplicates, r.ties) == (6, 2, 1, 2)
    assert (r.users, r.items, r.events) == (2, 3, 4) and len(ds.sequences.items) == 4
    assert r.event_types == {"view": 3, "cart": 2, "purchase": 1}
    assert ds.sequences.name == "my-shop" and ds.kind == "file"
    text = "\n".join(r.lines())
    assert "6 rows" in text and "2 rows merged" in text and "1 of them exact duplicates" in text
    assert "2 rows share a user's timestamp" in text and "4 events" in text and "no catalog" in text
    assert load_path(path, ReadOptions(name="spring-sale")).sequences.name == "spring-sale"


def test_catalog_covering_200_of_500_items_warns(tmp_path):
    events = "".join(f"u{i % 50},i{i},{1000 + i},view\n" for i in range(500))
    path = write(tmp_path / "shop" / "events.csv", HEADER + events)
    write(tmp_path / "elsewhere" / "products.csv", "item_id,brand\n" + "".join(f"i{i},b{i % 7}\n" for i in range(200)))
    ds = load_path(path, ReadOptions(catalog=str(tmp_path / "elsewhere" / "products.csv")))
    assert ds.catalog is not None and ds.catalog.height == 200
    assert ds.report.covered == 200 and ds.report.coverage == 0.4
    (warning,) = ds.report.warnings()
    assert "200 of the 500 items" in warning and "40%" in warning
    full = write(tmp_path / "elsewhere" / "all.csv", "item_id,brand\n" + "".join(f"i{i},b\n" for i in range(480)))
    assert load_path(path, ReadOptions(catalog=str(full))).report.warnings() == []  # 96% is fine


def test_catalog_beside_the_events_is_still_found(tmp_path):
    path = write(tmp_path / "events.csv", HEADER + "u,a,1,view\nu,b,2,view\n")
    write(tmp_path / "catalog.tsv", "item_id\tbrand\na\tx\nb\ty\n")
    assert load_path(path).catalog["brand"].to_list() == ["x", "y"]


def test_attribute_columns_must_exist_and_need_a_catalog(tmp_path):
    path = write(tmp_path / "events.csv", HEADER + "u,a,1,view\n")
    with pytest.raises(ValueError, match="needs a catalog"):
        load_path(path, ReadOptions(attributes="brand"))
    write(tmp_path / "catalog.csv", "item_id,brand,price\na,x,3\n")
    with pytest.raises(DataError, match="no attribute column 'colour' \\(attribute columns: brand, price\\)"):
        load_path(path, ReadOptions(attributes="brand,colour"))
    assert load_path(path, ReadOptions(attributes="price")).attributes == ("price",)


def test_missing_files_and_builtin_datasets(tmp_path):
    missing = tmp_path / "shop" / "events.csv"
    with pytest.raises(DataError, match=f"file not found: {missing}"):
        load_dataset(str(missing))
    with pytest.raises(DataError, match="file not found"):
        load_dataset(str(tmp_path))  # a folder without events.*
    pl.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]}).write_parquet(tmp_path / "events.parquet")
    assert load_dataset(str(tmp_path)).sequences.num_users == 1  # a folder holding events.*
    with pytest.raises(ValueError, match="--columns reads a user's file"):
        load_dataset("synthetic:tiny", read=ReadOptions(columns={"user_id": "customer_id"}))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("ml-10m")


def test_the_report_says_which_positions_a_headerless_file_was_read_from(tmp_path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("".join(f"u{u},i{i},5.0,{1700000000 + 10 * i}\n" for u in range(3) for i in range(4)))
    report = load_path(path).report
    assert report.positions == {"user_id": "1", "item_id": "2", "timestamp": "4"}
    assert any("no header row: user_id = column 1, item_id = column 2, timestamp = column 4" in line
               for line in report.lines())  # fmt: skip
    header = tmp_path / "named" / "events.csv"
    header.parent.mkdir()
    header.write_text("user_id,item_id,timestamp\n" + path.read_text().replace(",5.0", ""))
    assert load_path(header).report.positions == {}


def test_the_report_counts_the_rows_a_k_core_kept(tmp_path) -> None:
    path = tmp_path / "shop" / "events.csv"
    path.parent.mkdir()
    rows = [f"u{u},i{i},{1700000000 + 10 * i}" for u in range(4) for i in range(5)] + ["u9,i0,1700000000"]
    path.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    report = load_path(path, ReadOptions(k_core=3)).report
    assert (report.rows, report.rows_read, report.users) == (20, 21, 4)
    assert "  3-core: 20 of 21 rows kept (users and items with at least 3 rows, repeatedly)" in report.lines()


def test_a_published_split_with_its_attribute_file_loads_as_it_is_published(tmp_path) -> None:
    """S3-Rec's Toys.txt ('user item item ...') with Toys_item2attributes.json beside it: the catalog is found,
    repeats stay (the split's protocol), the report says the file is order-only."""
    import json

    path = write(tmp_path / "Toys.txt", "1 5 6 6 7\n2 7 5 6\n3 6 7 5\n")
    write(tmp_path / "Toys_item2attributes.json", json.dumps({"5": [1, 2], "6": [2], "7": [3]}))
    ds = load_path(path)
    assert ds.sequences.timestamps is None and len(ds.sequences.items) == 10  # 6, 6 kept
    assert ds.catalog is not None and ds.catalog.height == 3 and ds.report.layout == "lists"
    text = "\n".join(ds.report.lines())
    assert "a user and their items per line: no timestamps" in text and "describes 3 of 3" in text
    assert "merged" not in text


def test_the_report_names_the_columns_it_recognised(tmp_path) -> None:
    path = write(tmp_path / "events.csv", "visitorid,itemid,timestamp,event\nv1,i1,1700000000,view\n")
    r = load_path(path).report
    assert r.recognized == {"user_id": "visitorid", "item_id": "itemid", "event_type": "event"}
    assert "columns recognised by name: user_id = 'visitorid'" in "\n".join(r.lines())
    assert load_path(path, ReadOptions(columns={"user_id": "visitorid"})).report.recognized == {
        "item_id": "itemid", "event_type": "event"}  # fmt: skip


def test_a_published_train_valid_test_split_reads_as_one_log(tmp_path) -> None:
    """Amazon Reviews 2023's last_out files: NAME.train.csv + .valid.csv + .test.csv; leave-one-out on the
    joined log gives back the published validation and test events."""
    from genrec.data.sequences import leave_one_out

    head = "user_id,parent_asin,rating,timestamp\n"
    write(tmp_path / "Toys.train.csv", head + "u1,a,5,1000\nu1,b,4,2000\nu2,b,3,1000\nu2,c,5,2000\n")
    write(tmp_path / "Toys.valid.csv", head + "u1,c,5,3000\nu2,a,4,3000\n")
    write(tmp_path / "Toys.test.csv", head + "u1,d,5,3000\nu2,d,2,4000\n")  # u1: a tie with valid, file order
    ds = load_path(tmp_path / "Toys.train.csv")
    assert ds.report.parts == ["Toys.train.csv", "Toys.valid.csv", "Toys.test.csv"] and ds.report.rows == 8
    assert ds.sequences.name == "Toys" and "a published split read as one log" in "\n".join(ds.report.lines())
    split, v = leave_one_out(ds.sequences), ds.sequences.item_vocab
    assert [v.raw(i) for i in split.eval_inputs("valid")[2]] == ["c", "a"]
    assert [v.raw(i) for i in split.eval_inputs("test")[2]] == ["d", "d"]
    alone = write(tmp_path / "solo" / "Toys.train.csv", head + "u1,a,5,1000\n")
    assert load_path(alone).report.parts == []  # no siblings: just the file


def test_a_flat_export_of_the_synthetic_shop_carries_its_catalog(tmp_path):
    """The shop's events with each row's product columns joined on (what an order export looks like) give back
    the catalog's category, brand and price for every item with events: the same attributes as catalog.csv."""
    from genrec.data.synthetic import generate_shop, shop_config

    shop = generate_shop(shop_config("tiny", seed=2))
    product = shop.catalog.select("item_id", "category", "brand", "price")
    shop.events.join(product, on="item_id").write_csv(write(tmp_path / "flat" / "orders.csv", ""))
    ds = load_path(tmp_path / "flat" / "orders.csv")
    assert ds.report.catalog_columns == ["category", "brand", "price"]  # value (a row's amount) is an event column
    got = ds.catalog.sort("item_id")
    want = product.filter(pl.col("item_id").is_in(shop.events["item_id"].implode())).sort("item_id")
    assert got.select("item_id", "category", "brand").equals(want.select("item_id", "category", "brand"))
    assert (got["price"] - want["price"]).abs().max() < 1e-9


def test_user_columns_of_a_flat_export_become_its_user_table(tmp_path):
    """A customer's country on every order line is a user attribute (Online Retail's Country); a per-user
    identifier (an e-mail) and a per-row value (a quantity) are not; product columns stay the catalog's."""
    countries, ages = ["France", "UK", "EIRE"], [25, 35, 45]
    lines = ["CustomerID,StockCode,InvoiceDate,Country,Age,Email,Quantity,Description"]
    for u in range(30):  # more e-mails than 20 and than half the users: an identifier
        for k in range(3):
            item = (u + k) % 5
            lines.append(f"c{u},s{item},2024-01-{k + 1:02d},{countries[u % 3]},{ages[u % 3]},c{u}@mail.com,{k + u},"
                         f"PRODUCT {item}")  # fmt: skip
    ds = load_path(write(tmp_path / "shop" / "orders.csv", "\n".join(lines) + "\n"))
    assert ds.report.user_columns == ["Country", "Age"] and ds.report.catalog_columns == ["Description"]
    users = ds.users.sort("user_id")
    assert users.row(0) == ("c0", "France", 25.0) and users.height == 30
    assert any("user attributes from the log's own columns: Country, Age" in ln for ln in ds.report.lines())
