import gzip
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from genrec.data.datasets import load_path
from genrec.data.io import (
    MAX_FUTURE_SKEW_S,
    DataError,
    FutureTimestampError,
    ReadOptions,
    check_not_future,
    parse_timestamps,
    read_catalog,
    read_events,
)

HEADER = "user_id,item_id,timestamp\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def write_jsonl(folder: Path, name: str, rows: list[dict | None]) -> Path:
    """None writes a blank line (JSONL readers skip them; line numbers must still count them)."""
    return write(folder, name, "".join("\n" if r is None else json.dumps(r) + "\n" for r in rows))


def raises_at(path: Path, row: int | None, column: str | None, *fragments: str, reader=read_events) -> DataError:
    with pytest.raises(DataError) as info:
        reader(path)
    err = info.value
    msg = str(err)
    assert err.row == row and err.column == column, msg
    assert msg.startswith(path.name), msg
    if row is not None:
        assert f"{err.unit} {row}" in msg, msg
    if column is not None:
        assert repr(column) in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return err


def epoch(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


# ---- good inputs ---------------------------------------------------------------------------------


def test_csv_parses_timestamp_formats_in_file_order(tmp_path):
    rows = [
        ("u2", "b", "1700000000"),
        ("u1", "a", "1700000000123"),  # milliseconds
        ("u1", " c ", "1700000000.9"),  # float seconds are floored; id whitespace is trimmed
        ("u3", "a", "2023-01-05"),
        ("u3", "b", "2023-01-05T10:00:00"),
        ("u3", "c", "2023-01-05 10:00:00.250"),
        ("u3", "d", "2023-01-05T10:00:00Z"),
        ("u3", "e", "2023-01-05T12:00:00+02:00"),
    ]
    path = write(tmp_path, "events.csv", HEADER + "".join(",".join(r) + "\n" for r in rows))
    df = read_events(path)
    assert df.schema == pl.Schema({"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64})
    assert df["user_id"].to_list() == [r[0] for r in rows]  # file order, not sorted
    assert df["item_id"][2] == "c"
    ten = epoch(2023, 1, 5, 10)
    assert df["timestamp"].to_list() == [1700000000] * 3 + [epoch(2023, 1, 5)] + [ten] * 4


def test_optional_columns_and_tsv_gz(tmp_path):
    text = "user_id\titem_id\ttimestamp\tevent_type\tvalue\n1\t7\t100\tview\t\n1\t7\t160\tpurchase\t9.5\n"
    path = tmp_path / "events.tsv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    df = read_events(path)
    assert df.columns == ["user_id", "item_id", "timestamp", "event_type", "value"]
    assert df["value"].dtype == pl.Float64 and df["value"].to_list() == [None, 9.5]
    assert df["event_type"].to_list() == ["view", "purchase"]


def test_jsonl_mixed_types_and_parquet_typed_columns(tmp_path):
    rows = [
        {"user_id": 1, "item_id": "a", "timestamp": 1700000000000},
        {"user_id": "u2", "item_id": 5, "timestamp": "2023-01-05", "value": 3.5},
    ]
    df = read_events(write_jsonl(tmp_path, "events.jsonl", rows))
    assert df["user_id"].to_list() == ["1", "u2"] and df["item_id"].to_list() == ["a", "5"]
    assert df["timestamp"].to_list() == [1700000000, epoch(2023, 1, 5)]

    when = [datetime(2023, 1, 5, 10), datetime(2023, 1, 6)]
    pq = tmp_path / "events.parquet"
    pl.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "timestamp": when}).write_parquet(pq)
    df = read_events(pq)
    assert df["user_id"].to_list() == ["1", "2"]
    assert df["timestamp"].to_list() == [epoch(2023, 1, 5, 10), epoch(2023, 1, 6)]


def test_parse_timestamps_marks_garbage_null():
    s = pl.Series(["1700000000", "1700000000000000", "nan", "2023-02-30", "yesterday", None])
    assert parse_timestamps(s).to_list() == [1700000000, 1700000000, None, None, None, None]


def test_blank_lines_are_skipped_but_still_counted(tmp_path):
    path = write(tmp_path, "events.csv", HEADER + "1,a,1\n\n2,b,2\n3,c,oops\n")
    raises_at(path, 5, "timestamp", "'oops'")


# ---- bad inputs: one DataError naming file, line/row and column ----------------------------------


def test_unparsable_timestamp_names_line(tmp_path):
    good = "".join(f"u{i},i{i},170000000{i}\n" for i in range(5))
    path = write(tmp_path, "events.csv", HEADER + good + "u9,i9,2023-13-45\n")
    err = raises_at(path, 7, "timestamp")
    assert str(err).startswith("events.csv, line 7, column 'timestamp': cannot parse '2023-13-45' as a timestamp")
    assert "accepted: unix seconds or milliseconds" in str(err) and "--timestamp-format" in str(err)


def test_missing_timestamp(tmp_path):
    path = write(tmp_path, "events.csv", HEADER + "1,a,1\n2,b,\n")
    raises_at(path, 3, "timestamp", "missing timestamp")


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_null_id_names_first_offending_line(tmp_path, column):
    rows = ["1,a,1", "2,b,2", "3,c,3", "4,d,4"]
    bad = "  ,d,4" if column == "user_id" else "4,,4"
    path = write(tmp_path, "events.csv", HEADER + "\n".join(rows[:3] + [bad] + rows) + "\n")
    raises_at(path, 5, column, f"missing {column}")


def test_missing_column_lists_found_columns(tmp_path):
    path = write(tmp_path, "events.csv", "person,item_id,timestamp\n1,a,1\n")
    raises_at(path, None, "user_id", "'person'", "'item_id'", "'timestamp'")
    jl = write_jsonl(tmp_path, "events.jsonl", [{"user_id": 1, "thing": 2, "timestamp": 3}])
    raises_at(jl, None, "item_id", "'thing'")


def test_columns_are_recognised_by_the_names_logs_use(tmp_path):
    """RetailRocket's events.csv, a shop export, Amazon's 2023 review dumps: no --columns needed; genrec's own
    name wins over a known one, --columns over both, and a column is used once."""
    rr = write(tmp_path, "rr.csv", "timestamp,visitorid,event,itemid,transactionid\n"
               "1433221332117,257597,view,355908,\n1433224214164,992329,transaction,248676,4000\n")  # fmt: skip
    df = read_events(rr)
    assert df["user_id"].to_list() == ["257597", "992329"] and df["item_id"][1] == "248676"
    assert df["event_type"].to_list() == ["view", "transaction"] and df["timestamp"][0] == 1433221332
    shop = write(tmp_path, "shop.csv", "Customer ID,Product_Id,Event Time,item_id\nc1,p1,2024-01-31,i1\n")
    df = read_events(shop)
    assert (df["user_id"][0], df["item_id"][0]) == ("c1", "i1")  # item_id itself, not Product_Id
    assert read_events(shop, ReadOptions(columns={"item_id": "Product_Id"}))["item_id"][0] == "p1"
    amazon = write_jsonl(tmp_path, "reviews.jsonl", [
        {"rating": 5.0, "asin": "B1", "parent_asin": "P1", "user_id": "AE1", "timestamp": 1588687728923}])  # fmt: skip
    df = read_events(amazon)
    assert (df["user_id"][0], df["item_id"][0], df["timestamp"][0]) == ("AE1", "P1", 1588687728)
    old = write_jsonl(tmp_path, "old.json", [{"reviewerID": "A1", "asin": "B1", "unixReviewTime": 1300000000}])
    assert read_events(old).row(0) == ("A1", "B1", 1300000000)
    pq = tmp_path / "log.parquet"
    pl.DataFrame({"customer_id": ["c"], "sku": ["s"], "ts": [1700000000], "action": ["buy"]}).write_parquet(pq)
    assert read_events(pq).row(0) == ("c", "s", 1700000000, "buy")
    # Diginetica: userId is empty for most rows; the error says the column was a guess and how to name another
    digi = write(tmp_path, "digi.csv", "sessionId;userId;itemId;timeframe;eventdate\n1;;81766;526309;2016-05-09\n")
    raises_at(digi, 2, "userId", "taken as user_id by its name", "--columns user_id=COLUMN")
    assert read_events(digi, ReadOptions(columns={"user_id": "sessionId"})).row(0) == ("1", "81766", 1462752000)
    # a flattened GA4 export: user_pseudo_id, event_name, and event_timestamp (microseconds) before event_date
    ga4 = write(tmp_path, "ga4.csv", "event_date,event_timestamp,event_name,user_pseudo_id,item_id\n"
                "20231130,1701302400123456,add_to_cart,178.16,sku1\n")  # fmt: skip
    assert read_events(ga4).row(0) == ("178.16", "sku1", 1701302400, "add_to_cart")
    # Segment's flattened track events: nested names by their last part
    seg = write(tmp_path, "segment.csv", "userId,event,timestamp,properties.product_id,properties.price\n"
                "u1,Product Viewed,2023-11-30T00:00:00Z,p9,3.5\n")  # fmt: skip
    assert read_events(seg).row(0) == ("u1", "p9", 1701302400, "Product Viewed")
    cat = write(tmp_path, "products.csv", "parent_asin,brand\n007,x\n")
    assert read_catalog(cat)["item_id"].to_list() == ["007"]  # the catalog's item id too, kept as text


def test_headerless_amazon_ratings_with_the_item_first(tmp_path):
    """Amazon's 2018 ratings files are item,user,rating,timestamp (2014's: user,item,...): a first column of
    product ids (ASINs) is the item."""
    dump = "B00004U9V2,A1RS9MZ1XHVLPY,5.0,1199836800\n0205616461,A2QQ5UBZEZ3VWE,4.0,1199836900\n"
    df = read_events(write(tmp_path, "Beauty.csv", dump))
    assert df["item_id"].to_list() == ["B00004U9V2", "0205616461"] and df["user_id"][0] == "A1RS9MZ1XHVLPY"
    swapped = "\n".join(",".join([b, a, r, t]) for a, b, r, t in (ln.split(",") for ln in dump.split()))
    assert read_events(write(tmp_path, "ratings_Beauty.csv", swapped))["item_id"][0] == "B00004U9V2"
    forced = read_events(write(tmp_path, "f.csv", dump), ReadOptions(columns={"user_id": "1", "item_id": "2"}))
    assert forced["user_id"][0] == "B00004U9V2"
    # Yoochoose's clicks (session, ISO time, item, category) and Taobao's UserBehavior (user, item, category,
    # behaviour, unix time): the time and the event type are found by what the columns hold
    clicks = read_events(write(tmp_path, "yoochoose-clicks.dat",
                               "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,S\n"))  # fmt: skip
    assert clicks["item_id"].to_list() == ["214536502", "214536500"] and clicks["timestamp"][0] == 1396867869
    taobao = read_events(
        write(tmp_path, "UserBehavior.csv", "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,buy,1511561733\n")
    )
    assert taobao.row(1) == ("1", "2333346", 1511561733, "buy")
    # 10-digit customer numbers before SKUs are a shop's (user, item, ...), not Amazon's item-first layout
    shop = read_events(write(tmp_path, "shop.csv", "1234567890,SKU-1,5,1199836800\n"))
    assert shop["user_id"][0] == "1234567890"


def test_space_separated_id_files_of_published_splits(tmp_path):
    """SASRec's 'user item' pairs and S3-Rec's 'user item item ...' lines: order-only events in file order; a
    space-separated table (user item rating time) is read by position."""
    pairs = read_events(write(tmp_path, "ml-1m.txt", "1 1\n1 2\n2 3\n1 3\n"))
    assert pairs["user_id"].to_list() == ["1", "1", "2", "1"] and pairs["item_id"].to_list() == ["1", "2", "3", "3"]
    assert pairs["timestamp"].null_count() == 4
    lists = read_events(write(tmp_path, "Toys.txt", "1 5 6 5\n2 7\n\n3 8 9 10\n"))
    assert lists["user_id"].to_list() == ["1"] * 3 + ["2"] + ["3"] * 3
    assert lists["item_id"][:3].to_list() == ["5", "6", "5"]  # a repeat stays: the file is the sequence
    header = read_events(write(tmp_path, "h.txt", "user_id item_id\nu a\nu b\n"))
    assert header["item_id"].to_list() == ["a", "b"]
    table = read_events(write(tmp_path, "u.txt", "u1 i1 5 978300760\nu1 i2 3 978300761\n"))
    assert table.row(1) == ("u1", "i2", 978300761)
    raises_at(write(tmp_path, "bad.txt", "1 1\n1 2\n" * 300 + "1 2 3\n"), 601, None, "expected 2 fields")
    with pytest.raises(DataError, match="--columns does not apply"):
        read_events(tmp_path / "Toys.txt", ReadOptions(columns={"user_id": "1"}))
    # --sep overrides the layout: one column per line is then the user... and no item: a clear error
    raises_at(tmp_path / "ml-1m.txt", None, "user_id", reader=lambda p: read_events(p, ReadOptions(sep=",")))


def test_amazon_2014_metadata_of_python_dict_literals_is_a_catalog(tmp_path):
    """meta_*.json.gz of 2014 holds {'asin': ...} literals, not JSON; categories are lists of lists."""
    from genrec.features.tables import _as_lists, catalog_attributes

    lines = [{"asin": f"B{i:09d}", "title": f"Lipstick number {i}", "brand": f"b{i % 3}", "price": 9.5 + i,
              "imUrl": f"http://x/{i}.jpg", "related": {"also_bought": ["B1"]},
              "categories": [["Beauty", "Makeup", f"c{i % 4}"], ["Beauty", "Gifts"]]} for i in range(30)]  # fmt: skip
    path = tmp_path / "meta_Beauty.json.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(repr(r) + "\n" for r in lines))
    cat = read_catalog(path)
    assert cat["item_id"][3] == "B000000003" and cat.height == 30
    assert catalog_attributes(cat) == ["brand", "price", "categories"]
    assert _as_lists(cat["categories"])[1] == ["Beauty", "Makeup", "c1", "Gifts"]  # flattened, once each
    with gzip.open(bad := tmp_path / "meta_bad.json.gz", "wt") as f:
        f.write(repr(lines[0]) + "\n{'asin': \n")
    raises_at(bad, 2, None, "not a JSON object or a Python dict literal", reader=read_catalog)


def test_a_json_object_of_item_attributes_is_a_catalog(tmp_path):
    """S3-Rec's NAME_item2attributes.json, {item: [attribute ids]}: a catalog with a multi-valued column."""
    path = write(tmp_path, "Toys_item2attributes.json", json.dumps({"5": [1, 2], "6": [2], "7": []}))
    cat = read_catalog(path)
    assert cat["item_id"].to_list() == ["5", "6", "7"] and cat["attributes"].to_list() == [["1", "2"], ["2"], []]
    with pytest.raises(DataError, match="not nested"):
        read_catalog(write(tmp_path, "nested.json", json.dumps({"5": [[1]]})))


def test_empty_files(tmp_path):
    raises_at(write(tmp_path, "events.csv", ""), None, None, "empty")
    raises_at(write(tmp_path, "header.csv", HEADER), None, None, "no data rows")
    raises_at(write(tmp_path, "events.jsonl", ""), None, None, "empty")
    pq = tmp_path / "events.parquet"
    pl.DataFrame(schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64}).write_parquet(pq)
    raises_at(pq, None, None, "no data rows")


