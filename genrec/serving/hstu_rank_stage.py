"""A re-ranking stage that scores the pipeline's candidates with an HSTU ranker (genrec.generative_ranking).

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

Per request: the user's history (dataset part with its event types, then live events) becomes (item, action,
time) tokens in the ranker's own vocabulary (items are matched by raw id, so the ranker and the retrieval run
may use different index orders); live events carry their event_type (a purchase flag only, in the pipeline's
History: purchase -> the purchase action, anything else -> the lowest action); consecutive events on one item
collapse to one token with the highest action, as in training. All candidates are scored in one pass
sharing one history encoding (M-FALCON masking). Candidates the ranker does not know get -inf-free score
min - 1 so they sort last within their tier; tiers are kept, stage labels become this stage's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec.bundle import load_hstu_ranker
from genrec.data.sequences import PAD
from genrec.generative_ranking.data import collapse_history
from genrec.serving.pipeline import Candidates, RequestContext, ServingModel, register_stage


class HSTURankStage:
    name = "hstu_rank"

    def __init__(self, bundle: ServingModel, run_dir: str | Path, weights: dict[str, float] | None = None) -> None:
        self.bundle = bundle
        self.model, self.meta = load_hstu_ranker(run_dir)
        tasks = self.meta["tasks"]
        unknown = set(weights or {}) - set(tasks)
        if unknown:
            raise ValueError(f"weights: unknown task(s) {sorted(unknown)}; the ranker predicts {tasks}")
        self.weights = torch.tensor([float((weights or {}).get(t, 0.0 if weights else 1.0)) for t in tasks])
        index = {raw: i + 1 for i, raw in enumerate(self.meta["item_ids"])}
        # pipeline item index -> ranker item index (PAD where the ranker does not know the item)
        self.to_ranker = np.array([PAD] + [index.get(raw, PAD) for raw in bundle.vocab.ids], np.int64)
        actions: dict[str, int] = self.meta["event_actions"]
        self.low_action = min(actions.values())
        self.purchase_action = max((actions[t] for t in bundle.purchase_types if t in actions), default=self.low_action)
        # dataset event type code (1-based into bundle.hist_types) -> ranker action
        types = bundle.hist_types or []
        self.type_action = np.array([self.low_action] + [actions.get(t, self.low_action) for t in types], np.int64)

    def history_tokens(self, ctx: RequestContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, b = ctx.history, self.bundle
        actions = np.where(h.purchased, self.purchase_action, self.low_action).astype(np.int64)
        u = b.user_index(ctx.user_id)
        if u >= 0 and b.hist_types is not None and h.num_dataset:
            a = int(b.hist_offsets[u])
            actions[: h.num_dataset] = self.type_action[b.hist_type_codes[a : a + h.num_dataset]]
        items = self.to_ranker[h.items]
        known = items != PAD
        items, actions, times = collapse_history(items[known], actions[known], h.timestamps[known])
        return torch.from_numpy(items), torch.from_numpy(actions), torch.from_numpy(times)

    def __call__(self, ctx: RequestContext, cands: Candidates) -> Candidates:
        if not len(cands):
            return cands
        items, actions, times = self.history_tokens(ctx)
        cand = torch.from_numpy(self.to_ranker[cands.items.numpy()])
        known = cand != PAD
        probs = self.model.score(items, actions, times, cand.clamp(min=1))  # (C, T); unknown rows replaced below
        scores = probs @ self.weights
        if not bool(known.all()):
            floor = scores[known].min() - 1 if bool(known.any()) else torch.tensor(0.0)
            scores = torch.where(known, scores, floor)
        return Candidates(cands.items, scores.float(), [self.name] * len(cands), list(cands.tiers))


def make_stage(bundle: ServingModel, run_dir: str, weights: dict[str, Any] | None = None) -> HSTURankStage:
    """Stage factory for the serving config (see the module doc)."""
    return HSTURankStage(bundle, run_dir, weights)


def register() -> None:
    """Make name = "hstu_rank" usable in [[stages]] without a factory line."""
    register_stage("hstu_rank", make_stage)
