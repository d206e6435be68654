"""Top-k recommendations from a trained run for a raw-id history: the inference entry point.

rec = Recommender.from_bundle("runs/ml1m-hstu")
rec.recommend(["1193", "661", "914"], k=10)  -> [("2355", 18.2), ...] (raw item ids, logits)
rec.score_candidates(["1193", "661"], ["2355", "1"])  -> the candidates ranked, HSTU via M-FALCON
rec.recommend(["a", "b"], events=["view", "cart"])   -> a model trained with --event-inputs reads each event's
                                                        type too (a type its vocabulary lacks: "action unknown")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from genrec.bundle import Bundle, BundleError, load_sequential, open_bundle
from genrec.data.sequences import PAD, Vocab
from genrec.models import SequentialModel


@dataclass
class Recommendation:
    item_id: str
    score: float


class Recommender:
    def __init__(
        self, model: SequentialModel, item_vocab: Vocab, user_vocab: Vocab, event_vocab: Vocab | None = None
    ) -> None:
        self.model = model.eval()
        self.item_vocab = item_vocab
        self.user_vocab = user_vocab
        self.event_vocab = event_vocab  # the training event types: type codes of an event-input model
        self._table: torch.Tensor | None = None  # (num_items + 1, D) cached item_table()

    @classmethod
    def from_bundle(cls, bundle: str | Path | Bundle, component: str | None = None) -> Recommender:
        """The bundle's sequence model (its first retriever unless `component` names one) and vocabularies."""
        b = open_bundle(bundle)
        model = load_sequential(b, component)
        if b.item_vocab is None or b.user_vocab is None:
            raise BundleError(f"{b.path}/manifest.json: files has no vocab.json")
        return cls(model, b.item_vocab, b.user_vocab, b.event_vocab)

    @torch.no_grad()  # not inference_mode: callers edit the returned scores in place
    def scores(
        self, items: torch.Tensor, timestamps: torch.Tensor | None = None, events: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits over the whole catalog after one user's history: exact matmul, no index.

        items: (N,) item indices (no padding), oldest first; only the last max_len are read.
        timestamps: (N,) unix seconds or None. events: (N,) type codes (event_codes) or None (a model without
        event inputs ignores them). Returns (num_items + 1,) with column 0 (padding) = -inf.
        """
        max_len = self.model.config.max_len
        items = items[-max_len:]
        ts = timestamps[-max_len:] if timestamps is not None else None
        ev = events[-max_len:] if events is not None else None
        state = self.model.user_states(items, torch.tensor([0, len(items)]), ts, ev)  # (1, D)
        if self._table is None:  # the normalised item table is fixed for an eval-mode model: compute once
            self._table = self.model.item_table().detach()
        scores = (state @ self._table.T)[0] / self.model.config.temperature
        scores[PAD] = float("-inf")
        return scores

    @torch.no_grad()
    def recommend(
        self,
        history: list[str],
        k: int = 10,
        timestamps: list[int] | None = None,
        exclude_seen: bool = True,
        exclude: list[str] | None = None,
        events: list[str] | None = None,
    ) -> list[Recommendation]:
        """history: raw item ids, oldest first; timestamps and events (event types): one per history item.
        Items the model does not know are skipped in the input.

        A history with no item the model knows cannot be personalised: that is a ValueError here; the serving
        pipeline answers such users from its popularity stage instead.
        """
        items, ts, ev = self._known(history, timestamps, events)
        if not len(items):
            raise ValueError("history: none of its items is known to the model (cold start)")
        scores = self.scores(items, ts, ev)
        banned = set(items.tolist()) if exclude_seen else set()
        banned |= {self.item_vocab.index(x) for x in exclude or []} - {PAD}
        if banned:
            scores[torch.tensor(sorted(banned))] = float("-inf")
        top = torch.topk(scores, min(k, int(torch.isfinite(scores).sum())))
        return [
            Recommendation(self.item_vocab.raw(int(i)), float(s)) for s, i in zip(top.values, top.indices, strict=True)
        ]

    @torch.no_grad()
    def score_candidates(
        self,
        history: list[str],
        candidates: list[str],
        timestamps: list[int] | None = None,
        request_time: int | None = None,
        head: str = "retrieval",
        micro_batch: int = 1024,
        events: list[str] | None = None,
    ) -> list[Recommendation]:
        """Rank a given candidate set (raw item ids) for one user, best first.

        head="retrieval": the next-item logit the model was trained for (any model; one history encoding).
        head="target": HSTU's target-aware candidate states via M-FALCON (genrec.models.mfalcon): the history is
        encoded once and candidates are scored in micro-batches against its cached K/V.
        Unknown candidate ids raise ValueError naming them; unknown history items are skipped as in recommend().
        """
        from genrec.models.hstu import HSTU
        from genrec.models.mfalcon import score_candidates

        unknown = [c for c in candidates if self.item_vocab.index(c) == PAD]
        if unknown:
            raise ValueError(f"candidates: unknown item ids {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
        if head not in ("retrieval", "target"):
            raise ValueError(f"head: expected 'retrieval' or 'target', got {head!r}")
        items, ts, ev = self._known(history, timestamps, events)
        window = self.model.config.max_len - 1  # leave room for the candidate's own position inside max_len
        items = items[-window:]
        ts = ts[-window:] if ts is not None else None
        ev = ev[-window:] if ev is not None and self.model.uses_events else None
        cand = torch.tensor([self.item_vocab.index(c) for c in candidates], dtype=torch.long)
        if isinstance(self.model, HSTU) and ev is None:
            scores = score_candidates(self.model, items, ts, cand, micro_batch, request_time, head)
        elif head == "retrieval":
            state = self.model.user_states(items, torch.tensor([0, len(items)]), ts, ev)[0] if len(items) else None
            table = self.model.item_table()[cand]
            scores = table @ state / self.model.config.temperature if state is not None else torch.zeros(len(cand))
        elif isinstance(self.model, HSTU):
            raise ValueError("head='target' (M-FALCON) does not read event types yet; use head='retrieval'")
        else:
            raise ValueError(f"head='target' needs an HSTU model, this run holds {type(self.model).__name__}")
        order = torch.argsort(scores, descending=True, stable=True)
        return [Recommendation(candidates[int(i)], float(scores[i])) for i in order]

    def event_codes(self, events: list[str]) -> list[int]:
        """Raw event types -> the model's type codes (1-based); a type training never saw -> 0, "action unknown"."""
        ev = self.event_vocab
        return [ev.index(e) if ev is not None else PAD for e in events]

    def _known(
        self, history: list[str], timestamps: list[int] | None, events: list[str] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The history's items the model knows (n,) with their timestamps and type codes (n,) (None when not given)."""
        for name, values in (("timestamps", timestamps), ("events", events)):
            if values is not None and len(values) != len(history):
                raise ValueError(f"{name}: {len(values)} values for {len(history)} history items")
        idx = torch.tensor([self.item_vocab.index(i) for i in history], dtype=torch.long)
        keep = idx != PAD
        ts = torch.tensor(timestamps, dtype=torch.long)[keep] if timestamps is not None else None
        ev = torch.tensor(self.event_codes(events), dtype=torch.long)[keep] if events is not None else None
        return idx[keep], ts, ev
