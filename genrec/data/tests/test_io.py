import gzip
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from genrec.data.io import DataError, parse_timestamps, read_catalog, read_events

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
    assert str(err) == "events.csv, line 7, column 'timestamp': cannot parse '2023-13-45' as a timestamp"


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
    path = write(tmp_path, "events.csv", "user,item_id,timestamp\n1,a,1\n")
    raises_at(path, None, "user_id", "'user'", "'item_id'", "'timestamp'")
    jl = write_jsonl(tmp_path, "events.jsonl", [{"user_id": 1, "item": 2, "timestamp": 3}])
    raises_at(jl, None, "item_id", "'item'")


def test_empty_files(tmp_path):
    raises_at(write(tmp_path, "events.csv", ""), None, None, "empty")
    raises_at(write(tmp_path, "header.csv", HEADER), None, None, "no data rows")
    raises_at(write(tmp_path, "events.jsonl", ""), None, None, "empty")
    pq = tmp_path / "events.parquet"
    pl.DataFrame(schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64}).write_parquet(pq)
    raises_at(pq, None, None, "no data rows")


def test_unsupported_extension_and_missing_file(tmp_path):
    raises_at(write(tmp_path, "events.xlsx", "x"), None, None, "unsupported file type")
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
