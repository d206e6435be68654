"""Catalog updates after training: new items (and changed attributes) without retraining.

    catalog, vocab, components = add_catalog_items(bundle, components, catalog, vocab, rows)

rows: a DataFrame with item_id and any of the catalog's columns. An id the vocabulary lacks is appended (the
existing indices never move); every listed item's attribute tokens are read from its row by the sequence
model's saved tokenizer (the bundle's attributes.json), and a new item's vector is its attribute embeddings
alone, exactly what a catalog item without training events gets offline. Components whose item table is
fixed (two-tower towers, rankers' feature tables) cannot take new items: that is a ValueError naming them.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import torch

from genrec.bundle import Bundle, load_attribute_tokenizer
from genrec.data.sequences import Vocab
from genrec.models import SequentialModel


def merge_rows(old: pl.DataFrame | None, new: pl.DataFrame) -> pl.DataFrame:
    """`old` with `new`'s rows replacing those of the same item_id and the others appended; columns unioned."""
    new = new.with_columns(pl.col("item_id").cast(pl.Utf8)).unique("item_id", keep="last", maintain_order=True)
    if old is None:
        return new
    old = old.with_columns(pl.col("item_id").cast(pl.Utf8))
    kept = old.filter(~pl.col("item_id").is_in(new["item_id"].implode()))
    try:
        return pl.concat([kept, new], how="diagonal_relaxed")
    except pl.exceptions.PolarsError as e:
        raise ValueError(f"the rows do not fit the catalog's column types ({e})") from None


def add_catalog_items(
    bundle: Bundle,
    components: dict[str, Any],
    catalog: pl.DataFrame | None,
    vocab: Vocab,
    rows: pl.DataFrame,
) -> tuple[pl.DataFrame, Vocab, dict[str, Any]]:
    """(merged catalog, grown vocabulary, components over the grown catalog); see the module docstring."""
    if "item_id" not in rows.columns:
        raise ValueError("every row needs an item_id")
    fixed = [f"{n} ({bundle.components[n].kind})" for n, c in components.items() if not isinstance(c, SequentialModel)]
    if fixed:
        raise ValueError(
            f"components {', '.join(fixed)} have a fixed item table; new items need a bundle of sequence models"
        )
    merged = merge_rows(catalog, rows)
    ids = rows["item_id"].cast(pl.Utf8).to_list()
    grown = vocab.extend(ids)
    index = torch.tensor([grown.index(i) for i in ids])
    out: dict[str, Any] = {}
    for name, model in components.items():
        if bundle.components[name].kind == "ensemble":
            raise ValueError(f"component {name} is an ensemble: new items need a bundle of single sequence models")
        tokenizer = load_attribute_tokenizer(bundle, name)
        if tokenizer is None or model.attr_emb is None:
            raise ValueError(f"component {name} was trained without item attributes (--item-attributes)")
        new = torch.from_numpy(tokenizer.encode(rows))  # (len(rows), A')
        old = model.item_attrs  # (num_items + 1, A)
        table = torch.zeros(len(grown) + 1, max(old.shape[1], new.shape[1]), dtype=torch.long)
        table[: old.shape[0], : old.shape[1]] = old
        table[index] = 0
        table[index, : new.shape[1]] = new
        out[name] = model.with_item_attributes(table)
    return merged, grown, out