def test_unsupported_extension_and_missing_file(tmp_path):
    raises_at(write(tmp_path, "events.xml", "x"), None, None, "unsupported file type")
    raises_at(write(tmp_path, "events.xlsx", "x"), None, None, "cannot read as an Excel workbook")
    raises_at(tmp_path / "nowhere.csv", None, None, "not found")


def test_unparsable_value(tmp_path):
    path = write(tmp_path, "events.csv", "user_id,item_id,timestamp,value\n1,a,1,2.5\n1,b,2,\n1,c,3,12,5\n")
    # 5 fields on a 4-column file: the malformed row itself is reported, not a polars error
    raises_at(path, 4, None, "expected 4 fields, found 5")
    path = write(tmp_path, "events2.csv", "user_id,item_id,timestamp,value\n1,a,1,2.5\n1,b,2,\n1,c,3,$12\n")
    raises_at(path, 4, "value", "'$12'")


def test_ragged_csv_rows(tmp_path):
    raises_at(write(tmp_path, "long.csv", HEADER + "1,a,1\n2,b,2,extra\n"), 3, None, "found 4")
    raises_at(write(tmp_path, "short.csv", HEADER + "1,a,1\n2,b,2\n3,c\n"), 4, None, "found 2")
    # commas inside quotes are not field separators
    df = read_events(write(tmp_path, "quoted.csv", HEADER + '"1,5",a,1\n2,"b, c",2\n'))
    assert df["user_id"].to_list() == ["1,5", "2"]


