"""Read and validate user-supplied event logs and item catalogs.

Files are CSV / TSV (optionally .gz), Parquet, or JSON lines. Every problem becomes one DataError that
names the file, the row as the user would find it (CSV: the physical line, header = line 1; JSONL: the
line; Parquet: the 1-based row) and the column, e.g.

    events.csv, line 7, column 'timestamp': cannot parse '2023-13-45' as a timestamp

Text columns are read as strings and parsed with vectorised polars expressions, so a malformed value is
reported instead of being silently coerced, and a 10M-row file never goes through a Python loop. Only the
error paths (finding the line of a broken JSON record) walk the file in Python.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

EVENT_REQUIRED = ("user_id", "item_id", "timestamp")
EVENT_OPTIONAL = ("event_type", "value")
_ROW = "__genrec_row__"  # 0-based record index kept through filtering, for error messages

# (suffix, format); longest suffixes first so ".csv.gz" wins over ".gz"
_FORMATS = (
    (".csv.gz", "csv"),
    (".tsv.gz", "tsv"),
    (".csv", "csv"),
    (".tsv", "tsv"),
    (".parquet", "parquet"),
    (".pq", "parquet"),
    (".jsonl", "jsonl"),
    (".ndjson", "jsonl"),
)
_SEPARATORS = {"csv": ",", "tsv": "\t"}


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


def read_events(path: str | Path) -> pl.DataFrame:
    """Validated event log in file order.

    Columns: user_id (Utf8), item_id (Utf8), timestamp (Int64 unix seconds), plus event_type (Utf8) and
    value (Float64) when the file has them. Raises DataError on the first problem found.
    """
    path = Path(path)
    fmt = _format_of(path)
    # Text formats: every event column as a string, parsed below. Parquet keeps its (unambiguous) types.
    df = _read_table(path, fmt, EVENT_REQUIRED, strings=EVENT_REQUIRED + EVENT_OPTIONAL, infer=False)
    loc = _Locator(path, fmt)

    out = {}
    for col in ("user_id", "item_id"):
        out[col] = _parse_ids(df, col, loc)
    out["timestamp"] = _parse_timestamp_column(df, loc)
    if "event_type" in df.columns:
        out["event_type"] = _parse_ids(df, "event_type", loc)
    if "value" in df.columns:
        out["value"] = _parse_values(df, loc)
    return pl.DataFrame(out)


def read_catalog(path: str | Path) -> pl.DataFrame:
    """Validated item catalog: item_id (Utf8, non-null, unique) first, attribute columns as inferred."""
    path = Path(path)
    fmt = _format_of(path)
    # item_id stays text (ids like "007" must not become 7); attributes get polars' full-file inference
    df = _read_table(path, fmt, ("item_id",), strings=("item_id",), infer=True)
    loc = _Locator(path, fmt)
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


# ---------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------


def _format_of(path: Path) -> str:
    name = path.name.lower()
    fmt = next((f for suffix, f in _FORMATS if name.endswith(suffix)), None)
    if fmt is None:
        known = ", ".join(s for s, _ in _FORMATS)
        raise DataError(path, f"unsupported file type (expected one of {known})")
    if not path.is_file():
        raise DataError(path, f"file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    return fmt


def _read_table(path: Path, fmt: str, required: tuple[str, ...], strings: tuple[str, ...], infer: bool) -> pl.DataFrame:
    """Raw table with a _ROW column (0-based record index), checked for emptiness and required columns.

    Columns in `strings` are read as Utf8. `infer` keeps every column with polars' full-file type
    inference (catalog attributes); without it other text columns are strings too, and Parquet/JSONL
    reads are narrowed to the `strings` columns (event logs)."""
    try:
        if fmt in _SEPARATORS:
            df = _read_csv(path, _SEPARATORS[fmt], strings, infer)
            names = [c for c in df.columns if c != _ROW]
        else:
            scan = pl.scan_parquet if fmt == "parquet" else pl.scan_ndjson
            names = scan(path).collect_schema().names()
            keep = names if infer else [c for c in names if c in strings]
            if fmt == "parquet":
                lf = pl.scan_parquet(path, row_index_name=_ROW)
            else:
                lf = pl.scan_ndjson(
                    path,
                    schema_overrides={c: pl.Utf8 for c in strings if c in names},
                    infer_schema_length=None if infer else 100,
                    row_index_name=_ROW,
                )
            df = lf.select(_ROW, *keep).collect()
    except pl.exceptions.NoDataError:
        raise DataError(path, "file is empty (no header and no rows)") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as e:
        raise _explain_read_failure(path, fmt, e) from e
    if df.height == 0:
        raise DataError(path, "file has no data rows")
    _require_columns(names, path, required)
    return df


def _read_csv(path: Path, sep: str, strings: tuple[str, ...], infer: bool) -> pl.DataFrame:
    df = pl.read_csv(
        path,
        separator=sep,
        infer_schema=infer,
        infer_schema_length=None,  # only used when infer=True: scan the whole file, never guess
        schema_overrides={c: pl.Utf8 for c in strings},
        row_index_name=_ROW,
    )
    df = df.rename({c: c.strip() for c in df.columns})
    data = [c for c in df.columns if c != _ROW]
    # polars fills a row that has too FEW fields with nulls; such a row always nulls the last column
    if data and df[data[-1]].null_count():
        ragged = _find_ragged_line(path, sep, len(data))
        if ragged is not None:
            line, found = ragged
            raise DataError(path, f"expected {len(data)} fields, found {found}", row=line)
    # blank lines carry no data: drop them (polars reads them as all-null rows)
    return df.filter(~pl.all_horizontal(pl.col(data).is_null()))


def _explain_read_failure(path: Path, fmt: str, e: Exception) -> DataError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if fmt in _SEPARATORS and "fields" in msg:  # polars: "found more fields than defined in 'Schema'"
        sep = _SEPARATORS[fmt]
        header = pl.read_csv(path, separator=sep, n_rows=0, infer_schema=False).columns
        ragged = _find_ragged_line(path, sep, len(header))
        if ragged is not None:
            return DataError(path, f"expected {len(header)} fields, found {ragged[1]}", row=ragged[0])
    if fmt == "jsonl":
        line = _first_bad_json_line(path)
        if line is not None:
            return DataError(path, f"not a valid JSON object ({msg})", row=line)
        if "empty" in msg:
            return DataError(path, "file is empty (no JSON records)")
    return DataError(path, f"cannot read as {fmt.upper()}: {msg}")


def _find_ragged_line(path: Path, sep: str, ncols: int) -> tuple[int, int] | None:
    """(1-based line, field count) of the first line whose field count is not ncols, or None.

    Vectorised: read raw lines, drop quoted sections, count separators. Lines inside a multi-line
    quoted field (odd number of quotes) cannot be judged this way and are skipped."""
    lines = pl.read_csv(
        path, has_header=False, separator="\x00", quote_char=None, infer_schema=False, new_columns=["s"]
    ).with_row_index("i")
    s = pl.col("s").str.strip_chars_end("\r")
    unquoted = s.str.replace_all(r'"[^"]*"', "")
    fields = unquoted.str.count_matches(sep, literal=True) + 1
    bad = lines.select(
        pl.col("i"), fields.alias("n"), (s.str.count_matches('"', literal=True) % 2 == 0).alias("even")
    ).filter(pl.col("n").is_not_null() & pl.col("even") & (pl.col("n") != ncols) & (pl.col("i") > 0))
    if bad.height == 0:
        return None
    return int(bad["i"][0]) + 1, int(bad["n"][0])


def _first_bad_json_line(path: Path) -> int | None:
    """Error path only: the first line that is not a JSON object."""
    with open(path, encoding="utf-8", errors="replace") as f:
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
    """Turns a 0-based record index into the number a user sees in the file."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.unit = "row" if fmt == "parquet" else "line"

    def number(self, df: pl.DataFrame, i: int) -> int:
        r = int(df[_ROW][i])  # record index in the file (blank CSV lines were filtered out of df)
        if self.fmt == "parquet":
            return r + 1
        if self.fmt == "jsonl":  # polars skips blank lines, so count them (error path only)
            return _jsonl_line_of_record(self.path, r)
        return r + 2  # CSV: header is line 1; assumes no newlines inside quoted fields

    def error(self, message: str, df: pl.DataFrame, i: int, column: str) -> DataError:
        return DataError(self.path, message, row=self.number(df, i), column=column, unit=self.unit)


