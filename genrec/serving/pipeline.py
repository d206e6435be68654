"""The pipeline the API serves: a genrec.pipeline.Pipeline loaded from a bundle, plus serving's own bits.

    model = ServingModel.load("runs/shop", config)        # a bundle folder (genrec/bundle.py)
    ctx = model.context(user_id, k=10, live=store.history(user_id, 1000), filters=..., ...)
    cands = model.run(ctx)                                 # candidates + per-stage timings in ctx.timings

The stages are the bundle's declared pipeline (manifest["pipeline"]: retrieve -> popular -> rank -> rerank,
see genrec/pipeline/pipeline.py), the very objects `genrec pipeline evaluate` scores offline. A serving config
can replace them with its own [[stages]] list (names: retrieval | popular | rerank, or a factory
"package.module:make_stage" called as make_stage(model, **options); see genrec.serving.hstu_rank_stage) and
its [rules] replace the bundle's rerank rules. Catalog updates (new items, changed attributes) load the bundle
again with the rows applied (ServingModel.load(..., catalog_updates=rows)) and are swapped in like a reload. Each stage's name keys its latency histogram and the `stage`
field of returned items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from genrec.pipeline.core import Candidates, Catalog, Filters, History, RequestContext, RequestError, Stage
from genrec.pipeline.pipeline import Pipeline, register_stage
from genrec.serving.config import ServeConfig
from genrec.serving.recommender import Recommender

__all__ = [
    "Candidates",
    "Catalog",
    "Filters",
    "History",
    "RequestContext",
    "RequestError",
    "ServingModel",
    "Stage",
    "register_stage",
]


class ServingModel(Pipeline):
    """A bundle's Pipeline as served; immutable once built, so a reload swaps one reference."""

    run_dir: Path
    rec: Recommender | None  # the first sequence model (CLI-style top-k), None when the bundle has none

    catalog_updates: pl.DataFrame | None  # catalog rows added or changed since training (POST /v1/admin/catalog)

    @classmethod
    def load(
        cls, run_dir: str | Path, config: ServeConfig, catalog_updates: pl.DataFrame | None = None
    ) -> ServingModel:
        """Everything from the bundle folder (genrec/bundle.py), never from the training data; with
        `catalog_updates` (rows with item_id and catalog columns), the bundle's catalog with those rows added
        or replaced: new items get vectors from their attributes (genrec.pipeline.catalog), no retraining."""
        from genrec.bundle import Bundle
        from genrec.models import SequentialModel
        from genrec.pipeline.catalog import add_catalog_items
        from genrec.pipeline.runs import feature_category, load_component

        run_dir = Path(run_dir)
        b = Bundle.open(run_dir)
        seq = b.sequences()
        specs = config.stages if config.stages is not None else b.pipeline
        components = {name: load_component(b, name, seq) for name, c in b.components.items() if c.kind != "hstu-ranker"}
        catalog, vocab = b.catalog(), b.item_vocab
        if catalog_updates is not None:
            catalog, vocab, components = add_catalog_items(b, components, catalog, vocab, catalog_updates)
        model = cls(
            vocab,
            seq if config.dataset_history else None,
            components,
            specs,
            catalog=catalog,
            category=feature_category(catalog, components),
            users=b.users() if config.dataset_history else None,
            rules=config.rules,
            uses_timestamps=seq.timestamps is not None,
            name=str(run_dir),
        )
        model.run_dir, model.catalog_updates = run_dir, catalog_updates
        seq_models = [c for c in components.values() if isinstance(c, SequentialModel)]
        model.rec = Recommender(seq_models[0], vocab, b.user_vocab, b.event_vocab) if seq_models else None
        model.warmup()
        return model

    def warmup(self) -> None:
        """One request through every stage so the first real one does not pay for lazy initialisation."""
        user = self.users.ids[0] if len(self.users) else "warmup"
        self.run(self.context(user, 10, []))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "run_dir": str(self.run_dir)}