def test_jsonl_errors_count_physical_lines(tmp_path):
    rows = [
        {"user_id": 1, "item_id": 2, "timestamp": 3},
        None,
        {"user_id": 1, "item_id": 2, "timestamp": "x"},
    ]
    raises_at(write_jsonl(tmp_path, "events.jsonl", rows), 3, "timestamp", "'x'")
    path = write(tmp_path, "broken.jsonl", '{"user_id": 1, "item_id": 2, "timestamp": 3}\n{"user_id": 1,\n')
    raises_at(path, 2, None, "not a valid JSON")


def test_parquet_errors_count_rows(tmp_path):
    pq = tmp_path / "events.parquet"
    pl.DataFrame({"user_id": ["a", "b", None], "item_id": ["x", "y", "z"], "timestamp": [1, 2, 3]}).write_parquet(pq)
    err = raises_at(pq, 3, "user_id", "row 3")
    assert err.unit == "row"
    pl.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": ["1", "soon"]}).write_parquet(pq)
    raises_at(pq, 2, "timestamp", "'soon'")
    bad = write(tmp_path, "corrupt.parquet", "not parquet at all")
    raises_at(bad, None, None, "cannot read")


def test_data_error_pickles():
    err = DataError("a/events.csv", "boom", row=3, column="item_id")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) == "events.csv, line 3, column 'item_id': boom"
    assert isinstance(back, ValueError) and back.row == 3