def _jsonl_line_of_record(path: Path, record: int) -> int:
    seen = -1
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, start=1):
            seen += bool(line.strip())
            if seen == record:
                return i
    return record + 1


def _require_columns(found: list[str], path: Path, required: tuple[str, ...]) -> None:
    for col in required:
        if col not in found:
            listed = ", ".join(repr(c) for c in found)
            raise DataError(path, f"missing required column (found columns: {listed})", column=col)


# ---------------------------------------------------------------------------------------------------
# parsing, vectorised; each returns the clean column or raises on the first bad row
# ---------------------------------------------------------------------------------------------------


def _first(mask: pl.Series) -> int | None:
    idx = mask.arg_true()
    return int(idx[0]) if len(idx) else None


def _parse_ids(df: pl.DataFrame, col: str, loc: _Locator) -> pl.Series:
    """Non-empty strings with surrounding whitespace removed (so 'a, b' CSV spacing still matches)."""
    s = df[col]
    if s.dtype != pl.Utf8:
        s = s.cast(pl.Utf8)
    s = s.str.strip_chars()
    bad = _first(s.is_null() | (s == ""))
    if bad is not None:
        raise loc.error(f"missing {col}", df, bad, col)
    return s


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


def _parse_timestamp_column(df: pl.DataFrame, loc: _Locator) -> pl.Series:
    raw = df["timestamp"]
    ts = parse_timestamps(raw)
    bad = _first(ts.is_null())
    if bad is not None:
        value = raw[bad]
        if value is None or (isinstance(value, str) and not value.strip()):
            raise loc.error("missing timestamp", df, bad, "timestamp")
        raise loc.error(f"cannot parse {str(value)!r} as a timestamp", df, bad, "timestamp")
    return ts


