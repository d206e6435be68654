"""Read and validate user-supplied event logs and item catalogs.

Files are delimited text (.csv / .tsv / .txt / .dat, optionally .gz; the separator, one of , TAB ; | or single spaces, is
sniffed from the content whatever the extension), Parquet, or JSON lines (.jsonl / .ndjson / .json, optionally .gz),
or the space-separated id files of published splits (user item pairs; a user and their items per line: no times,
file order). Columns are found by genrec's names, then by names logs commonly use (COLUMN_NAMES: customer_id,
visitorid, parent_asin, event, ...); ReadOptions maps genrec's names to the file's, forces a separator or a
timestamp format. Every problem becomes one DataError that names the
file, the row as the user would find it (CSV: the physical line, header = line 1; JSONL: the line; Parquet:
the 1-based row) and the column as the file calls it, e.g.

    events.csv, line 7, column 'timestamp': cannot parse '2023-13-45' as a timestamp

Text columns are read as strings and parsed with vectorised polars expressions, so a malformed value is
reported instead of being silently coerced, and a 10M-row file never goes through a Python loop. Only the
error paths (finding the line of a broken JSON record) walk the file in Python.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

EVENT_REQUIRED = ("user_id", "item_id", "timestamp")
EVENT_OPTIONAL = ("event_type", "value")
_ROW = "__genrec_row__"  # 0-based record index kept through filtering, for error messages

# (suffix, format); longest suffixes first so ".csv.gz" wins over ".gz". Every delimited text file is "csv".
_FORMATS = (
    (".csv.gz", "csv"),
    (".tsv.gz", "csv"),
    (".txt.gz", "csv"),
    (".dat.gz", "csv"),
    (".csv", "csv"),
    (".tsv", "csv"),
    (".txt", "csv"),
    (".dat", "csv"),  # Yoochoose's clicks, RecSys Challenge 2015
    (".parquet", "parquet"),
    (".pq", "parquet"),
    (".jsonl.gz", "jsonl"),
    (".ndjson.gz", "jsonl"),
    (".json.gz", "jsonl"),  # one object per line (the Amazon review dumps); a JSON array is refused, see below
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
    (".json", "jsonl"),
    (".xlsx", "excel"),  # UCI's Online Retail ships as a workbook (Online Retail II: a sheet per year)
    (".xlsm", "excel"),
    (".xls", "excel"),
)
SEPARATORS = (",", "\t", ";", "|")  # what sniffing chooses from (and what --sep accepts)
_SEP_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}

# A timestamp more than this far after the reader's clock is an error: a year-5138 typo would otherwise stay
# a user's "latest" event forever. Shared with serving (the API applies the same rule to live events).
MAX_FUTURE_SKEW_S = 86_400

ACCEPTED_TIMESTAMPS = (
    "unix seconds or milliseconds (1700000000, 1700000000123), ISO 8601 dates and datetimes (2024-01-31, "
    "2024-01-31T08:05:00, 2024-01-31 08:05:00.5, with Z or +01:00 for a zone; naive is UTC), "
    "or any format given with --timestamp-format (strptime codes, e.g. '%d/%m/%Y %H:%M')"
)


@dataclass(frozen=True)
class ReadOptions:
    """How to read a user's event log (the `genrec train` reading options, or a config file's keys).

    columns: genrec name -> the file's column, e.g. {"user_id": "customer_id", "timestamp": "event_time"}
    (also applied to the catalog's item id). sep: force a separator instead of sniffing. timestamp_format: a
    strptime format for text timestamps. catalog: the item catalog (default: catalog.* beside the events).
    attributes: catalog columns the models use (None: every column but ids and free text). name: the run's
    data name (default: the events' folder). max_future_skew_s: how far after now a timestamp may be.
    drop_incomplete: drop the rows without a user, item, time or event type (empty, NA, null, None, ...) and
    count them in the report, instead of stopping at the first one.
    """

    columns: dict[str, str] = field(default_factory=dict)
    sep: str | None = None
    timestamp_format: str | None = None
    catalog: str | None = None
    attributes: tuple[str, ...] | None = None
    name: str | None = None
    max_future_skew_s: float = MAX_FUTURE_SKEW_S
    k_core: int = 0  # > 1: keep only users and items with at least this many rows, repeatedly (published splits: 5)
    drop_incomplete: bool = False

    def __post_init__(self) -> None:
        columns = self.columns
        if isinstance(columns, str):
            columns = parse_column_map(columns)
        known = EVENT_REQUIRED + EVENT_OPTIONAL
        for key, value in columns.items():
            if key not in known:
                raise ValueError(f"columns: unknown genrec column {key!r} (known: {', '.join(known)})")
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"columns: {key} must name a column of the file, got {value!r}")
        object.__setattr__(self, "columns", {k: v.strip() for k, v in columns.items()})
        if self.sep is not None:
            sep = _SEP_NAMES.get(self.sep.lower(), self.sep)
            if sep not in (*SEPARATORS, " "):
                raise ValueError(f"sep: {self.sep!r} is not a separator genrec reads (use , tab ; | or space)")
            object.__setattr__(self, "sep", sep)
        if isinstance(self.attributes, str):
            object.__setattr__(self, "attributes", tuple(a.strip() for a in self.attributes.split(",") if a.strip()))
        elif self.attributes is not None:
            object.__setattr__(self, "attributes", tuple(self.attributes))
        if self.max_future_skew_s < 0:
            raise ValueError(f"max_future_skew_s must be >= 0, got {self.max_future_skew_s}")
        if isinstance(self.k_core, bool) or not isinstance(self.k_core, int) or self.k_core < 0:
            raise ValueError(f"k_core must be a whole number >= 0, got {self.k_core!r}")
        if not isinstance(self.drop_incomplete, bool):
            raise ValueError(f"drop_incomplete must be true or false, got {self.drop_incomplete!r}")

    @property
    def is_default(self) -> bool:
        return self == ReadOptions()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, only the fields that differ from the defaults."""
        default = asdict(ReadOptions())
        out = {k: v for k, v in asdict(self).items() if v != default[k]}
        if "attributes" in out:
            out["attributes"] = list(out["attributes"])
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ReadOptions:
        d = dict(d or {})
        unknown = set(d) - set(asdict(ReadOptions()))
        if unknown:
            raise ValueError(f"unknown reading option(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def parse_column_map(text: str) -> dict[str, str]:
    """'user_id=customer_id,item_id=product_id' -> {'user_id': 'customer_id', 'item_id': 'product_id'}."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"columns: expected GENREC_NAME=FILE_COLUMN, got {part!r}")
        out[key.strip()] = value.strip()
    return out


class DataError(ValueError):
    """A problem in a user file, located by file, row (1-based, see `unit`) and column."""

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        row: int | None = None,
        column: str | None = None,
        unit: str = "line",
    ) -> None:
        self.path = Path(path)
        self.message = message
        self.row = row  # 1-based: CSV/JSONL physical line, Parquet row
        self.column = column
        self.unit = unit  # "line" or "row": how `row` counts
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.path.name]
        if self.row is not None:
            where.append(f"{self.unit} {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.message}"

    def __reduce__(self):  # keep pickling (multiprocessing) working with keyword-only fields
        return _rebuild_error, (self.path, self.message, self.row, self.column, self.unit)


def _rebuild_error(path: Path, message: str, row: int | None, column: str | None, unit: str) -> DataError:
    return DataError(path, message, row=row, column=column, unit=unit)


# ---------------------------------------------------------------------------------------------------
# public readers
# ---------------------------------------------------------------------------------------------------


def read_events(
    path: str | Path,
    options: ReadOptions | None = None,
    now: float | None = None,
    stats: dict | None = None,
    item_columns: bool = True,
) -> pl.DataFrame:
    """Validated event log in file order.

    Columns: user_id (Utf8), item_id (Utf8), timestamp (Int64 unix seconds), plus event_type (Utf8) and
    value (Float64) when the file has them, under genrec's names whatever `options.columns` maps them from.
    A timestamp more than options.max_future_skew_s after `now` (default: the clock) is an error.
    With options.k_core > 1 only the k-core's rows are returned; `stats` (if given) gets "rows_read" (rows with
    every value), "incomplete" (with options.drop_incomplete: file column -> rows dropped for lacking it),
    "timestamp_format" (a day/month order read from the data: (format, why)), "whole_number_ids" (id columns
    whose 17850.0-style values were read as 17850), "item_columns" and
    "user_columns" (a CSV, Parquet or Excel log's other columns that describe its items / users, one row per
    item / user: see constant_columns; item_columns=False skips the items, e.g. where a catalog file describes
    them).
    Raises DataError on the first problem found.
    """
    options = options or ReadOptions()
    path = Path(path)
    notes: dict = {"incomplete": {}, "want_side_columns": stats is not None, "want_item_columns": item_columns}
    parts = [_read_one(p, options, now, notes) for p in split_parts(path)]
    events = parts[0] if len(parts) == 1 else pl.concat(parts, how="diagonal_relaxed")
    if stats is not None:
        stats.update({k: v for k, v in notes.items() if not k.startswith("want_")})
        stats["rows_read"] = events.height
        for side, key in (("item_columns", "item_id"), ("user_columns", "user_id")):
            if parts_of := notes.get(side):  # a split in parts: the first part that has a key describes it
                frame = pl.concat(parts_of, how="diagonal_relaxed") if len(parts_of) > 1 else parts_of[0]
                stats[side] = frame.unique(key, keep="first", maintain_order=True)
    if options.k_core > 1:
        events = k_core(events, options.k_core)
        if events.height == 0:
            raise DataError(path, f"no rows left in the {options.k_core}-core (every user or item has fewer "
                            f"than {options.k_core} rows once the others are dropped); lower --k-core")  # fmt: skip
    return events


def split_parts(path: Path) -> list[Path]:
    """The files of a published leave-last-out split when `path` is its train file (NAME.train.csv beside
    NAME.valid.csv and NAME.test.csv: the Amazon Reviews 2023 benchmark's last_out files), read as one log
    whose last two events per user are that split's validation and test events again; else [path]."""
    m = re.fullmatch(r"(.+)\.train(\..+)", path.name)
    if not m:
        return [path]
    parts = [path.with_name(f"{m[1]}.{part}{m[2]}") for part in ("train", "valid", "test")]
    return parts if all(p.is_file() for p in parts) else [path]


def _read_one(path: Path, options: ReadOptions, now: float | None, notes: dict) -> pl.DataFrame:
    fmt = _format_of(path)
    if (layout := whitespace_layout(path, options)) in ("lists", "pairs"):
        if options.columns or options.timestamp_format:
            given = "--columns" if options.columns else "--timestamp-format"
            raise DataError(path, f"a file of space-separated user and item ids ({layout}) has no named columns "
                            f"or times: {given} does not apply")  # fmt: skip
        return read_item_sequences(path, layout)
    return _read_event_table(path, fmt, options, now, notes)


def _read_event_table(path: Path, fmt: str, options: ReadOptions, now: float | None, notes: dict) -> pl.DataFrame:
    names = event_columns(path, options)  # genrec -> file
    # Text formats: every event column as a string, parsed below. Parquet keeps its (unambiguous) types.
    raw, found = _read_table(path, fmt, options.sep, [names[c] for c in names], infer=False)
    _require_columns(found, path, [names[c] for c in EVENT_REQUIRED], options)
    df = raw.select(_ROW, *(pl.col(names[c]).alias(c) for c in names if names[c] in raw.columns))
    loc = _Locator(path, fmt, names, options.sep)
    loc.recognized = {c for c, v in names.items() if v != c and c not in options.columns and not v.isdigit()}
    loc.in_events, loc.file_columns = True, found
    if options.drop_incomplete:
        df = _drop_incomplete(df, loc, notes["incomplete"])

    out = {}
    for col in ("user_id", "item_id"):
        out[col] = _parse_ids(df, col, loc)
    if loc.whole_floats:
        notes["whole_number_ids"] = list(loc.whole_floats)
    out["timestamp"] = _parse_timestamp_column(df, loc, options, now, notes)
    if "event_type" in df.columns:
        out["event_type"] = _parse_ids(df, "event_type", loc)
    if "value" in df.columns:
        out["value"] = _parse_values(df, loc)
    extra = [c for c in raw.columns if c != _ROW and c not in names.values()]
    # a flat export: its order lines carry each product's name and price, each customer's country, ... (not
    # JSON lines: the review dumps' text)
    if extra and fmt in ("csv", "parquet", "excel") and notes.get("want_side_columns"):
        kept = raw.join(df.select(_ROW), on=_ROW, how="semi") if df.height < raw.height else raw
        rows = kept.select(extra).with_columns(item_id=out["item_id"], user_id=out["user_id"])
        items = constant_columns(rows.drop("user_id"), "item_id") if notes.get("want_item_columns") else None
        if items is not None:
            notes.setdefault("item_columns", []).append(items)
        taken = items.columns[1:] if items is not None else []
        users = constant_columns(rows.drop("item_id", *taken), "user_id", max_distinct_share=USER_COLUMN_DISTINCT)
        if users is not None:
            notes.setdefault("user_columns", []).append(users)
    return pl.DataFrame(out)


# A column of an event log is an item (user) attribute when it is (nearly) constant per item (user): text with
# one value for at least this share of the items seen twice or more, numbers whose spread within an item is at
# most this share of their spread overall (a product's price with its discounts, not an order line's quantity)
ITEM_COLUMN_CONSTANCY = 0.95
ITEM_COLUMN_SPREAD = 0.1
# a user column with more distinct values than this share of the users (and than 20) is an identifier (a name)
USER_COLUMN_DISTINCT = 0.5


def constant_columns(rows: pl.DataFrame, key: str, max_distinct_share: float = 1.0) -> pl.DataFrame | None:
    """The attributes an event log carries on its rows, per `key` (items: UCI Online Retail's Description and
    UnitPrice, Taobao's category; users: a customer's country): from `rows` (key + the log's other columns),
    the columns that are (nearly) constant per key, one row per key (key first): text its most frequent value,
    numbers their median. A column with more distinct values than max_distinct_share of the keys (and than 20)
    is left out. None if no column is kept."""
    ids = rows[key]
    out = ids.unique(maintain_order=True).to_frame()
    for col in (c for c in rows.columns if c != key):
        s = rows[col]
        if s.dtype == pl.Utf8:
            s = s.str.strip_chars()
            s = s.set(s.is_in(MISSING_VALUES), None)  # NA, null, ...: no value
        frame = pl.DataFrame({key: ids, "v": s}).drop_nulls()
        if frame.height == 0 or not (frame["v"].dtype.is_numeric() or frame["v"].dtype == pl.Utf8):
            continue
        if (number := as_numbers(frame["v"])) is not None:
            frame = frame.with_columns(v=number)
            spread = frame.group_by(key).agg(pl.col("v").std(ddof=0), pl.len().alias("rows"))
            within = spread.filter(pl.col("rows") >= 2)["v"].mean()  # over the items seen twice or more
            overall = float(frame["v"].std(ddof=0) or 0.0)
            if within is None or overall == 0 or float(within) > ITEM_COLUMN_SPREAD * overall:
                continue  # never judged, a constant, or a per-row number (a quantity, a rating, an order id)
            per_item = frame.group_by(key).agg(pl.col("v").median().alias(col))
        else:
            counts = frame.group_by(key).agg(pl.col("v").n_unique().alias("n"), pl.len().alias("rows"))
            twice = counts.filter(pl.col("rows") >= 2)
            if not twice.height or frame["v"].n_unique() < 2 or (twice["n"] == 1).mean() < ITEM_COLUMN_CONSTANCY:
                continue  # a constant, never judged (every key once), or a per-row value (an invoice, a country)
            per_item = (
                frame.group_by(key, "v")
                .agg(pl.len().alias("rows"))
                .sort(key, "rows", "v", descending=[False, True, False])
                .group_by(key, maintain_order=True)
                .agg(pl.col("v").first().alias(col))
            )
        if per_item[col].n_unique() > max(20, max_distinct_share * per_item.height):
            continue  # an identifier of its own (a customer's name or e-mail)
        out = out.join(per_item, on=key, how="left")
    return out if out.width > 1 else None


# What logs write for "no value" (Diginetica's anonymous userId is NA, pandas exports write NaN or None): in an
# id, time or event type column these are missing values, never an id that would merge every such row into one
MISSING_VALUES = ("", "NA", "N/A", "#N/A", "n/a", "NaN", "nan", "null", "NULL", "Null", "None", "none")
INCOMPLETE_COLUMNS = ("user_id", "item_id", "timestamp", "event_type")


def missing_values(s: pl.Series) -> pl.Series:
    """True where a value is null, blank or one of MISSING_VALUES (a NaN in a float column)."""
    if s.dtype == pl.Utf8:
        t = s.str.strip_chars()
        return (t.is_null() | t.is_in(MISSING_VALUES)).alias(s.name)
    if s.dtype.is_float():
        return (s.is_null() | s.is_nan()).alias(s.name)
    return s.is_null()


def _drop_incomplete(df: pl.DataFrame, loc: _Locator, dropped: dict[str, int]) -> pl.DataFrame:
    """df without its rows that lack a user, item, time or event type; dropped[file column] += their count."""
    masks = {c: missing_values(df[c]) for c in INCOMPLETE_COLUMNS if c in df.columns}
    for c, m in masks.items():
        if n := int(m.sum()):
            dropped[loc.column(c)] = dropped.get(loc.column(c), 0) + n
    gone = pl.DataFrame(list(masks.values())).select(pl.any_horizontal(pl.all())).to_series()
    if df.height and bool(gone.all()):
        raise DataError(loc.path, "every row lacks a user, item, time or event type: nothing left to train on "
                        f"(check --columns; missing counts: {dropped})")  # fmt: skip
    return df.filter(~gone)


def k_core(events: pl.DataFrame, k: int) -> pl.DataFrame:
    """The rows whose user and item both have at least k rows, dropping users and items until that holds for
    every one left (the "5-core" of the published Amazon splits). File order is kept."""
    while True:
        kept = events.filter((pl.len().over("user_id") >= k) & (pl.len().over("item_id") >= k))
        if kept.height == events.height:
            return kept
        events = kept


# What public and shop logs call genrec's columns, in order of preference (compared lowercased without "_", "-"
# or spaces): a log with a header gets its columns recognised by name; --columns overrides, the report says which
COLUMN_NAMES = {
    "user_id": ("userid", "user", "customerid", "customer", "visitorid", "visitor", "reviewerid", "clientid",
                "memberid", "accountid", "buyerid", "shopperid", "uid", "userpseudoid", "anonymousid", "email",
                "customeremail", "billingemail", "sessionid", "session"),
    "item_id": ("itemid", "item", "productid", "product", "parentasin", "asin", "sku", "articleid", "article",
                "goodsid", "offerid", "contentid", "movieid", "iid", "stockcode", "productcode", "itemcode",
                "lineitemsku", "variantsku", "variantid"),
    "timestamp": ("timestamp", "eventtimestamp", "time", "ts", "eventtime", "datetime", "unixreviewtime", "date",
                  "eventdate", "createdat", "occurredat", "orderdate", "purchasedate", "clicktime", "invoicedate",
                  "transactiondate"),
    "event_type": ("eventtype", "event", "eventname", "action", "actiontype", "behavior", "behaviour",
                   "behaviortype", "interaction", "interactiontype", "type"),
}  # fmt: skip
# Amazon's product ids (ASIN: 'B' + 9 letters/digits, or an ISBN-10) and reviewer ids ('A' + 9-40 letters/digits):
# a headerless dump of ASINs then reviewer ids is (item, user, rating, timestamp), the layout of the 2018 ratings
# files, not (user, item, ...) as the 2014 ones
_ASIN = r"^(B[0-9A-Z]{9}|[0-9]{9}[0-9X])$"
_REVIEWER = r"^A[0-9A-Z]{9,40}$"


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def file_columns(path: Path, options: ReadOptions) -> list[str] | None:
    """The column names of a file with a header (None: a delimited text file without one)."""
    fmt = _format_of(path)
    if fmt == "csv":
        sep = options.sep or sniff_separator(path)
        return csv_header(path, sep) if csv_has_header(path, sep) else None
    try:
        if fmt == "parquet":
            return pl.scan_parquet(path).collect_schema().names()
        if fmt == "excel":
            return list(_excel_sheets(path, header_only=True)[0][1].columns)
        return pl.scan_ndjson(_as_json_lines(path)).collect_schema().names()
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, EOFError, DataError):
        return []  # unreadable: _read_table says why


def event_columns(path: Path, options: ReadOptions) -> dict[str, str]:
    """genrec column -> the file's column: options.columns, else genrec's own name, else a name COLUMN_NAMES
    knows for it (customer_id, visitorid, parent_asin, event, ...). A delimited text file without a header row
    has its columns named by position ("1", "2", ...); unless --columns says otherwise, its first column is
    the user, the second the item and the last the timestamp (user, item[, rating], timestamp: the layout of
    the public rating dumps), or the first the item where it holds Amazon product ids (item, user, ...)."""
    names = {c: options.columns.get(c, c) for c in EVENT_REQUIRED + EVENT_OPTIONAL}
    if whitespace_layout(path, options) in ("lists", "pairs"):
        return names
    found = file_columns(path, options)
    if found is None:
        sep = options.sep or sniff_separator(path)
        if len(csv_header(path, sep)) >= 3:
            for col, pos in _positions(path, sep).items():
                names[col] = options.columns.get(col, str(pos))
        return names
    taken = set(options.columns.values()) | {c for c in names.values() if c in found}
    for col in COLUMN_NAMES:
        if col not in options.columns and names[col] not in found and (match := known_column(found, col, taken)):
            names[col] = match
            taken.add(match)
    return names


def known_column(found: list[str], col: str, taken: set[str] | frozenset[str] = frozenset()) -> str | None:
    """The first of `found` (a file's columns, not in `taken`) that COLUMN_NAMES knows as genrec's `col`; then a
    flattened nested name by its last part (Segment's `properties.product_id`, GA4's `items.item_id`)."""
    by_norm: dict[str, str] = {}
    by_leaf: dict[str, str] = {}
    for c in found:
        if c not in taken:
            by_norm.setdefault(_norm(c), c)
            if "." in c:
                by_leaf.setdefault(_norm(c.rsplit(".", 1)[1]), c)
    for names in (by_norm, by_leaf):
        if match := next((names[a] for a in COLUMN_NAMES[col] if a in names), None):
            return match
    return None


# unix seconds or milliseconds of 2001-2033 (ids are often 9-13 digits too), ISO dates and datetimes
_TIME_LIKE = r"^(1\d{9}(\.\d*)?|1\d{12}|\d{4}-\d{2}-\d{2}([ T].*)?)$"
# words logs use for event types: a headerless column of a few words, one of them these, is the event type
_ACTIONS = {"pv", "view", "click", "buy", "purchase", "order", "cart", "addtocart", "fav", "favorite", "like",
            "wishlist", "transaction", "checkout", "removefromcart", "rate", "review"}  # fmt: skip


def _positions(path: Path, sep: str) -> dict[str, int]:
    """genrec column -> 1-based position in a headerless file, from its first 200 rows: the user first (the
    item first where Amazon product ids come before reviewer ids), the time the last column that reads as one
    (Yoochoose's clicks: session, ISO time, item, category), the item the next column after the user that is
    not the time, and an event type where a later column holds a few words (Taobao's pv / cart / fav / buy)."""
    head = pl.read_csv(path, separator=sep, has_header=False, n_rows=200, infer_schema=False)
    cols = [head[:, i].str.strip_chars().drop_nulls() for i in range(head.width)]

    def all_match(c: pl.Series, pattern: str) -> bool:
        return len(c) > 0 and bool(c.str.contains(pattern).all())

    if all_match(cols[0], _ASIN) and all_match(cols[1], _REVIEWER):
        return {"user_id": 2, "item_id": 1, "timestamp": head.width}
    times = [i for i in range(1, head.width) if all_match(cols[i], _TIME_LIKE)]
    ts = times[-1] if times else head.width - 1
    item = next(i for i in range(1, head.width) if i != ts)
    out = {"user_id": 1, "item_id": item + 1, "timestamp": ts + 1}
    for i in range(item + 1, head.width):
        values = {_norm(v) for v in cols[i].unique().to_list()}
        if i != ts and len(values) <= 10 and values & _ACTIONS:
            out["event_type"] = i + 1
            break
    return out


def csv_header(path: Path, sep: str) -> list[str]:
    return pl.read_csv(path, separator=sep, n_rows=0, infer_schema=False).columns


_DATA_LIKE = re.compile(r"-?\d+(\.\d*)?([eE][-+]?\d+)?|\d{4}-\d{2}-\d{2}([ T].*)?")


def csv_has_header(path: Path, sep: str) -> bool:
    """False when the first line reads as data, not names: one of its fields is a number or a date (names of
    columns never are; a rating dump's first line, e.g. 'A1RS,B000,5.0,1199836800', is)."""
    return not any(_DATA_LIKE.fullmatch(c.strip().strip('"')) for c in csv_header(path, sep))


def read_catalog(path: str | Path, options: ReadOptions | None = None) -> pl.DataFrame:
    """Validated item catalog: item_id (Utf8, non-null, unique) first, attribute columns as inferred.

    The item id column is `item_id`, or the file column that options.columns maps item_id to."""
    options = options or ReadOptions()
    path = Path(path)
    fmt = _format_of(path)
    if fmt == "jsonl" and (mapping := _json_mapping(path)) is not None:
        return mapping
    id_col = options.columns.get("item_id", "item_id")
    names = file_columns(path, options) or []
    if id_col not in names and "item_id" in names:
        id_col = "item_id"  # the mapping names the events' column; this catalog uses genrec's name
    elif id_col not in names and "item_id" not in options.columns:
        id_col = known_column(names, "item_id") or id_col  # product_id, parent_asin, sku, ...
    # item_id stays text (ids like "007" must not become 7); attributes get polars' full-file inference
    df, found = _read_table(path, fmt, options.sep, [id_col], infer=True)
    _require_columns(found, path, [id_col], options)
    if id_col != "item_id":
        df = df.drop("item_id", strict=False).rename({id_col: "item_id"})
    loc = _Locator(path, fmt, {"item_id": id_col}, options.sep)
    ids = _parse_ids(df, "item_id", loc)
    dup = (~ids.is_first_distinct()).arg_true()
    if len(dup):
        r = int(dup[0])
        first = int((ids == ids[r]).arg_true()[0])
        raise loc.error(
            f"duplicate item_id {ids[r]!r} (first seen on {loc.unit} {loc.number(df, first)})",
            df,
            r,
            "item_id",
        )
    return df.drop(_ROW).with_columns(ids).select("item_id", pl.exclude("item_id"))


_CONVERTED: dict[tuple[str, float], Path] = {}  # (file, mtime) -> its JSON lines copy, once per process


def _as_json_lines(path: Path) -> Path:
    """`path`, or for lines of Python dict literals (Amazon's 2014 metadata, meta_*.json.gz: {'asin': ...})
    a JSON lines copy of it in a temporary folder, line for line (errors keep their line numbers)."""
    with _open_text(path) as f:
        first = next((ln for ln in f if ln.strip()), "")
    if not first.lstrip().startswith("{'"):
        return path
    key = (str(path.resolve()), path.stat().st_mtime)
    if key not in _CONVERTED:
        import ast
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="genrec-")) / (path.name.split(".")[0] + ".jsonl")
        with _open_text(path) as src, open(out, "w") as dst:
            for n, line in enumerate(src, start=1):
                try:
                    dst.write(json.dumps(ast.literal_eval(line)) + "\n" if line.strip() else "\n")
                except (ValueError, SyntaxError):
                    raise DataError(path, "not a JSON object or a Python dict literal", row=n) from None
        _CONVERTED[key] = out
    return _CONVERTED[key]