# ---- catalog --------------------------------------------------------------------------------------


def test_catalog_keeps_text_ids_and_infers_attributes(tmp_path):
    path = write(tmp_path, "catalog.csv", "name,item_id,price\nmug,007,3.5\ncup,8,4\n")
    df = read_catalog(path)
    assert df.columns == ["item_id", "name", "price"]
    assert df["item_id"].to_list() == ["007", "8"]
    assert df["price"].dtype == pl.Float64


def test_catalog_duplicate_and_missing_ids(tmp_path):
    path = write(tmp_path, "catalog.csv", "item_id,price\na,1\nb,2\nc,3\nb,4\n")
    raises_at(path, 5, "item_id", "duplicate item_id 'b'", "line 3", reader=read_catalog)
    raises_at(write(tmp_path, "c2.csv", "id,price\na,1\n"), None, "item_id", "'id'", reader=read_catalog)
    pq = tmp_path / "catalog.parquet"
    pl.DataFrame({"item_id": [1, 2, 2], "brand": ["x", "y", "z"]}).write_parquet(pq)
    raises_at(pq, 3, "item_id", "duplicate", reader=read_catalog)
    jl = write_jsonl(tmp_path, "catalog.jsonl", [{"item_id": "a"}, {"item_id": None, "price": 2}])
    raises_at(jl, 2, "item_id", "missing item_id", reader=read_catalog)


# ---- a shop's own file: separators, column names, time formats, the future ------------------------


@pytest.mark.parametrize(("name", "sep"), [("tabs.csv", "\t"), ("semi.csv", ";"), ("pipes.txt", "|"), ("c.tsv", ",")])
def test_separator_is_sniffed_from_the_content_whatever_the_extension(tmp_path, name, sep):
    text = sep.join(["user_id", "item_id", "timestamp", "event_type"]) + "\n"
    text += "".join(sep.join([f"u{i}", "a,b" if sep != "," else "ab", str(100 + i), "view"]) + "\n" for i in range(3))
    df = read_events(write(tmp_path, name, text))
    assert df["user_id"].to_list() == ["u0", "u1", "u2"]
    assert df["item_id"][0] == ("a,b" if sep != "," else "ab")  # a comma inside a field of a ';' file
    assert df["timestamp"].to_list() == [100, 101, 102]


def test_forced_separator_overrides_sniffing(tmp_path):
    # commas in the ids, none in the header: sniffing and --sep ';' agree, --sep ',' finds ragged lines
    path = write(tmp_path, "events.csv", "user_id;item_id;timestamp\nu,1;a;1\nu,2;b;2\n")
    assert read_events(path)["user_id"].to_list() == ["u,1", "u,2"]
    assert read_events(path, ReadOptions(sep=";"))["user_id"].to_list() == ["u,1", "u,2"]
    raises_at(path, 2, None, "found 2", "--sep", reader=lambda p: read_events(p, ReadOptions(sep=",")))
    assert ReadOptions(sep="tab").sep == "\t"
    with pytest.raises(ValueError, match="not a separator"):
        ReadOptions(sep=":")


def test_column_mapping_reads_the_files_names_and_errors_use_them(tmp_path):
    opts = ReadOptions(columns="user_id=customer_id,item_id=product_id,timestamp=event_time,event_type=type")
    assert opts.columns == {"user_id": "customer_id", "item_id": "product_id", "timestamp": "event_time",
                            "event_type": "type"}  # fmt: skip
    text = "customer_id,product_id,event_time,type,user_id\nc1,p1,100,view,junk\nc1,p2,200,purchase,junk\n"
    df = read_events(write(tmp_path, "events.csv", text), opts)
    assert df.columns == ["user_id", "item_id", "timestamp", "event_type"]
    assert df["user_id"].to_list() == ["c1", "c1"] and df["event_type"].to_list() == ["view", "purchase"]
    bad = write(tmp_path, "bad.csv", "customer_id,product_id,event_time,type\nc1,p1,100,view\nc1,p1,soon,view\n")
    raises_at(bad, 3, "event_time", "'soon'", reader=lambda p: read_events(p, opts))
    gone = write(tmp_path, "gone.csv", "customer_id,sku,event_time\nc1,p1,100\n")
    raises_at(gone, None, "product_id", "'sku'", "--columns maps item_id", reader=lambda p: read_events(p, opts))
    # the catalog's item id follows the same mapping (or keeps genrec's name)
    cat = read_catalog(write(tmp_path, "products.csv", "product_id,brand\np1,x\np2,y\n"), opts)
    assert cat.columns == ["item_id", "brand"] and cat["item_id"].to_list() == ["p1", "p2"]
    assert read_catalog(write(tmp_path, "catalog.csv", "item_id,brand\np1,x\n"), opts)["item_id"][0] == "p1"
    with pytest.raises(ValueError, match="unknown genrec column 'user'"):
        ReadOptions(columns={"user": "customer_id"})
    with pytest.raises(ValueError, match="GENREC_NAME=FILE_COLUMN"):
        ReadOptions(columns="user_id")


