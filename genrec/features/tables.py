"""User and item side tables of the named datasets, encoded with training-only statistics.

Raw attributes per dataset (row = item index 0..num_items, row 0 = padding; users 0..num_users-1):
    ml-1m          items: genres (multi-hot), year (numeric), decade, first genre      users.dat: gender, age,
                   occupation, zip prefix (3 digits), mapped through sas_to_original_users.txt
    ml-100k        u.item: genres (multi-hot), release year, decade                   u.user: gender, age (numeric
                   and bucket), occupation, zip prefix
    amazon-beauty  Beauty_item2attributes.json: attributes (multi-hot, brand + categories; unnamed ids)
    synthetic      catalog: category, brand, price (log), in_stock                    users: region, age_group
    PATH           any catalog columns (Dataset.attributes, `--attributes`; default: all but ids and free text):
                   text -> categorical, lists (or 'a|b' text) -> multi-hot, numbers -> numeric (log when >= 0),
                   which sequence models see as quantile buckets; booleans -> categorical
Every item also gets its training-event count (log, numeric) as a popularity feature. Vocabularies and
scalers are fitted on the items that occur in training events (and on all users, whose attributes are
static); an item that only appears in valid/test falls into the reserved bucket of each categorical feature.
`category` (num_items + 1,) is the id the re-ranker's per-category cap uses.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from genrec.data.datasets import Dataset, data_dir
from genrec.data.io import DataError
from genrec.data.sequences import Split
from genrec.features.covisit import CoVisitation
from genrec.features.encoders import CategoryEncoder, NumericScaler


@dataclass
class RawTable:
    """Unencoded attributes of N entities: categorical str|None, multi-valued lists of str, numeric (NaN = missing)."""

    n: int
    cat: dict[str, list[str | None]] = field(default_factory=dict)
    multi: dict[str, list[list[str]]] = field(default_factory=dict)
    num: dict[str, np.ndarray] = field(default_factory=dict)
    log_num: set[str] = field(default_factory=set)  # numeric columns scaled after log1p
    bucketed: set[str] = field(default_factory=set)  # numeric columns sequence models see as quantile tokens


@dataclass
class EntityTable:
    """Encoded attributes, row = entity index. Ids are 0 for the reserved unseen/missing bucket."""

    cat: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) int64
    multi: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (values, offsets (N+1,))
    num: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N,) float32, standardised
    sizes: dict[str, int] = field(default_factory=dict)  # name -> table rows (incl. bucket 0)


def encode_table(raw: RawTable, fit_rows: np.ndarray, min_count: int = 1) -> EntityTable:
    """Fit every encoder on `fit_rows` (training entities) only, then encode all N rows."""
    out = EntityTable()
    for name, col in raw.cat.items():
        enc = CategoryEncoder(min_count).fit(col[i] for i in fit_rows)
        out.cat[name], out.sizes[name] = enc.transform(col), enc.size
    for name, lists in raw.multi.items():
        enc = CategoryEncoder(min_count).fit(v for i in fit_rows for v in lists[i])
        lengths = np.array([len(x) for x in lists], np.int64)
        offsets = np.zeros(raw.n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        out.multi[name] = (enc.transform([v for x in lists for v in x]), offsets)
        out.sizes[name] = enc.size
    for name, x in raw.num.items():
        sc = NumericScaler(log=name in raw.log_num).fit(x[fit_rows])
        out.num[name] = sc.transform(x)
    return out


@dataclass
class FeatureTables:
    users: EntityTable
    items: EntityTable
    category: np.ndarray  # (num_items + 1,) int64 category id for diversity rules (0 = none)
    num_items: int
    num_users: int
    has_time: bool  # request-time context (hour, weekday) is available
    num_event_types: int  # 0 when the log has no event types
    covisit: CoVisitation | None = None  # item -> next-item counts of the training sequences


def _year(title: str) -> float:
    m = re.search(r"\((\d{4})\)\s*$", title.strip())
    return float(m.group(1)) if m else np.nan


def _item_rows(ds: Dataset, col: str = "item_id") -> np.ndarray:
    """Catalog row -> item index (0 when the catalog lists an item the events never mention)."""
    assert ds.catalog is not None
    vocab = ds.sequences.item_vocab
    return np.array([vocab.index(str(i)) for i in ds.catalog[col].to_list()], np.int64)


def _scatter(n: int, rows: np.ndarray, values: list, fill: object) -> list:
    out = [fill] * n
    for r, v in zip(rows.tolist(), values, strict=True):
        if r:
            out[r] = v
    return out


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line) of the non-blank lines of a latin-1 text file."""
    if not path.exists():
        raise FileNotFoundError(f"feature file {path} is missing; set GENREC_DATA_DIR to the data folder")
    return [(i, ln) for i, ln in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1) if ln.strip()]