def _json_mapping(path: Path) -> pl.DataFrame | None:
    """A catalog written as one JSON object {item_id: [attribute, ...]} (the published S3-Rec splits'
    *_item2attributes.json) as item_id + a multi-valued `attributes` column; None for JSON lines."""
    with _open_text(path) as f:
        head = f.read(1 << 16)
    if not head.lstrip().startswith("{") or "\n" in head.strip():
        return None  # JSON lines: one object per line
    with _open_text(path) as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError:
            return None
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, list) for v in obj.values()):
        return None
    bad = next((k for k, v in obj.items() if any(isinstance(x, (dict, list)) for x in v)), None)
    if bad is not None:
        raise DataError(path, f"item {bad!r}: attributes must be a list of names or ids, not nested")
    return pl.DataFrame(
        {"item_id": list(obj), "attributes": [[str(x) for x in v] for v in obj.values()]},
        schema={"item_id": pl.Utf8, "attributes": pl.List(pl.Utf8)},
    )


def check_not_future(ts_seconds: Any, now: float | None = None, skew: float = MAX_FUTURE_SKEW_S) -> None:
    """Raise FutureTimestampError for the first timestamp (unix seconds; a number or an array) later than
    now + skew. `now` defaults to the clock. The reader and the serving API share this rule."""
    now = time.time() if now is None else now
    ts = np.atleast_1d(np.asarray(ts_seconds))
    bad = np.flatnonzero(ts > now + skew)
    if len(bad):
        raise FutureTimestampError(int(bad[0]), int(ts[bad[0]]), now, skew)


