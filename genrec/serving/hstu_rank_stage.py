"""The HSTU ranker stage (genrec.pipeline.stages.HSTURank) from a `genrec genrank train` run folder.

Select it in the serving config, between the candidate generators and the rules:

    [[stages]]
    name = "retrieval"
    [[stages]]
    name = "popular"
    [[stages]]
    name = "hstu_rank"
    factory = "genrec.serving.hstu_rank_stage:make_stage"
    run_dir = "runs/genrank-shop"          # from `genrec genrank train --out runs/genrank-shop`
    weights = { purchase = 1.0 }           # optional: score = sum_t w_t P(task t); default: every task weight 1
    [[stages]]
    name = "rerank"

(or call register() once at start-up and write name = "hstu_rank" without the factory line).

The stage itself (history tokens, M-FALCON scoring, unknown candidates last) is
genrec.pipeline.stages.HSTURank, the same object offline evaluation runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genrec.pipeline.pipeline import Pipeline, register_stage
from genrec.pipeline.stages import HSTURank

HSTURankStage = HSTURank


def make_stage(
    bundle: Pipeline, run_dir: str | Path, weights: dict[str, Any] | None = None, name: str = "hstu_rank"
) -> HSTURank:
    """Stage factory for the serving config (see the module doc)."""
    from genrec.bundle import load_hstu_ranker

    model, meta = load_hstu_ranker(run_dir)
    return HSTURank(model, meta, bundle.vocab, bundle.event_vocab, sorted(bundle.purchase_types), weights, name)


def register() -> None:
    """Make name = "hstu_rank" usable in [[stages]] without a factory line."""
    register_stage("hstu_rank", make_stage)