def test_missing_column_hint_when_the_separator_is_wrong(tmp_path):
    path = write(tmp_path, "events.csv", "user_id;item_id;timestamp\nu;a;1\n")
    raises_at(path, None, "user_id", "--sep", reader=lambda p: read_events(p, ReadOptions(sep=",")))


def test_timestamp_formats_epoch_ms_iso_dates_and_strptime(tmp_path):
    rows = ["1700000000123", "2023-11-14T22:13:20Z", "2023-11-14 23:13:20+01:00", "2023-11-14T22:13:20.75"]
    path = write(tmp_path, "events.csv", HEADER + "".join(f"u,i{k},{t}\n" for k, t in enumerate(rows)))
    assert read_events(path)["timestamp"].to_list() == [1700000000] * 4
    path = write(tmp_path, "dates.csv", HEADER + "u,a,2024-01-31\nu,b,2024-02-01\n")
    assert read_events(path)["timestamp"].to_list() == [epoch(2024, 1, 31), epoch(2024, 2, 1)]
    eu = write(tmp_path, "eu.csv", HEADER + "u,a,01/02/2024 00:07\nu,b,31/12/2023 23:59\n")
    bad = write(tmp_path, "bad.csv", HEADER + "u,a,01/02/2024 00:07\nu,b,the 31st\n")
    raises_at(bad, 2, "timestamp", "'01/02/2024 00:07'", "accepted:", "ISO 8601", "--timestamp-format")
    df = read_events(eu, ReadOptions(timestamp_format="%d/%m/%Y %H:%M"))
    assert df["timestamp"].to_list() == [epoch(2024, 2, 1, 0, 7), epoch(2023, 12, 31, 23, 59)]
    frac = write(tmp_path, "frac.csv", HEADER + "u,a,2024-01-31 08:05:00.250\n")
    assert read_events(frac, ReadOptions(timestamp_format="%Y-%m-%d %H:%M:%S.%f"))["timestamp"][0] == epoch(
        2024, 1, 31, 8, 5
    )
    opts = ReadOptions(timestamp_format="%d/%m/%Y")
    err = raises_at(
        eu, 2, "timestamp", "does not match --timestamp-format '%d/%m/%Y'", reader=lambda p: read_events(p, opts)
    )
    assert "accepted" not in str(err)


def test_day_month_order_is_read_from_the_values(tmp_path):
    """31/12/2023 is day first, 12/31/2023 month first (UCI's Online Retail: 12/1/2010 8:26); the report says
    which and why; values that never show the order (every field <= 12) are an error offering both formats."""
    eu = write(tmp_path, "eu.csv", HEADER + "u,a,01/02/2024 00:07\nu,b,31/12/2023 23:59\n")
    stats: dict = {}
    df = read_events(eu, stats=stats)
    assert df["timestamp"].to_list() == [epoch(2024, 2, 1, 0, 7), epoch(2023, 12, 31, 23, 59)]
    assert stats["timestamp_format"] == ("%d/%m/%Y", "day first: '31/12/2023 23:59' has a first field above 12")
    us = write(tmp_path, "us.csv", HEADER + "u,a,12/1/2010 8:26\nu,b,1/13/2011 10:05:09\nu,c,2011-01-14\n")
    stats = {}
    df = read_events(us, stats=stats)  # one row with seconds, one ISO date: each parses
    assert stats["timestamp_format"][0] == "%m/%d/%Y"
    assert df["timestamp"].to_list() == [epoch(2010, 12, 1, 8, 26), epoch(2011, 1, 13, 10, 5, 9), epoch(2011, 1, 14)]
    dots = write(tmp_path, "dots.csv", HEADER + "u,a,24.12.2023\nu,b,02.01.2024\n")
    assert read_events(dots)["timestamp"].to_list() == [epoch(2023, 12, 24), epoch(2024, 1, 2)]
    both = write(tmp_path, "both.csv", HEADER + "u,a,01/02/2024\nu,b,03/04/2024\n")
    err = raises_at(both, None, "timestamp", "could be day/month/year or month/day/year", "'%d/%m/%Y' or '%m/%d/%Y'")
    assert "--timestamp-format" in str(err)
    mixed = write(tmp_path, "mixed.csv", HEADER + "u,a,31/01/2024\nu,b,01/31/2024\n")  # both orders: no guess
    raises_at(mixed, 2, "timestamp", "cannot parse '31/01/2024'", "accepted:")
    report = load_path(us).report
    assert any("timestamps read as '%m/%d/%Y', with or without a time (month first" in ln for ln in report.lines())