class FutureTimestampError(ValueError):
    """A timestamp too far in the future; `index` is its position in what was checked."""

    def __init__(self, index: int, value: int, now: float, skew: float) -> None:
        self.index, self.value, self.now, self.skew = index, value, now, skew
        super().__init__(
            f"timestamp {value} ({_iso(value)}) is more than {_duration(skew)} in the future "
            f"(now is {_iso(now)}); fix the clock or the value"
        )


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "beyond the year 9999"


def _duration(seconds: float) -> str:
    if seconds and seconds % 86_400 == 0:
        days = int(seconds // 86_400)
        return f"{days} day" + ("s" if days != 1 else "")
    return f"{seconds:g} s"


# ---------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------


def _format_of(path: Path) -> str:
    name = path.name.lower()
    fmt = next((f for suffix, f in _FORMATS if name.endswith(suffix)), None)
    if not path.is_file():
        raise DataError(path, f"file not found: {path}")
    if fmt is None:
        known = ", ".join(s for s, _ in _FORMATS)
        raise DataError(path, f"unsupported file type (expected one of {known})")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    if fmt == "jsonl":
        with _open_text(path) as f:
            start = f.read(4096).lstrip()[:1]
        if start == "[":
            raise DataError(path, "a JSON array; genrec reads JSON lines (one object per line): convert it, e.g. "
                            "with `jq -c '.[]' FILE > events.jsonl`")  # fmt: skip
    return fmt


def _head_lines(path: Path) -> tuple[str, ...]:
    """The first non-blank lines of a (possibly gzipped) text file, a line cut by the 64 KiB sample left out.
    Read once per file version: sniffing, the layout and the column guess all look at them."""
    st = path.stat()
    return _read_head(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=32)
def _read_head(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        chunk = f.read(1 << 16)
    lines = [ln for ln in chunk.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    if len(lines) > 1 and len(chunk) == 1 << 16:
        lines = lines[:-1]  # possibly cut in the middle
    return tuple(lines)


def sniff_separator(path: Path) -> str:
    """The separator of a delimited text file, from its first lines (quoted sections ignored): the candidate
    that splits the header and gives every sampled line the same field count; ties go to the most fields."""
    if whitespace_layout(path) == "table":
        return " "
    lines = _head_lines(path)
    unquoted = [re.sub(r'"[^"]*"', "", ln) for ln in lines[:50]]
    best, best_key = None, None
    for sep in SEPARATORS:
        counts = [ln.count(sep) for ln in unquoted]
        if not counts or counts[0] == 0:
            continue
        key = (sum(c == counts[0] for c in counts) / len(counts), counts[0])
        if best_key is None or key > best_key:
            best, best_key = sep, key
    if best is None:  # one column: nothing to split; the extension's convention
        best = "\t" if ".tsv" in path.name.lower() else ","
    return best


_KNOWN_NAMES = {_norm(c) for c in EVENT_REQUIRED + EVENT_OPTIONAL} | {a for v in COLUMN_NAMES.values() for a in v}


def _is_header(tokens: list[str]) -> bool:
    """A first line of column names (every one a name COLUMN_NAMES knows, or genrec's own)."""
    return all(_norm(t) in _KNOWN_NAMES for t in tokens)


def whitespace_layout(path: Path, options: ReadOptions | None = None) -> str | None:
    """How a text file with none of , TAB ; | lays out space-separated fields: "pairs" (user item, one event a
    line, in order: SASRec's ml-1m.txt), "lists" (a user, then their items in order: the published S3-Rec
    splits, Beauty.txt, Sports_and_Outdoors.txt), "table" (columns such as user item rating timestamp, single
    spaces, the last a unix time); None for anything else (or with --sep)."""
    if (options is not None and options.sep) or _format_of(path) != "csv":
        return None
    lines = _head_lines(path)[:200]
    if lines and _is_header(lines[0].split()):
        lines = lines[1:]
    if not lines or any(c in ln for ln in lines for c in (*SEPARATORS, '"')):
        return None
    counts = [len(ln.split()) for ln in lines]
    if min(counts) < 2:
        return None
    if max(counts) == 2:
        return "pairs"
    last_is_time = all(re.fullmatch(r"\d{9,13}(\.\d*)?", ln.split()[-1]) for ln in lines)
    if len(set(counts)) == 1 and last_is_time:  # columns, not item lists; aligned with runs of spaces: unread
        return None if any("  " in ln.strip() for ln in lines) else "table"
    return "lists"


def read_item_sequences(path: Path, layout: str) -> pl.DataFrame:
    """user_id, item_id and a null timestamp (order-only: file order within each user) per event of a "pairs"
    or "lists" file (whitespace_layout)."""
    users: list[str] = []
    items: list[str] = []
    with _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens or (line_no == 1 and _is_header(tokens)):
                continue
            if layout == "pairs":
                if len(tokens) != 2:
                    raise DataError(path, f"expected 2 fields (user item), found {len(tokens)}", row=line_no)
                users.append(tokens[0])
                items.append(tokens[1])
            else:
                users.extend([tokens[0]] * (len(tokens) - 1))
                items.extend(tokens[1:])
    if not users:
        raise DataError(path, "file has no data rows")
    return pl.DataFrame({"user_id": users, "item_id": items}).with_columns(timestamp=pl.lit(None, dtype=pl.Int64))


def _read_table(
    path: Path, fmt: str, sep: str | None, strings: list[str], infer: bool
) -> tuple[pl.DataFrame, list[str]]:
    """(raw table with a _ROW column (0-based record index), the file's column names), checked for emptiness.

    Columns in `strings` (file names) are read as Utf8. `infer` keeps every column with polars' full-file
    type inference (catalog attributes); without it other text columns are strings too, and Parquet/JSONL
    reads are narrowed to the `strings` columns (event logs)."""
    try:
        if fmt == "csv":
            df = _read_csv(path, sep or sniff_separator(path), strings, infer)
            names = [c for c in df.columns if c != _ROW]
        elif fmt == "excel":
            sheets = [frame for _, frame in _excel_sheets(path, infer=infer, strings=tuple(strings))]
            names = sheets[0].columns
            df = pl.concat(sheets, how="vertical_relaxed").with_row_index(_ROW)
            df = df.filter(~pl.all_horizontal(pl.col(names).is_null()))  # blank rows carry no data
        else:
            source = path if fmt == "parquet" else _as_json_lines(path)
            scan = pl.scan_parquet if fmt == "parquet" else pl.scan_ndjson
            names = scan(source).collect_schema().names()
            keep = names if infer else [c for c in names if c in strings]
            if fmt == "parquet":
                lf = pl.scan_parquet(path, row_index_name=_ROW)
            else:
                lf = pl.scan_ndjson(
                    source,
                    schema_overrides={c: pl.Utf8 for c in strings if c in names},
                    infer_schema_length=None if infer else 100,
                    row_index_name=_ROW,
                )
            df = lf.select(_ROW, *keep).collect()
    except pl.exceptions.NoDataError:
        raise DataError(path, "file is empty (no header and no rows)") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, EOFError) as e:
        raise _explain_read_failure(path, fmt, sep, e) from e
    if df.height == 0:
        raise DataError(path, "file has no data rows")
    return df, names


def _excel_sheets(
    path: Path, infer: bool = False, header_only: bool = False, strings: tuple[str, ...] = ()
) -> list[tuple[str, pl.DataFrame]]:
    """A workbook's sheets that share the first sheet's header, in order (Online Retail II: one per year; a
    notes sheet with other columns is left out). Cells are read as text (dates as ISO text); infer=True then
    makes numbers of the columns (except `strings`) whose every value is one (a catalog's prices)."""
    try:
        import fastexcel  # polars' calamine engine
    except ImportError:
        raise DataError(path, "reading Excel workbooks needs the fastexcel package: pip install fastexcel") from None
    options = {"n_rows": 0} if header_only else None
    try:
        sheets = pl.read_excel(path, sheet_id=0, engine="calamine", infer_schema_length=0, read_options=options)
    except fastexcel.FastExcelError as e:  # not a workbook, a damaged one, ...
        raise DataError(path, f"cannot read as an Excel workbook: {str(e).strip().splitlines()[0]}") from None
    if not sheets:
        raise DataError(path, "the workbook has no sheets")
    first = next(iter(sheets.values())).columns
    out = [(name, frame) for name, frame in sheets.items() if frame.columns == first]
    if infer and not header_only:
        whole = pl.concat([f for _, f in out])
        numeric = [c for c in first if c not in strings and as_numbers(whole[c]) is not None]
        out = [(name, f.with_columns(pl.col(numeric).cast(pl.Float64))) for name, f in out]
    return out


def as_numbers(s: pl.Series) -> pl.Series | None:
    """A text or numeric column as Float64 when every value it has is a finite number (nulls stay), else None."""
    text = s.str.strip_chars() if s.dtype == pl.Utf8 else s
    number = text.cast(pl.Float64, strict=False)
    if len(s) == s.null_count() or number.null_count() != text.null_count():
        return None
    return number if bool(number.drop_nulls().is_finite().all()) else None


def _excel_row(path: Path, record: int) -> tuple[str, int]:
    """(sheet, 1-based row as the spreadsheet numbers it) of a 0-based record of the sheets read (error path)."""
    for name, frame in _excel_sheets(path):
        if record < frame.height:
            return name, record + 2  # row 1 is the header
        record -= frame.height
    return "", record + 2


def _read_csv(path: Path, sep: str, strings: list[str], infer: bool) -> pl.DataFrame:
    header = csv_header(path, sep)
    has_header = csv_has_header(path, sep)
    if not has_header:  # columns by position, 1-based as a person counts them
        header = [str(i + 1) for i in range(len(header))]
    df = pl.read_csv(
        path,
        separator=sep,
        has_header=has_header,
        new_columns=None if has_header else header,
        infer_schema=infer,
        infer_schema_length=None,  # only used when infer=True: scan the whole file, never guess
        schema_overrides={c: pl.Utf8 for c in header if c.strip() in strings},
        row_index_name=_ROW,
    )
    df = df.rename({c: c.strip() for c in df.columns})
    data = [c for c in df.columns if c != _ROW]
    # polars fills a row that has too FEW fields with nulls; such a row always nulls the last column
    if data and df[data[-1]].null_count():
        ragged = _find_ragged_line(path, sep, len(data))
        if ragged is not None:
            line, found = ragged
            raise DataError(path, _field_count_message(len(data), found, sep), row=line)
    # blank lines carry no data: drop them (polars reads them as all-null rows)
    return df.filter(~pl.all_horizontal(pl.col(data).is_null()))


def _field_count_message(expected: int, found: int, sep: str) -> str:
    shown = "TAB" if sep == "\t" else repr(sep)
    return f"expected {expected} fields, found {found} (separator {shown}; force another with --sep)"


def _explain_read_failure(path: Path, fmt: str, sep: str | None, e: Exception) -> DataError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if fmt == "csv" and "fields" in msg:  # polars: "found more fields than defined in 'Schema'"
        sep = sep or sniff_separator(path)
        header = pl.read_csv(path, separator=sep, n_rows=0, infer_schema=False).columns
        ragged = _find_ragged_line(path, sep, len(header))
        if ragged is not None:
            return DataError(path, _field_count_message(len(header), ragged[1], sep), row=ragged[0])
    if fmt == "jsonl":
        line = _first_bad_json_line(path)
        if line is not None:
            return DataError(path, f"not a valid JSON object ({msg})", row=line)
        if "empty" in msg:
            return DataError(path, "file is empty (no JSON records)")
    return DataError(path, f"cannot read as {fmt.upper()}: {msg}")


def _find_ragged_line(path: Path, sep: str, ncols: int) -> tuple[int, int] | None:
    """(1-based line, field count) of the first data line whose field count is not ncols, or None.

    Vectorised: read raw lines, drop quoted sections, count separators. Lines inside a multi-line
    quoted field (odd number of quotes) cannot be judged this way and are skipped."""
    first = 1 if csv_has_header(path, sep) else 0  # 0-based index of the first data line
    lines = pl.read_csv(
        path, has_header=False, separator="\x00", quote_char=None, infer_schema=False, new_columns=["s"]
    ).with_row_index("i")
    s = pl.col("s").str.strip_chars_end("\r")
    unquoted = s.str.replace_all(r'"[^"]*"', "")
    fields = unquoted.str.count_matches(sep, literal=True) + 1
    bad = lines.select(
        pl.col("i"), fields.alias("n"), (s.str.count_matches('"', literal=True) % 2 == 0).alias("even")
    ).filter(pl.col("n").is_not_null() & pl.col("even") & (pl.col("n") != ncols) & (pl.col("i") >= first))
    if bad.height == 0:
        return None
    return int(bad["i"][0]) + 1, int(bad["n"][0])


def _open_text(path: Path):  # noqa: ANN202
    """The file as text, gunzipped when it is gzip (by its magic bytes, whatever its name)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _first_bad_json_line(path: Path) -> int | None:
    """Error path only: the first line that is not a JSON object."""
    with _open_text(path) as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                ok = isinstance(json.loads(line), dict)
            except json.JSONDecodeError:
                ok = False
            if not ok:
                return i
    return None


class _Locator:
    """Turns a 0-based record index into the number a user sees in the file, and a column into its file name."""

    def __init__(self, path: Path, fmt: str, names: dict[str, str] | None = None, sep: str | None = None) -> None:
        self.path, self.fmt = path, fmt
        self.unit = "row" if fmt in ("parquet", "excel") else "line"
        self.first_line = 2 if fmt != "csv" or csv_has_header(path, sep or sniff_separator(path)) else 1
        self.names = names or {}  # genrec name -> file column
        self.recognized: set[str] = set()  # genrec names whose file column was found by a known name
        self.in_events = False  # an event log (--drop-incomplete applies), not a catalog
        self.file_columns: list[str] = []  # every column of the file (to suggest another one)
        self.whole_floats: list[str] = []  # id columns read as integers from whole-number floats (17850.0)

    def column(self, col: str) -> str:
        return self.names.get(col, col)

    def number(self, df: pl.DataFrame, i: int) -> int:
        r = int(df[_ROW][i])  # record index in the file (blank CSV lines were filtered out of df)
        if self.fmt == "parquet":
            return r + 1
        if self.fmt == "jsonl":  # polars skips blank lines, so count them (error path only)
            return _jsonl_line_of_record(self.path, r)
        return r + self.first_line  # CSV: the header (if any) is line 1; assumes no newlines inside quoted fields

    def error(self, message: str, df: pl.DataFrame, i: int, column: str) -> DataError:
        if self.fmt == "excel":  # the sheet and its row, as the spreadsheet shows them
            sheet, row = _excel_row(self.path, int(df[_ROW][i]))
            return DataError(self.path, message, row=row, column=self.column(column), unit=f"sheet {sheet!r}, row")
        return DataError(self.path, message, row=self.number(df, i), column=self.column(column), unit=self.unit)


def _jsonl_line_of_record(path: Path, record: int) -> int:
    seen = -1
    with _open_text(path) as f:
        for i, line in enumerate(f, start=1):
            seen += bool(line.strip())
            if seen == record:
                return i
    return record + 1


def _require_columns(found: list[str], path: Path, required: list[str], options: ReadOptions) -> None:
    mapped = {v: k for k, v in options.columns.items()}
    for col in required:
        if col not in found:
            listed = ", ".join(repr(c) for c in found)
            if col in mapped:
                hint = f"; --columns maps {mapped[col]} to it"
            else:
                hint = f"; name another column with --columns {col}=FILE_COLUMN"
            if found and all(c.isdigit() for c in found):
                hint = f"; the file has no header, so its columns are named by position: --columns {col}=1 ..."
            if len(found) == 1 and any(sep in found[0] for sep in SEPARATORS):
                hint += "; the whole header is one column: force the separator with --sep"
            raise DataError(path, f"missing required column (found columns: {listed}){hint}", column=col)


# ---------------------------------------------------------------------------------------------------
# parsing, vectorised; each returns the clean column or raises on the first bad row
# ---------------------------------------------------------------------------------------------------


def _first(mask: pl.Series) -> int | None:
    idx = mask.arg_true()
    return int(idx[0]) if len(idx) else None


def _parse_ids(df: pl.DataFrame, col: str, loc: _Locator) -> pl.Series:
    """Strings with surrounding whitespace removed (so 'a, b' CSV spacing still matches); a missing value
    (blank, NA, null, None, ...: MISSING_VALUES) is an error."""
    s = df[col]
    if s.dtype != pl.Utf8:
        s = s.cast(pl.Utf8)
    s = s.str.strip_chars()
    _raise_missing(df, col, missing_values(s), loc)
    if col in ("user_id", "item_id") and len(s) and bool(s.head(1000).str.ends_with(".0").all()):
        if bool(s.str.contains(_WHOLE_FLOAT).all()):
            # integer ids through a float column (pandas writes an id column with gaps as 17850.0): the live API,
            # the catalog and the shop's systems say 17850
            s = s.str.replace(r"\.0+$", "")
            loc.whole_floats.append(loc.column(col))
    return s


_WHOLE_FLOAT = r"^-?\d+\.0+$"


def _raise_missing(df: pl.DataFrame, col: str, missing: pl.Series, loc: _Locator) -> None:
    """The error for the first missing value of `col`, with how many rows lack one and the ways out."""
    bad = _first(missing)
    if bad is None:
        return
    value = df[col][bad]
    shown = f" ({str(value).strip()!r})" if value is not None and str(value).strip() else ""
    ways = []
    if col in loc.recognized:  # e.g. Diginetica's userId, NA for most rows beside its sessionId
        other = known_column(loc.file_columns, col, {loc.column(col)})
        like = f" (this file also has {other!r})" if other else ""
        ways.append(f"it was taken as {col} by its name: name another column with --columns {col}=COLUMN{like}")
    if loc.in_events:
        ways.append("--drop-incomplete drops such rows and counts them in the report")
    n = int(missing.sum())
    count = f"; {n:,} of {df.height:,} rows have none" if n > 1 else ""
    hint = f"{count}{'; ' if ways else ''}{'; '.join(ways)}"
    raise loc.error(f"missing {loc.column(col)}{shown}{hint}", df, bad, col)


def _parse_values(df: pl.DataFrame, loc: _Locator) -> pl.Series:
    raw = df["value"]
    if raw.dtype.is_numeric():
        val = raw.cast(pl.Float64)
        bad = _first(val.is_not_null() & ~val.is_finite())
    else:
        text = raw.cast(pl.Utf8).str.strip_chars()
        val = text.cast(pl.Float64, strict=False)
        # empty / missing values are allowed (views have no price); anything else must be a finite number
        bad = _first((text.is_not_null() & (text != "")) & (val.is_null() | ~val.is_finite()))
    if bad is not None:
        raise loc.error(f"cannot parse {str(raw[bad])!r} as a number", df, bad, "value")
    return val.alias("value")


def _parse_timestamp_column(
    df: pl.DataFrame, loc: _Locator, options: ReadOptions, now: float | None, notes: dict
) -> pl.Series:
    raw = df["timestamp"]
    _raise_missing(df, "timestamp", missing_values(raw), loc)
    ts = parse_timestamps(raw, options.timestamp_format)
    fmt = options.timestamp_format
    if fmt is None and ts.null_count() and raw.dtype == pl.Utf8:
        # day/month/year or month/day/year (12/31/2010 08:26): the order from the values, where they show it
        detected = numeric_date_format(raw.filter(ts.is_null()), loc)
        if detected is not None:
            fmt = detected[0]
            notes["timestamp_format"] = detected
            ts = parse_numeric_dates(raw, fmt).fill_null(ts)
    bad = _first(ts.is_null())
    if bad is not None:
        value = raw[bad]
        if fmt:
            given = "--timestamp-format" if options.timestamp_format else "the date format read from the other rows"
            why = f"does not match {given} {fmt!r}"
        else:
            why = f"accepted: {ACCEPTED_TIMESTAMPS}"
        raise loc.error(f"cannot parse {str(value)!r} as a timestamp ({why})", df, bad, "timestamp")
    try:
        check_not_future(ts.to_numpy(), now, options.max_future_skew_s)
    except FutureTimestampError as e:
        raise loc.error(str(e), df, e.index, "timestamp") from None
    return ts


_NUMERIC_DATE = r"^(\d{1,2})SEP(\d{1,2})SEP(\d{4})([ T]\d{1,2}:\d{2}(:\d{2})?)?$"
_CLOCKS = (" %H:%M:%S", " %H:%M", "T%H:%M:%S", "T%H:%M", "")  # the times a numeric date may carry


def numeric_date_format(values: pl.Series, loc: _Locator) -> tuple[str, str] | None:
    """The strptime date format of day/month/year or month/day/year timestamps (31/12/2010, 12.31.2010 08:26,
    12-31-2010 08:26:00; any of _CLOCKS after it) with the order the values show: a first field above 12 is a
    day, a second one above 12 is a day. None when `values` are not such dates or show both orders; a
    DataError when no value shows the order (every field <= 12). Returns (format, why) for the report."""
    text = values.cast(pl.Utf8).str.strip_chars().drop_nulls()
    if not len(text):
        return None
    for sep in ("/", ".", "-"):
        parts = text.str.extract_groups(_NUMERIC_DATE.replace("SEP", re.escape(sep)))
        if parts.struct.field("3").null_count():
            continue  # not every value is a date with this separator
        a, b = (parts.struct.field(k).cast(pl.Int64) for k in ("1", "2"))
        day_first, month_first = bool((a > 12).any()), bool((b > 12).any())
        day_month, month_day = f"%d{sep}%m{sep}%Y", f"%m{sep}%d{sep}%Y"
        if day_first and month_first:
            return None
        if not (day_first or month_first):
            raise DataError(loc.path, f"timestamps like {text[0]!r} could be day{sep}month{sep}year or month{sep}"
                            f"day{sep}year (no field above 12 says which): give --timestamp-format "
                            f"{day_month!r} or {month_day!r} (with the time, e.g. {day_month + ' %H:%M'!r})",
                            column=loc.column("timestamp"))  # fmt: skip
        if day_first:
            example = text[int((a > 12).arg_true()[0])]
            return day_month, f"day first: {example!r} has a first field above 12"
        example = text[int((b > 12).arg_true()[0])]
        return month_day, f"month first: {example!r} has a second field above 12"
    return None


def parse_numeric_dates(raw: pl.Series, date_format: str) -> pl.Series:
    """parse_timestamps with `date_format` followed by any of _CLOCKS (a time with or without seconds, or none)."""
    tries = pl.DataFrame([parse_timestamps(raw, date_format + c).alias(str(i)) for i, c in enumerate(_CLOCKS)])
    return tries.select(pl.coalesce(tries.columns)).to_series().alias("timestamp")


def parse_timestamps(s: pl.Series, fmt: str | None = None) -> pl.Series:
    """Unix seconds (Int64) from numbers or ISO-8601 strings; null where a value cannot be parsed.

    Numbers: seconds, or milli/micro/nanoseconds when larger than 1e11 / 1e14 / 1e17 (1e11 seconds is
    the year 5138, so the scale is unambiguous per value); fractions are floored.
    Strings: numbers as above, or ISO dates / datetimes ('T' or space, optional fraction, 'Z' or
    +hh:mm offset); naive datetimes are UTC. With `fmt` (strptime codes, e.g. '%d/%m/%Y %H:%M') strings are
    parsed with that format only (naive = UTC unless it has %z).
    """
    name = "timestamp"
    if s.dtype == pl.Date:
        return s.cast(pl.Datetime("us")).dt.epoch("s").alias(name)
    if isinstance(s.dtype, pl.Datetime):
        return s.dt.epoch("s").alias(name)  # naive counts as UTC, aware is absolute already
    if s.dtype.is_numeric():
        return pl.select(_number_to_seconds(pl.lit(s))).to_series().alias(name)
    text = s.cast(pl.Utf8).str.strip_chars()
    frame = pl.DataFrame({"t": text})
    if fmt:
        chrono = fmt.replace(".%f", "%.f")  # strptime's fraction; polars' %f wants exactly 9 digits
        try:
            parsed = frame.select(pl.col("t").str.to_datetime(chrono, strict=False, time_unit="us").dt.epoch("s"))
        except pl.exceptions.PolarsError:  # a format polars cannot use: nothing parses
            return pl.Series(name, [None] * len(s), pl.Int64)
        return parsed.to_series().alias(name)
    numeric = frame.select(_number_to_seconds(pl.col("t"))).to_series()
    if numeric.null_count() == text.null_count():  # all numeric: skip the costlier date parsing
        return numeric.alias(name)
    iso = frame.select(_iso_to_seconds(pl.col("t"))).to_series()
    return numeric.fill_null(iso).alias(name)


# a number above these is nano / micro / milliseconds (1e11 seconds is the year 5138): one rule for every reader
_SCALES = ((10**17, 10**9), (10**14, 10**6), (10**11, 10**3))


def integer_seconds(values: list[int]) -> list[int]:
    """Unix seconds of non-negative integer timestamps, scaled as parse_timestamps scales numbers: the path for a
    few values (an API's event post), where a polars call costs more than the work."""
    return [next((v // d for above, d in _SCALES if v > above), v) for v in values]


def _number_to_seconds(x: pl.Expr) -> pl.Expr:
    as_int = x.cast(pl.Int64, strict=False)
    as_float = x.cast(pl.Float64, strict=False)
    (a9, d9), (a6, d6), (a3, d3) = _SCALES
    scale_int = (
        pl.when(as_int.abs() > a9)
        .then(as_int // d9)
        .when(as_int.abs() > a6)
        .then(as_int // d6)
        .when(as_int.abs() > a3)
        .then(as_int // d3)
        .otherwise(as_int)
    )
    scale_float = (
        pl.when(~as_float.is_finite())
        .then(None)
        .when(as_float.abs() > 1e17)
        .then(as_float / 1e9)
        .when(as_float.abs() > 1e14)
        .then(as_float / 1e6)
        .when(as_float.abs() > 1e11)
        .then(as_float / 1e3)
        .otherwise(as_float)
        .floor()
        .cast(pl.Int64, strict=False)
    )
    # integers exactly (float64 would round nanosecond stamps), floats when the text is not an integer
    return pl.coalesce(scale_int, scale_float)


_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def _iso_to_seconds(x: pl.Expr) -> pl.Expr:
    # normalise the two common variants so a handful of exact formats cover them
    # (BigQuery writes TIMESTAMP columns as '2023-11-30 12:34:56.123 UTC')
    t = x.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T").str.replace(r"(\d)(?:[Zz]| ?UTC)$", "${1}+00:00")
    tries = [t.str.to_datetime(f, strict=False, time_unit="us").dt.epoch("s") for f in _AWARE_FORMATS]
    tries += [t.str.to_datetime(f, strict=False, time_unit="us").dt.epoch("s") for f in _NAIVE_FORMATS]
    return pl.coalesce(tries)
