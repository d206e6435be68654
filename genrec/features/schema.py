"""What a model's inputs look like: dense column names and the sparse embedding tables their keys read.

A model never sees raw ids: it gets a TorchRec KeyedJaggedTensor whose keys are feature names, and it
declares the embedding tables those keys look up. Keeping every table in an EmbeddingBagCollection lets a
later scale-out step shard them (row- or table-wise) without touching the model code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TableSpec:
    """One embedding table: `num_embeddings` rows (row 0 = unseen/missing bucket) read by `features`."""

    name: str  # table name; prefixed "t_" so it never collides with a feature name
    num_embeddings: int
    features: list[str]
    pooling: str = "sum"  # "sum" | "mean": how a multi-valued feature's rows are pooled
    wide_only: bool = False  # crossed features: only the wide (linear) part reads them


@dataclass
class FeatureSchema:
    """What a model's inputs look like: `dense` column names and the sparse tables."""

    dense: list[str]
    tables: list[TableSpec] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSchema:
        return cls(dense=list(d["dense"]), tables=[TableSpec(**t) for t in d["tables"]])

    def sparse_keys(self, include_wide_only: bool = True) -> list[str]:
        return [f for t in self.tables if include_wide_only or not t.wide_only for f in t.features]