def test_missing_values_are_placeholders_too_and_drop_incomplete_counts_them(tmp_path):
    """NA / null / None / blank in an id, time or event type column is a missing value (Diginetica's anonymous
    userId is NA): an error with the count and the ways out, or with --drop-incomplete dropped and reported."""
    text = ("session,userId,itemId,time,event\n1,NA,a,1700000000,view\n2,u2,b,1700000001,view\n"
            "3,u3,null,1700000002,view\n4,u4,c,,view\n5, None ,d,1700000004,\n6,u6,e,1700000005,buy\n")  # fmt: skip
    path = write(tmp_path, "log.csv", text)
    err = raises_at(path, 2, "userId", "missing userId ('NA'); 2 of 6 rows have none", "--drop-incomplete")
    assert "this file also has 'session'" in str(err)  # the other column logs use for users
    stats: dict = {}
    df = read_events(path, ReadOptions(drop_incomplete=True), stats=stats)
    assert df["user_id"].to_list() == ["u2", "u6"] and df["event_type"].to_list() == ["view", "buy"]
    assert stats["incomplete"] == {"userId": 2, "itemId": 1, "time": 1, "event": 1} and stats["rows_read"] == 2
    lines = load_path(path, ReadOptions(drop_incomplete=True)).report.lines()
    assert "  dropped rows that lack a value (--drop-incomplete): 2 without 'userId', 1 without 'itemId', " \
           "1 without 'time', 1 without 'event'" in lines  # fmt: skip
    blank = write(tmp_path, "blank.csv", HEADER + "u1,a,1700000000\nu2,b,NaN\n")
    raises_at(blank, 3, "timestamp", "missing timestamp ('NaN')", "--drop-incomplete")
    empty = write(tmp_path, "empty.csv", HEADER + "NA,a,1700000000\n,b,1700000001\n")
    with pytest.raises(DataError, match="every row lacks a user, item, time or event type"):
        read_events(empty, ReadOptions(drop_incomplete=True))
    cat = write(tmp_path, "catalog.csv", "item_id,brand\nNA,x\n")  # a catalog has no --drop-incomplete
    err = raises_at(cat, 2, "item_id", "missing item_id ('NA')", reader=read_catalog)
    assert "--drop-incomplete" not in str(err)
    with pytest.raises(ValueError, match="drop_incomplete must be true or false"):
        ReadOptions(drop_incomplete="yes")  # type: ignore[arg-type]


def test_online_retail_reads_with_one_flag(tmp_path):
    """UCI's Online Retail layout: CustomerID, StockCode and InvoiceDate are recognised, the dates read month
    first, the rows without a customer (a quarter of the real file) are dropped only when asked, and its
    17850.0-style customer ids (a float column: it has gaps) read as 17850, as the shop's systems write them."""
    text = ("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
            "536365,85123A,WHITE HANGING HEART,6,12/1/2010 8:26,2.55,17850.0,United Kingdom\n"
            "536366,22633,HAND WARMER,6,12/1/2010 8:28,1.85,,United Kingdom\n"
            "536367,84879,BIRD ORNAMENT,32,12/13/2010 8:34,1.69,13047.0,United Kingdom\n")  # fmt: skip
    path = write(tmp_path, "Online Retail.csv", text)
    raises_at(path, 3, "CustomerID", "missing CustomerID", "--drop-incomplete")
    report = load_path(path, ReadOptions(drop_incomplete=True)).report
    assert report.recognized == {"user_id": "CustomerID", "item_id": "StockCode", "timestamp": "InvoiceDate"}
    assert report.incomplete == {"CustomerID": 1} and report.rows == 2 and report.whole_number_ids == ["CustomerID"]
    df = read_events(path, ReadOptions(drop_incomplete=True))
    assert df.row(1) == ("13047", "84879", epoch(2010, 12, 13, 8, 34))
    mixed = write(tmp_path, "mixed.csv", HEADER + "17850.0,a,1700000000\nguest,b,1700000001\n1.5,c,1700000002\n")
    assert read_events(mixed)["user_id"].to_list() == ["17850.0", "guest", "1.5"]  # not every id a whole number
    pq = tmp_path / "floats.parquet"  # a Parquet float column, as pandas writes it
    pl.DataFrame(
        {"user_id": [17850.0, 13047.0], "item_id": ["a", "b"], "timestamp": [1700000000, 1700000001]}
    ).write_parquet(pq)
    assert read_events(pq)["user_id"].to_list() == ["17850", "13047"]
    cat = write(tmp_path, "catalog.csv", "item_id,brand\n85123.0,x\n22633.0,y\n")  # the catalog's ids alike
    assert read_catalog(cat)["item_id"].to_list() == ["85123", "22633"]


def test_item_columns_of_a_flat_export_become_its_catalog(tmp_path):
    """An order-line export carries each product's name and price on every row: the columns (nearly) constant
    per item are its attributes (most frequent text, median number); a quantity, an invoice number, a country,
    a RetailRocket transactionid (a few rows, a new id each) are not. A catalog file beside the log wins."""
    rows = [  # invoice, item, name, quantity, price, country, transaction
        ("1", "a", "MUG", "6", "2.55", "UK", ""), ("2", "a", "MUG", "1", "2.55", "FR", "91"),
        ("3", "a", "MUG", "12", "2.10", "UK", "92"), ("4", "b", "LAMP", "2", "15.0", "UK", ""),
        ("5", "b", "LAMP", "24", "15.0", "DE", "93"), ("6", "b", "LAMP", "3", "15.0", "UK", ""),
        ("7", "c", "BAG", "1", "NA", "FR", "94"), ("8", "c", "BAG", "2", "7.5", "UK", "95"),
        ("9", "d", "MUG", "4", "2.55", "UK", ""), ("10", "d", "MUG", "1", "2.55", "FR", ""),
    ]  # fmt: skip
    head = "invoice,user,item,name,quantity,price,country,transactionid,time\n"
    text = head + "".join(f"{i},u{j % 3},{it},{n},{q},{p},{c},{t},{1700000000 + j}\n"
                          for j, (i, it, n, q, p, c, t) in enumerate(rows))  # fmt: skip
    path = write(tmp_path, "orders.csv", text)
    stats: dict = {}
    read_events(path, ReadOptions(columns={"user_id": "user"}), stats=stats)
    items = stats["item_columns"]
    assert items.columns == ["item_id", "name", "price"]
    assert items.row(0) == ("a", "MUG", 2.55) and items.row(1) == ("b", "LAMP", 15.0) and items.row(2)[2] == 7.5
    report = load_path(path, ReadOptions(columns={"user_id": "user"})).report
    assert report.catalog_columns == ["name", "price"] and report.coverage == 1.0
    assert any("item attributes from the log's own columns: name, price" in line for line in report.lines())
    write(tmp_path, "catalog.csv", "item_id,brand\na,x\nb,y\n")
    ds = load_path(path, ReadOptions(columns={"user_id": "user"}))
    assert ds.catalog.columns == ["item_id", "brand"] and not ds.report.catalog_columns
    # Taobao's headerless user,item,category,behavior,time: the category column (by position) describes items
    taobao = write(tmp_path, "UserBehavior.csv", "1,10,7,pv,1511544070\n1,11,8,pv,1511561733\n"
                   "2,10,7,buy,1511572885\n2,11,8,cart,1511572886\n3,12,7,pv,1511572887\n")  # fmt: skip
    stats = {}
    read_events(taobao, stats=stats)
    assert stats["item_columns"].rows() == [("10", 7.0), ("11", 8.0), ("12", 7.0)]
    assert (
        "item_columns" not in (read_events(write(tmp_path, "plain.csv", HEADER + "u,a,1\n"), stats=(st := {})), st)[1]
    )


