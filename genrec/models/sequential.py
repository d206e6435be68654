"""What every next-item model shares: an item table, L2-normalised states and cosine logits.

A sequential model maps a jagged batch of histories to one user state per position:
    items: (sum N,) int64, offsets: (B + 1,), timestamps: (sum N,) | None, events: (sum N,) | None
    ->  states: (sum N, D)
States and item embeddings are L2-normalised, so logit = cos(state, item) / temperature.
With event types (num_event_types > 0) every input token is an (item, action) pair: the input vector is the
item's vector plus the action's embedding (a viewed item and a bought one are different context). The output
table stays the items' alone: what is predicted is the next item.
With item attributes (brand, categories, ...: num_attribute_tokens > 0) an item's vector is its own embedding
plus the mean of its attribute-token embeddings, in the input and in the output table alike, so rare items
borrow strength from the attributes they share with frequent ones. An item without training events (a new
product in the catalog) has its id row held at zero (`freeze_untrained_ids`): its vector is its attributes'
alone, so it is recommendable without ever being seen. With id_dropout > 0, training also drops the id part
of that fraction of (trained) items at every forward, so attribute-only vectors are in-distribution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genrec.ops.dropout import Dropout


@dataclass
class SequentialConfig:
    num_items: int
    max_len: int = 200
    dim: int = 50
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    temperature: float = 0.05
    num_attribute_tokens: int = 0  # attribute vocabulary (token 0 = none); 0 = ids only
    attributes_per_item: int = 0  # width of the (num_items + 1, A) attribute-token buffer
    num_event_types: int = 0  # action vocabulary (view, cart, ...; 0 = none); 0 = the input is the item alone
    id_dropout: float = 0.0  # training: fraction of items whose vector is their attributes' alone, per forward

    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, **asdict(self)}


class SequentialModel(nn.Module):
    """Base: item table (row 0 = padding) and learned absolute positions, counted from the sequence start."""

    config: SequentialConfig

    def __init__(self, config: SequentialConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.num_items + 1, config.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.input_dropout = Dropout(config.dropout)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.attr_emb: nn.Embedding | None = None
        if config.num_attribute_tokens:
            self.attr_emb = nn.Embedding(config.num_attribute_tokens + 1, config.dim, padding_idx=0)
            nn.init.normal_(self.attr_emb.weight, std=0.02)
            with torch.no_grad():
                self.attr_emb.weight[0].zero_()
            # (num_items + 1, A) attribute tokens per item, 0-padded; saved with the weights
            self.register_buffer(
                "item_attrs", torch.zeros(config.num_items + 1, config.attributes_per_item, dtype=torch.long)
            )
        # (num_items + 1, 1) 1 = the item's id embedding is used; not saved: untrained rows are saved as zeros
        self.register_buffer("id_mask", torch.ones(config.num_items + 1, 1), persistent=False)
        self.event_emb: nn.Embedding | None = None
        if config.num_event_types:
            self.event_emb = nn.Embedding(config.num_event_types + 1, config.dim, padding_idx=0)
            nn.init.normal_(self.event_emb.weight, std=0.02)
            with torch.no_grad():
                self.event_emb.weight[0].zero_()

    @property
    def uses_events(self) -> bool:
        """Whether the model reads each input event's type (trained with --event-inputs)."""
        return self.event_emb is not None

    def set_item_attributes(self, tokens: torch.Tensor) -> None:
        """tokens: (num_items + 1, A) int64 attribute tokens per item (0 = none)."""
        if self.attr_emb is None or tokens.shape != self.item_attrs.shape:
            raise ValueError(f"model expects attribute tokens of shape {getattr(self, 'item_attrs', None)!r}")
        self.item_attrs.copy_(tokens)

    def freeze_untrained_ids(self, trained: torch.Tensor) -> None:
        """trained: (num_items + 1,) bool, the items with training events. The others' id rows are zeroed and
        get no gradient (a zero row stays zero under AdamW), so even as negatives they are their attributes."""
        if self.attr_emb is None:
            return  # without attributes an unseen item has nothing to be recommended by
        with torch.no_grad():
            self.item_emb.weight[~trained] = 0.0
        self.id_mask.copy_(trained.float()[:, None])

    def with_item_attributes(self, tokens: torch.Tensor) -> SequentialModel:
        """A copy (eval mode) over a grown catalog: tokens (M + 1, A') attribute tokens of every item, M >=
        num_items. Items past num_items are new: zero id rows, so their vectors are their attributes' alone."""
        from genrec.models import model_from_config

        if self.attr_emb is None:
            raise ValueError("this model has no item attributes (train it with --item-attributes)")
        n_old, n_new = self.config.num_items + 1, tokens.shape[0]
        if n_new < n_old:
            raise ValueError(f"tokens: {n_new} item rows, the model has {n_old}")
        cfg = {**self.config.to_dict(), "num_items": n_new - 1, "attributes_per_item": tokens.shape[1]}
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        emb = torch.zeros(n_new, self.config.dim, dtype=state["item_emb.weight"].dtype)
        emb[:n_old] = state["item_emb.weight"]
        state["item_emb.weight"], state["item_attrs"] = emb, tokens.to(torch.long)
        model = model_from_config(cfg)
        model.load_state_dict(state)
        return model.eval()

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D) unnormalised vectors of `items` (all rows when None): id embedding + mean attribute embedding."""
        ids = self.item_emb.weight if items is None else self.item_emb(items)
        if self.attr_emb is None:
            return ids
        mask = self.id_mask
        if self.training and self.config.id_dropout > 0:
            mask = mask * (torch.rand_like(mask) >= self.config.id_dropout)
        if self.training or not bool(mask.all()):
            ids = ids * (mask if items is None else mask[items])
        tok = self.item_attrs if items is None else self.item_attrs[items]  # (..., A)
        count = (tok > 0).sum(-1, keepdim=True).clamp(min=1)
        return ids + self.attr_emb(tok).sum(-2) / count

    def embed(self, items: torch.Tensor, positions: torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
        """(sum N,) ids, positions and event types -> (sum N, D): scaled (item + action) vector + position, dropout.

        events is ignored by a model without event types; a model with them reads None as "action unknown"."""
        x = self.item_vectors(items)
        if self.event_emb is not None and events is not None:
            x = x + self.event_emb(events)
        x = x * self.config.dim**0.5
        x = x + self.pos_emb(positions.clamp(max=self.config.max_len - 1))
        return self.input_dropout(x)

    def encode(
        self,
        items: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        events: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(sum N,) items, (B + 1,) offsets -> (sum N, D) L2-normalised states."""
        raise NotImplementedError

    def item_table(self) -> torch.Tensor:
        """(num_items + 1, D) L2-normalised item embeddings (row 0 is padding)."""
        return F.normalize(self.item_vectors(), dim=-1)

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """(..., D) rows of item_table() for `items`, computed for those items only: a sampled loss over a
        200k-item catalog needs a few thousand rows per step, not the whole table and its gradient."""
        return F.normalize(self.item_vectors(items), dim=-1)

    def user_states(
        self,
        items: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        events: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """State after each sequence's last event: (B, D)."""
        return self.encode(items, offsets, timestamps, events)[offsets[1:] - 1]

    def score_all(self, states: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, num_items + 1) logits over the whole catalog (column 0 = padding)."""
        return states @ self.item_table().T / self.config.temperature