def parse_timestamps(s: pl.Series) -> pl.Series:
    """Unix seconds (Int64) from numbers or ISO-8601 strings; null where a value cannot be parsed.

    Numbers: seconds, or milli/micro/nanoseconds when larger than 1e11 / 1e14 / 1e17 (1e11 seconds is
    the year 5138, so the scale is unambiguous per value); fractions are floored.
    Strings: numbers as above, or ISO dates / datetimes ('T' or space, optional fraction, 'Z' or
    +hh:mm offset); naive datetimes are UTC.
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
    numeric = frame.select(_number_to_seconds(pl.col("t"))).to_series()
    if numeric.null_count() == text.null_count():  # all numeric: skip the costlier date parsing
        return numeric.alias(name)
    iso = frame.select(_iso_to_seconds(pl.col("t"))).to_series()
    return numeric.fill_null(iso).alias(name)


def _number_to_seconds(x: pl.Expr) -> pl.Expr:
    as_int = x.cast(pl.Int64, strict=False)
    as_float = x.cast(pl.Float64, strict=False)
    scale_int = (
        pl.when(as_int.abs() > 10**17)
        .then(as_int // 10**9)
        .when(as_int.abs() > 10**14)
        .then(as_int // 10**6)
        .when(as_int.abs() > 10**11)
        .then(as_int // 10**3)
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
    t = x.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T").str.replace(r"(\d)[Zz]$", "${1}+00:00")
    tries = [t.str.to_datetime(f, strict=False, time_unit="us").dt.epoch("s") for f in _AWARE_FORMATS]
    tries += [t.str.to_datetime(f, strict=False, time_unit="us").dt.epoch("s") for f in _NAIVE_FORMATS]
    return pl.coalesce(tries)