def test_excel_workbooks_read_every_sheet_with_the_header_of_the_first(tmp_path):
    """Online Retail II ships as a workbook with a sheet per year: both are read (a notes sheet is not), dates
    are Excel dates, errors name the sheet and its row; a catalog.xlsx beside the log keeps its ids as text."""
    xlsxwriter = pytest.importorskip("xlsxwriter")
    year1 = pl.DataFrame({"Invoice": ["1", "2"], "StockCode": ["85123A", "007"], "Customer ID": [17850.0, 13047.0],
                          "InvoiceDate": [datetime(2009, 12, 1, 7, 45), datetime(2009, 12, 1, 7, 46)]})  # fmt: skip
    year2 = year1.with_columns(pl.Series("Customer ID", [12583.0, None]), pl.Series("Invoice", ["3", "4"]))
    path = tmp_path / "online_retail_II.xlsx"
    with xlsxwriter.Workbook(path) as wb:
        year1.write_excel(wb, worksheet="Year 2009-2010")
        year2.write_excel(wb, worksheet="Year 2010-2011")
        pl.DataFrame({"note": ["from UCI"]}).write_excel(wb, worksheet="About")
    raises_at(path, 3, "Customer ID", "missing Customer ID", "--drop-incomplete")
    err = raises_at(path, 3, "Customer ID", reader=read_events)
    assert str(err).startswith("online_retail_II.xlsx, sheet 'Year 2010-2011', row 3, column 'Customer ID'")
    df = read_events(path, ReadOptions(drop_incomplete=True))
    assert df["user_id"].to_list() == ["17850", "13047", "12583"] and df["item_id"].to_list() == [
        "85123A",
        "007",
        "85123A",
    ]
    assert df["timestamp"][0] == epoch(2009, 12, 1, 7, 45)
    with xlsxwriter.Workbook(tmp_path / "catalog.xlsx") as wb:
        pl.DataFrame({"StockCode": ["85123A", "007"], "price": [2.55, 1.0], "colour": ["white", "red"]}).write_excel(wb)
    cat = read_catalog(tmp_path / "catalog.xlsx", ReadOptions(columns={"item_id": "StockCode"}))
    assert cat["item_id"].to_list() == ["85123A", "007"] and cat["price"].dtype == pl.Float64
    ds = load_path(path, ReadOptions(drop_incomplete=True))  # catalog.xlsx beside the log is found
    assert ds.catalog is not None and ds.report.coverage == 1.0


def test_a_shopify_orders_export_reads_without_flags(tmp_path):
    """Shopify's orders export: a customer by Email, a product by Lineitem sku, Created at with its offset; the
    line items' name and price describe the products, the billing country the customers; order numbers
    (one per order, so most customers' only one) are identifiers, not attributes."""
    head = "Name,Email,Financial Status,Created at,Lineitem quantity,Lineitem name,Lineitem price,Lineitem sku,Billing Country\n"
    orders = [("#1001", "ann@x.com", "2023-11-30 12:34:56 -0500", [("MUG-1", "Mug", "9.00", 2), ("CUP-2", "Cup", "4.50", 1)], "FR"),
              ("#1002", "bob@y.com", "2023-12-01 08:00:00 -0500", [("MUG-1", "Mug", "9.00", 1), ("BAG-3", "Bag", "20.00", 1)], "UK"),
              ("#1003", "ann@x.com", "2023-12-02 09:00:00 -0500", [("BAG-3", "Bag", "20.00", 3)], "FR"),
              ("#1004", "cy@z.com", "2023-12-03 10:00:00 -0500", [("CUP-2", "Cup", "4.50", 5), ("MUG-1", "Mug", "9.00", 1)], "FR")]  # fmt: skip
    text = head + "".join(f"{n},{e},paid,{t},{q},{name},{price},{sku},{c}\n"
                          for n, e, t, lines, c in orders for sku, name, price, q in lines)  # fmt: skip
    path = write(tmp_path, "orders_export.csv", text)
    stats: dict = {}
    df = read_events(path, stats=stats)
    assert df.row(0) == ("ann@x.com", "MUG-1", 1701365696)  # 17:34:56 UTC
    assert stats["item_columns"].sort("item_id").rows() == [
        ("BAG-3", "Bag", 20.0),
        ("CUP-2", "Cup", 4.5),
        ("MUG-1", "Mug", 9.0),
    ]
    assert stats["user_columns"].columns == ["user_id", "Billing Country"]
    assert parse_timestamps(pl.Series(["2023-11-30 12:34:56.5 UTC"]))[0] == 1701347696  # BigQuery's TIMESTAMP text