def _ml1m(ds: Dataset, root: Path) -> tuple[RawTable, RawTable, list]:
    n_items, seq = ds.sequences.num_items + 1, ds.sequences
    items = RawTable(n_items)
    if ds.catalog is None:
        raise FileNotFoundError(f"ml-1m features need {root}/ml-1m/original/movies.dat and the SASRec id maps")
    rows = _item_rows(ds)
    genres = [g.split("|") for g in ds.catalog["genres"].to_list()]
    years = [_year(t) for t in ds.catalog["title"].to_list()]
    items.multi["genres"] = _scatter(n_items, rows, genres, [])
    year = np.array(_scatter(n_items, rows, years, np.nan), np.float64)
    items.num["year"] = year
    items.cat["decade"] = [None if np.isnan(y) else str(int(y) // 10 * 10) for y in year]
    items.cat["genre"] = _scatter(n_items, rows, [g[0] for g in genres], None)
    # users.dat (original ids) -> SASRec user ids (the dataset's user vocabulary)
    users = RawTable(seq.num_users)
    mapping = {}
    for i, ln in _read_lines(root / "ml-1m/sasrec/sas_to_original_users.txt"):
        parts = ln.split()
        if len(parts) != 2:
            raise DataError(
                root / "ml-1m/sasrec/sas_to_original_users.txt", "expected 'sasrec_user original_user'", row=i
            )
        mapping[parts[1]] = parts[0]
    attrs: dict[str, list[str]] = {}
    path = root / "ml-1m/original/users.dat"
    for i, ln in _read_lines(path):
        p = ln.split("::")
        if len(p) != 5:
            raise DataError(path, "expected UserID::Gender::Age::Occupation::Zip-code", row=i)
        attrs[mapping.get(p[0], "")] = p[1:]
    rec = [attrs.get(u, [None] * 4) for u in seq.user_vocab.ids]
    for j, name in enumerate(("gender", "age", "occupation")):
        users.cat[name] = [r[j] for r in rec]
    users.cat["zip3"] = [r[3][:3] if r[3] else None for r in rec]
    return items, users, items.cat["genre"]


def _ml100k(ds: Dataset, root: Path) -> tuple[RawTable, RawTable, list]:
    seq = ds.sequences
    n_items = seq.num_items + 1
    items = RawTable(n_items)
    genre_names = [ln.split("|")[0] for _, ln in _read_lines(root / "ml-100k/u.genre")]
    path = root / "ml-100k/u.item"
    genres, years, first = [[] for _ in range(n_items)], np.full(n_items, np.nan), [None] * n_items
    for i, ln in _read_lines(path):
        p = ln.split("|")
        if len(p) < 5 + len(genre_names):
            raise DataError(path, f"expected {5 + len(genre_names)} '|'-separated fields", row=i)
        r = seq.item_vocab.index(p[0])
        if r:
            genres[r] = [g for g, f in zip(genre_names, p[5:], strict=False) if f == "1"]
            first[r] = genres[r][0] if genres[r] else None
            m = re.search(r"(\d{4})$", p[2])
            years[r] = float(m.group(1)) if m else np.nan
    items.multi["genres"], items.num["year"], items.cat["genre"] = genres, years, first
    items.cat["decade"] = [None if np.isnan(y) else str(int(y) // 10 * 10) for y in years]
    users = RawTable(seq.num_users)
    path = root / "ml-100k/u.user"
    attrs = {}
    for i, ln in _read_lines(path):
        p = ln.split("|")
        if len(p) != 5:
            raise DataError(path, "expected id|age|gender|occupation|zip", row=i)
        attrs[p[0]] = p[1:]
    rec = [attrs.get(u, [None] * 4) for u in seq.user_vocab.ids]
    age = np.array([float(r[0]) if r[0] else np.nan for r in rec])
    users.num["age"] = age
    users.cat["age_bucket"] = [None if np.isnan(a) else str(int(a) // 10) for a in age]
    users.cat["gender"] = [r[1] for r in rec]
    users.cat["occupation"] = [r[2] for r in rec]
    users.cat["zip3"] = [r[3][:3] if r[3] else None for r in rec]
    return items, users, first


def _beauty(ds: Dataset, root: Path) -> tuple[RawTable, RawTable, list]:
    n_items = ds.sequences.num_items + 1
    items = RawTable(n_items)
    if ds.catalog is None:
        raise FileNotFoundError(f"amazon-beauty features need {root}/amazon-beauty/Beauty_item2attributes.json")
    rows = _item_rows(ds)
    attrs = [[str(a) for a in v] for v in ds.catalog["attributes"].to_list()]
    items.multi["attributes"] = _scatter(n_items, rows, attrs, [])
    # category for the diversity cap: the item's most widespread attribute (a broad category such as
    # "Makeup"; attribute names are not published, brands are narrow, so the broadest one is the category)
    df = {}
    for a in attrs:
        for x in a:
            df[x] = df.get(x, 0) + 1
    broad = [max(a, key=lambda x: (df[x], x)) if a else None for a in attrs]
    items.cat["broad_attribute"] = _scatter(n_items, rows, broad, None)
    return items, RawTable(ds.sequences.num_users), items.cat["broad_attribute"]


NUM_BUCKETS = 10  # quantile buckets of a numeric attribute, as sequence-model tokens
_ID_NAME = re.compile(r"(^|_)(id|ids|sku|uuid|url|ean|upc|gtin|isbn)$", re.IGNORECASE)


def catalog_attributes(catalog: pl.DataFrame, chosen: tuple[str, ...] | None = None) -> list[str]:
    """The catalog columns used as attributes: `chosen`, else every column except item_id, id-like names
    (*_id, sku, url, ...), records (JSON objects: Amazon's `details`, `images`) and free text (titles,
    descriptions, lists of feature sentences: text with a distinct value for most of more than 20 values
    teaches nothing its item id does not)."""
    if chosen is not None:
        return [c for c in chosen if c != "item_id"]
    out = []
    for col in catalog.columns:
        s = catalog[col]
        if col == "item_id" or _ID_NAME.search(col) or s.null_count() == len(s) or _holds_records(s.dtype):
            continue
        if isinstance(s.dtype, pl.List | pl.Array):
            values = s
            while isinstance(values.dtype, pl.List | pl.Array):  # Amazon 2014's categories: lists of lists
                values = values.explode()
            values = values.drop_nulls()
        elif s.dtype == pl.Utf8 and _is_list_text(s):
            values = pl.Series([v for x in _as_lists(s) for v in x], dtype=pl.Utf8)
        elif s.dtype == pl.Utf8:
            values = s.drop_nulls()
        else:
            out.append(col)
            continue
        distinct = values.n_unique()
        if len(values) and not (distinct > 20 and distinct > 0.5 * len(values)):
            out.append(col)
    return out


def _holds_records(dtype: pl.DataType) -> bool:
    """A struct, or lists of them: nothing one attribute value can stand for (lists of lists of values are
    flattened into one list per item)."""
    if isinstance(dtype, pl.Struct):
        return True
    return isinstance(dtype, pl.List | pl.Array) and _holds_records(dtype.inner)


def _is_list_text(s: pl.Series) -> bool:
    """Text holding lists: JSON arrays ('["a", "b"]') or '|'-joined values ('Action|Comedy')."""
    t = s.drop_nulls().str.strip_chars()
    if len(t) == 0:
        return False
    if bool(t.str.starts_with("[").all() and t.str.ends_with("]").all()):
        return True
    return bool(t.str.contains("|", literal=True).any())


def _flatten(x: list) -> list:
    return [v for item in x for v in (_flatten(item) if isinstance(item, list) else [item])]


def _as_lists(s: pl.Series) -> list[list[str]]:
    if isinstance(s.dtype, pl.List | pl.Array):
        return [list(dict.fromkeys(str(v) for v in _flatten(x) if v is not None)) if x is not None else []
                for x in s.to_list()]  # fmt: skip
    t = s.cast(pl.Utf8).str.strip_chars()
    if bool(t.drop_nulls().str.starts_with("[").all()):  # JSON arrays
        return [[str(v).strip() for v in json.loads(x)] if x else [] for x in t.to_list()]
    return [[v.strip() for v in x.split("|") if v.strip()] if x else [] for x in t.to_list()]


def _catalog_items(ds: Dataset, items: RawTable) -> list:
    """Fill `items` from the catalog's attribute columns; returns the category per item (diversity cap)."""
    assert ds.catalog is not None
    n_items = items.n
    rows = _item_rows(ds)
    cat = ds.catalog
    for col in catalog_attributes(cat, ds.attributes):
        s = cat[col]
        if _holds_records(s.dtype):
            raise ValueError(f"catalog column {col!r} holds records (JSON objects or nested lists), not attribute "
                             "values: flatten it into columns or leave it out of --attributes")  # fmt: skip
        if isinstance(s.dtype, pl.List | pl.Array) or (s.dtype == pl.Utf8 and _is_list_text(s)):
            try:
                items.multi[col] = _scatter(n_items, rows, _as_lists(s), [])
            except (json.JSONDecodeError, TypeError) as e:
                raise ValueError(f"catalog column {col!r}: cannot read its lists ({e})") from None
        elif s.dtype.is_numeric():
            x = s.cast(pl.Float64).fill_nan(None).to_numpy()  # nulls -> NaN
            items.num[col] = np.array(_scatter(n_items, rows, list(x), np.nan), np.float64)
            if np.nanmin(x, initial=0.0) >= 0:
                items.log_num.add(col)
            items.bucketed.add(col)
        else:  # text, booleans, dates: categories
            items.cat[col] = _scatter(n_items, rows, s.cast(pl.Utf8).to_list(), None)
    if "category" in cat.columns:
        return items.cat.get("category") or _scatter(n_items, rows, cat["category"].cast(pl.Utf8).to_list(), None)
    return [None] * n_items


def _catalog_generic(ds: Dataset) -> tuple[RawTable, RawTable, list]:
    seq = ds.sequences
    n_items = seq.num_items + 1
    items = RawTable(n_items)
    category: list = [None] * n_items
    if ds.catalog is not None:
        category = _catalog_items(ds, items)
    users = RawTable(seq.num_users)
    if ds.users is not None:
        u_rows = np.array([seq.user_vocab.index(str(u)) - 1 for u in ds.users["user_id"].to_list()], np.int64)
        for col in ds.users.columns:
            if col != "user_id":
                vals = ds.users[col].cast(pl.Utf8).to_list()
                out: list = [None] * seq.num_users
                for r, v in zip(u_rows.tolist(), vals, strict=True):
                    if r >= 0:
                        out[r] = v
                users.cat[col] = out
    return items, users, category


def raw_tables(ds: Dataset, root: Path | None = None) -> tuple[RawTable, RawTable, list]:
    """(items, users, category per item) for a loaded dataset, chosen by its name."""
    root = root or data_dir()
    name = ds.kind or ds.sequences.name
    if name == "ml-1m":
        return _ml1m(ds, root)
    if name == "ml-100k":
        return _ml100k(ds, root)
    if name == "amazon-beauty":
        return _beauty(ds, root)
    return _catalog_generic(ds)


def build_feature_tables(ds: Dataset, split: Split, root: Path | None = None) -> FeatureTables:
    """Encode a dataset's side tables with statistics of the training events only."""
    seq = ds.sequences
    items_raw, users_raw, category = raw_tables(ds, root)
    counts = np.bincount(split.train_items, minlength=seq.num_items + 1).astype(np.float64)
    items_raw.num["popularity"] = counts
    items_raw.log_num.add("popularity")
    train_items = np.flatnonzero(counts > 0)
    items = encode_table(items_raw, train_items)
    users = encode_table(users_raw, np.arange(seq.num_users))
    cat_enc = CategoryEncoder().fit(category[i] for i in train_items)
    return FeatureTables(
        users=users,
        items=items,
        category=cat_enc.transform(category),
        num_items=seq.num_items,
        num_users=seq.num_users,
        has_time=seq.timestamps is not None,
        num_event_types=len(seq.event_vocab) if seq.event_vocab is not None else 0,
        covisit=CoVisitation.from_split(split),
    )


@dataclass
class AttributeField:
    """One attribute as tokens: its values (token base + 1 + position), read from the catalog column `column`."""

    name: str
    kind: str  # "cat" | "multi" | "bucket" (a number as quantile tokens)
    column: str
    values: list[str]
    base: int
    edges: list[float] = field(default_factory=list)  # bucket: quantile edges of the training items' values


@dataclass
class AttributeTokenizer:
    """Item attributes -> sequence-model tokens, with the vocabularies of the training items. Saved in a bundle
    (to_dict), it tokenizes a catalog row of an item added after training exactly as training did. An attribute
    that a dataset derives instead of reading a column (Beauty's broad attribute, ML-1M's decade) is left out
    for such rows."""

    fields: list[AttributeField]
    size: int  # token vocabulary (token 0 = none)

    @classmethod
    def fit(cls, raw: RawTable, fit_rows: np.ndarray) -> AttributeTokenizer:
        fields, base = [], 0
        for name in raw.cat:
            enc = CategoryEncoder().fit(raw.cat[name][i] for i in fit_rows)
            fields.append(AttributeField(name, "cat", name, list(enc.vocab), base))
            base += enc.size
        for name in sorted(raw.bucketed):  # numbers as quantile buckets, edges from training items
            x = raw.num[name][fit_rows]
            seen = x[~np.isnan(x)]
            if len(seen) == 0:
                continue
            edges = np.unique(np.quantile(seen, np.linspace(0, 1, NUM_BUCKETS + 1)[1:-1]))
            buckets = _buckets(raw.num[name], edges.tolist())  # once: per fitted row it was quadratic
            enc = CategoryEncoder().fit(buckets[i] for i in fit_rows)
            fields.append(AttributeField(f"{name}_bucket", "bucket", name, list(enc.vocab), base, edges.tolist()))
            base += enc.size
        for name in raw.multi:
            enc = CategoryEncoder().fit(v for i in fit_rows for v in raw.multi[name][i])
            fields.append(AttributeField(name, "multi", name, list(enc.vocab), base))
            base += enc.size
        return cls(fields, base)

    def tokens(self, raw: RawTable) -> np.ndarray:
        """(raw.n, A) int64 tokens per row, 0-padded; values never seen in training get no token."""
        rows, toks = [], []  # (row, token) pairs, attribute by attribute
        for f in self.fields:
            code = {v: f.base + 1 + i for i, v in enumerate(f.values)}
            if f.kind == "multi":
                lists = raw.multi.get(f.column)
                if lists is None:
                    continue
                rows.append(np.repeat(np.arange(raw.n), [len(x) for x in lists]))
                toks.append(np.array([code.get(v, 0) for x in lists for v in x], np.int64))
                continue
            if f.kind == "bucket":
                if f.column not in raw.num:
                    continue
                values = _buckets(raw.num[f.column], f.edges)
            elif f.column in raw.cat:
                values = raw.cat[f.column]
            else:
                continue
            rows.append(np.arange(raw.n))
            toks.append(np.array([code.get(v, 0) if v is not None else 0 for v in values], np.int64))
        row, tok = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (rows, toks))
        row, tok = row[tok > 0], tok[tok > 0]
        order = np.argsort(row, kind="stable")
        row, tok = row[order], tok[order]
        counts = np.bincount(row, minlength=raw.n)
        col = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)  # slot within the item's row
        out = np.zeros((raw.n, max(int(counts.max(initial=0)), 1)), np.int64)
        out[row, col] = tok
        return out

    def encode(self, catalog: pl.DataFrame) -> np.ndarray:
        """(len(catalog), A) tokens of catalog rows (e.g. items added after training), read as training read
        its catalog's columns; a column the rows lack gives no token."""
        raw = RawTable(catalog.height)
        for f in self.fields:
            if f.column not in catalog.columns:
                continue
            s = catalog[f.column]
            try:
                if f.kind == "multi":
                    raw.multi[f.column] = _as_lists(s)
                elif f.kind == "bucket":
                    raw.num[f.column] = s.cast(pl.Float64, strict=False).fill_nan(None).fill_null(np.nan).to_numpy()
                else:
                    raw.cat[f.column] = s.cast(pl.Utf8).to_list()
            except (json.JSONDecodeError, TypeError, pl.exceptions.PolarsError) as e:
                raise ValueError(f"catalog column {f.column!r}: cannot read it as {f.kind} ({e})") from None
        return self.tokens(raw)

    def to_dict(self) -> dict:
        return {"size": self.size, "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, d: dict) -> AttributeTokenizer:
        return cls([AttributeField(**f) for f in d["fields"]], int(d["size"]))


def _buckets(x: np.ndarray, edges: list[float]) -> list[str | None]:
    bucket = np.searchsorted(np.asarray(edges, np.float64), x, side="right")
    return [None if np.isnan(v) else f"q{b}" for v, b in zip(x, bucket, strict=True)]


def item_attribute_tokens(ds: Dataset, split: Split, root: Path | None = None) -> tuple[np.ndarray, AttributeTokenizer]:
    """Every categorical and multi-valued item attribute as one token vocabulary, for sequence models.

    Returns ((num_items + 1, A) int64 tokens per item, 0-padded; the tokenizer, whose .size is the vocabulary).
    Each attribute gets its own id range; vocabularies are fitted on items seen in training events, so unseen
    values map to no token, and an item without events (catalog only) gets the tokens of its seen values.
    """
    items_raw, _, _ = raw_tables(ds, root)
    counts = np.bincount(split.train_items, minlength=ds.sequences.num_items + 1)
    tokenizer = AttributeTokenizer.fit(items_raw, np.flatnonzero(counts > 0))
    if tokenizer.size == 0:
        if ds.catalog is None:
            raise ValueError(
                "--item-attributes needs a catalog: pass --catalog PATH (or put catalog.* beside the events)"
            )
        raise ValueError(
            "--item-attributes: the catalog has no attribute columns to use "
            f"(its columns: {', '.join(ds.catalog.columns)}); name some with --attributes"
        )
    return tokenizer.tokens(items_raw), tokenizer
