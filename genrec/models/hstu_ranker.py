"""HSTU ranker: HSTU over a user's (item, action, time) tokens, a multi-task head on appended candidates.

Tokens (token_mode):
  "summed"       one token per event: e_item + e_action (+ attribute embeddings), positions 0..n-1;
  "interleaved"  two tokens per event, item then action (Zhai et al. 2024's generative ranking layout):
                 [e_item_1 + t_item, e_action_1 + t_action, e_item_2 + t_item, ...], positions 0..2n-1.
  e_item = item embedding * sqrt(D) + sum of the item's attribute embeddings (category, brand, price bucket...)
         (+ optionally a linear map of dense item statistics, e.g. log counts per action from the training data:
         the counter features a DLRM gets, given to HSTU as an item-side attribute).
Candidates: a candidate c with cut k is a token appended after the first k events: e_item(c) + e_action(0)
("action unknown") in summed mode, e_item(c) + t_item in interleaved mode (an item token whose action is
still to come), at position r * k (r = tokens per event). It attends to the r * k history tokens before the
cut and to itself only, never to other candidates, and history tokens never attend to candidates; so one
pass scores any number of candidates against one history encoding (M-FALCON's mask, Zhai et al. 2024
sec. 3.4) and, in training, every cut of a sequence at once. All of a serving request's candidates share the
cut k = n. Relative attention bias (position gap, log2 time gap) as in HSTU; the candidate's time is the
time the prediction is for.
Head: the candidate's final state -> LayerNorm -> MLP -> one logit per task (e.g. view / cart / purchase).

The layers are genrec.models.hstu.HSTULayer modules: the history runs through HSTULayer.forward (keeping each
layer's KVCache) and the candidates through HSTULayer.cached_forward as targets, each at its own cut. (The
token embeddings differ from HSTU.embed's, which cannot carry actions or attributes, so this model calls the
layers itself rather than genrec.models.mfalcon.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from genrec.models.hstu import HSTUConfig, HSTULayer
from genrec.ops.hstu_attention import hstu_attention
from genrec.ops.jagged import positions

TOKEN_MODES = ("summed", "interleaved")


@dataclass
class HSTURankerConfig:
    num_items: int
    num_actions: int  # action ids 1..num_actions; 0 = unknown (candidates)
    num_tasks: int
    attributes: dict[str, int] = field(default_factory=dict)  # attribute name -> table size (codes 0..size-1)
    num_item_stats: int = 0  # dense per-item statistics (e.g. log counts per action) added through a Linear
    token_mode: str = "summed"
    max_len: int = 200  # history events
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.1
    num_time_buckets: int = 128
    use_time: bool = True
    head_hidden: int = 64

    def __post_init__(self) -> None:
        if self.token_mode not in TOKEN_MODES:
            raise ValueError(f"token_mode must be one of {TOKEN_MODES}, got {self.token_mode!r}")

    @property
    def tokens_per_event(self) -> int:
        return 2 if self.token_mode == "interleaved" else 1

    def to_dict(self) -> dict:
        return {"kind": "HSTURankerConfig", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> HSTURankerConfig:
        d = {k: v for k, v in d.items() if k != "kind"}
        return cls(**d)


class HSTURanker(nn.Module):
    def __init__(self, config: HSTURankerConfig) -> None:
        super().__init__()
        self.config = c = config
        r = c.tokens_per_event
        self.hstu_config = HSTUConfig(
            num_items=c.num_items,
            max_len=r * c.max_len + 1,  # relative position gaps 0..r*max_len
            dim=c.dim,
            num_layers=c.num_layers,
            num_heads=c.num_heads,
            dropout=c.dropout,
            num_time_buckets=c.num_time_buckets,
            attn_scale="max_len",
        )
        self.item_emb = nn.Embedding(c.num_items + 1, c.dim, padding_idx=0)
        self.action_emb = nn.Embedding(c.num_actions + 1, c.dim)  # row 0: unknown action (candidates)
        self.type_emb = nn.Embedding(2, c.dim)  # interleaved: item token / action token
        self.attr_emb = nn.ModuleDict(
            {name: nn.Embedding(size, c.dim, padding_idx=0) for name, size in c.attributes.items()}
        )
        # item index -> attribute codes; filled by set_item_attributes, saved with the weights
        self.register_buffer("item_attrs", torch.zeros(c.num_items + 1, len(c.attributes), dtype=torch.long))
        self.register_buffer("item_stats", torch.zeros(c.num_items + 1, c.num_item_stats))
        self.stats_proj = nn.Linear(c.num_item_stats, c.dim) if c.num_item_stats else None
        self.input_dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(HSTULayer(self.hstu_config) for _ in range(c.num_layers))
        self.head = nn.Sequential(
            nn.LayerNorm(c.dim), nn.Linear(c.dim, c.head_hidden), nn.SiLU(), nn.Linear(c.head_hidden, c.num_tasks)
        )
        if self.stats_proj is not None:  # start as if there were no stats: counts must not swamp the ids
            nn.init.zeros_(self.stats_proj.weight)
            nn.init.zeros_(self.stats_proj.bias)
        for emb in (self.item_emb, self.action_emb, self.type_emb, *self.attr_emb.values()):
            nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            for emb in self.attr_emb.values():
                emb.weight[0].zero_()

    def set_item_attributes(self, attributes: dict[str, torch.Tensor]) -> None:
        """attributes: name -> (num_items + 1,) int64 codes, for the names given in the config."""
        missing = set(self.config.attributes) - set(attributes)
        if missing:
            raise ValueError(f"missing item attributes {sorted(missing)}")
        for i, name in enumerate(self.config.attributes):
            codes = torch.as_tensor(attributes[name], dtype=torch.long)
            if codes.shape != (self.config.num_items + 1,) or int(codes.max()) >= self.config.attributes[name]:
                raise ValueError(
                    f"attribute {name!r}: expected ({self.config.num_items + 1},) codes < {self.config.attributes[name]}"
                )
            self.item_attrs[:, i] = codes

    def set_item_stats(self, stats: torch.Tensor) -> None:
        """stats: (num_items + 1, num_item_stats) float, computed on training data only (standardise them)."""
        if tuple(stats.shape) != tuple(self.item_stats.shape):
            raise ValueError(f"item stats: expected shape {tuple(self.item_stats.shape)}, got {tuple(stats.shape)}")
        self.item_stats.copy_(stats)

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        """(R,) item indices -> (R, D): scaled item embedding + attribute embeddings (+ projected item stats)."""
        x = self.item_emb(items) * self.config.dim**0.5
        codes = self.item_attrs[items]  # (R, A)
        for i, emb in enumerate(self.attr_emb.values()):
            x = x + emb(codes[:, i])
        if self.stats_proj is not None:
            x = x + self.stats_proj(self.item_stats[items])
        return x

    def history_tokens(
        self, items: torch.Tensor, actions: torch.Tensor, times: torch.Tensor, offsets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Events (sum N,) -> tokens (sum rN, D), their offsets (B + 1,) and times (sum rN,)."""
        x = self.item_repr(items)
        if self.config.token_mode == "summed":
            return x + self.action_emb(actions), offsets, times
        tokens = torch.stack([x + self.type_emb.weight[0], self.action_emb(actions) + self.type_emb.weight[1]], 1)
        return tokens.reshape(-1, x.shape[-1]), offsets * 2, times.repeat_interleave(2)

    def candidate_tokens(self, items: torch.Tensor) -> torch.Tensor:
        x = self.item_repr(items)
        if self.config.token_mode == "summed":
            return x + self.action_emb.weight[0]
        return x + self.type_emb.weight[0]

    def forward(
        self,
        hist_items: torch.Tensor,
        hist_actions: torch.Tensor,
        hist_times: torch.Tensor,
        hist_offsets: torch.Tensor,
        cand_items: torch.Tensor,
        cand_cuts: torch.Tensor | None,
        cand_times: torch.Tensor,
        cand_offsets: torch.Tensor,
    ) -> torch.Tensor:
        """History events (sum N,) x3 with (B + 1,) offsets; candidates (sum M,) items, cuts (events visible,
        0..N_b; None: all N_b), times ((sum M,), or () for one shared time), with (B + 1,) offsets.
        Returns (sum M, num_tasks) logits."""
        c = self.config
        r = c.tokens_per_event
        use_time = c.use_time
        xh, h_off, h_t = self.history_tokens(hist_items, hist_actions, hist_times, hist_offsets)
        xh = self.input_dropout(xh)
        xc = self.input_dropout(self.candidate_tokens(cand_items))
        cand_pos = cand_cuts * r if cand_cuts is not None else None  # None: each sees its whole history
        geometry: dict = {}  # the histories' attention geometry, built by the first layer
        for layer in self.layers:
            xh, kv = layer(xh, h_off, h_t if use_time else None, geometry, return_kv=True)
            xc, _ = layer.cached_forward(xc, cand_offsets, kv, cand_times, append=False, positions=cand_pos)
        return self.head(xc)

    @torch.no_grad()
    def score(
        self,
        hist_items: torch.Tensor,
        hist_actions: torch.Tensor,
        hist_times: torch.Tensor | None,
        candidates: torch.Tensor,
        request_time: int | None = None,
    ) -> torch.Tensor:
        """One user: history (n,) events, candidates (m,) -> (m, num_tasks) probabilities, one shared prefix.

        request_time: the candidates' time (default: the last history event's). Keeps the last max_len events.
        """
        n = min(int(hist_items.shape[0]), self.config.max_len)
        hist_items, hist_actions = (
            hist_items[-n:] if n else hist_items[:0],
            hist_actions[-n:] if n else hist_actions[:0],
        )
        if hist_times is None:
            hist_times = torch.zeros_like(hist_items)
        hist_times = hist_times[-n:] if n else hist_times[:0]
        t = request_time if request_time is not None else (int(hist_times[-1]) if n else 0)
        m = int(candidates.shape[0])
        logits = self(
            hist_items,
            hist_actions,
            hist_times,
            torch.tensor([0, n]),
            candidates,
            None,  # every candidate at cut n, one time: one bias row for all of them (hstu_cached_attention)
            torch.tensor(t, dtype=torch.long),
            torch.tensor([0, m]),
        )
        return torch.sigmoid(logits)


@torch.no_grad()
def appended_logits(model: HSTURanker, hist_items, hist_actions, hist_times, candidate: int, t: int) -> torch.Tensor:
    """The definition candidate scoring must match: the history with ONE candidate token appended, run as a
    plain causal HSTU sequence (reference attention); returns the candidate's (num_tasks,) logits."""
    c = model.config
    xh, _, h_t = model.history_tokens(hist_items, hist_actions, hist_times, torch.tensor([0, len(hist_items)]))
    x = torch.cat([xh, model.candidate_tokens(torch.tensor([candidate]))], 0)
    ts = torch.cat([h_t, torch.tensor([t])])
    off = torch.tensor([0, x.shape[0]])
    assert positions(off)[-1] == c.tokens_per_event * len(hist_items)
    for layer in model.layers:
        u, v, q, k = layer.project(x)
        a = hstu_attention(
            q,
            k,
            v,
            off,
            layer.pos_bias,
            layer.time_bias if c.use_time else None,
            ts if c.use_time else None,
            scale=float(model.hstu_config.max_len),
            backend="reference",
        )
        x = layer.output(x, a, u)
    return model.head(x[-1:])[0]