def test_future_timestamps_are_rejected_naming_the_row(tmp_path):
    now = epoch(2024, 1, 1)
    rows = [now - 10, now + 3600, now + 86_400 + 1]  # an hour ahead is clock skew; a day and a second is not
    path = write(tmp_path, "events.csv", HEADER + "".join(f"u,i{k},{t}\n" for k, t in enumerate(rows)))
    err = raises_at(
        path, 4, "timestamp", "in the future", "1 day", "2024-01-02", reader=lambda p: read_events(p, now=now)
    )
    assert "now is 2024-01-01 00:00:00 UTC" in str(err)
    assert read_events(path, ReadOptions(max_future_skew_s=2 * 86_400), now=now).height == 3
    year_5138 = write(tmp_path, "typo.csv", HEADER + "u,a,99999999999\n")  # read as seconds: year 5138
    raises_at(year_5138, 2, "timestamp", "in the future")
    # the rule itself, for the serving API: scalars and arrays, the index of the first offender
    check_not_future(now + 86_400, now=now)
    with pytest.raises(FutureTimestampError) as info:
        check_not_future([now, now + 10, now + 86_401, now + 10**9], now=now)
    assert info.value.index == 2 and info.value.value == now + 86_401 and MAX_FUTURE_SKEW_S == 86_400
    with pytest.raises(ValueError, match="in the future"):
        check_not_future(now + 61, now=now, skew=60)


def test_missing_file_says_file_not_found_with_the_path(tmp_path):
    missing = tmp_path / "shop" / "events.csv"
    with pytest.raises(DataError, match="file not found: " + str(missing)):
        read_events(missing)


def test_read_options_round_trip_through_a_config_dict():
    opts = ReadOptions(columns={"user_id": "customer_id"}, sep=";", attributes="brand, price", name="shop")
    d = opts.to_dict()
    assert d == {"columns": {"user_id": "customer_id"}, "sep": ";", "attributes": ["brand", "price"], "name": "shop"}
    assert ReadOptions.from_dict(d) == opts and ReadOptions.from_dict(None).is_default
    with pytest.raises(ValueError, match="unknown reading option"):
        ReadOptions.from_dict({"seperator": ";"})


def test_a_rating_dump_without_a_header_is_read_by_position(tmp_path):
    """user,item,rating,timestamp with no header row (the public rating dumps): first column the user, second
    the item, last the timestamp; errors count lines from 1 and name the column by its position."""
    dump = "A1RS,B000X,5.0,1199836800\nA1RS,B000Y,4.0,1199836900\nA2QQ,B000X,3.0,1199837000\n"
    df = read_events(write(tmp_path, "ratings.csv", dump))
    assert df["user_id"].to_list() == ["A1RS", "A1RS", "A2QQ"] and df["item_id"][1] == "B000Y"
    assert df["timestamp"].to_list() == [1199836800, 1199836900, 1199837000]
    raises_at(write(tmp_path, "bad.csv", dump + "A3,B1,2.0,12x\n"), 4, "4", "'12x'")
    raises_at(write(tmp_path, "short.csv", dump + "A3,B1,2.0\n"), 4, None, "expected 4 fields, found 3")
    raises_at(write(tmp_path, "first.csv", "A3,B1,2.0,12x\n" + dump), 1, "4", "'12x'")
    # --columns names positions: here the item comes first and the rating is kept as the value
    df = read_events(write(tmp_path, "swapped.tsv", dump.replace(",", "\t")),
                     ReadOptions(columns={"item_id": "1", "user_id": "2", "value": "3"}))  # fmt: skip
    assert df["item_id"][0] == "A1RS" and df["value"].to_list() == [5.0, 4.0, 3.0]
    # a header whose names are not numbers or dates stays a header
    assert read_events(write(tmp_path, "named.csv", HEADER + "1,a,1700000000\n"))["item_id"].to_list() == ["a"]
    # two columns without a header: no timestamp to guess; the error says the columns go by position
    raises_at(write(tmp_path, "pairs.csv", "u1,1700000000\n"), None, "user_id", "named by position")


def test_gzipped_json_lines_as_the_review_dumps_ship_them(tmp_path):
    """Amazon's review dumps: one JSON object per line, .json.gz, with their own column names and nested fields."""
    rows = [{"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1300000000, "style": {"Size:": "1"}},
            {"reviewerID": "A2", "asin": "B2", "overall": 4.0, "unixReviewTime": 1300000100}]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path = tmp_path / "Beauty.json.gz"
    with gzip.open(path, "wt") as f:
        f.write(text)
    names = ReadOptions(columns={"user_id": "reviewerID", "item_id": "asin", "timestamp": "unixReviewTime"})
    df = read_events(path, names)
    assert df["item_id"].to_list() == ["B1", "B2"] and df["timestamp"][1] == 1300000100
    with gzip.open(bad := tmp_path / "bad.jsonl.gz", "wt") as f:
        f.write(text + "{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl.gz, line 3: not a valid JSON object"):
        read_events(bad, names)
    array = write(tmp_path, "array.json", json.dumps(rows))
    with pytest.raises(DataError, match=r"array.json: a JSON array; genrec reads JSON lines"):
        read_events(array, names)


def test_k_core_keeps_users_and_items_with_k_rows_repeatedly(tmp_path):
    # u1..u3 rate a, b, c; u4 rates a, b, d; d has one row, so u4 falls to 2 rows once d goes, then out
    rows = [(u, i) for u in ("u1", "u2", "u3") for i in "abc"] + [("u4", "a"), ("u4", "b"), ("u4", "d")]
    path = write(
        tmp_path, "events.csv", HEADER + "".join(f"{u},{i},{1700000000 + n}\n" for n, (u, i) in enumerate(rows))
    )
    assert read_events(path).height == 12
    stats: dict = {}
    core = read_events(path, ReadOptions(k_core=3), stats=stats)
    assert stats["rows_read"] == 12 and core.height == 9 and set(core["user_id"]) == {"u1", "u2", "u3"}
    assert core["timestamp"].is_sorted()  # file order kept
    with pytest.raises(DataError, match="no rows left in the 4-core"):
        read_events(path, ReadOptions(k_core=4))
    with pytest.raises(ValueError, match="k_core must be a whole number"):
        ReadOptions(k_core=-1)
