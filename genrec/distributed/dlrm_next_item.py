"""A minimal DLRM-style next-item model on TorchRec EmbeddingBagCollections (scaling study, sharding tests).

For every position t of a user's history (the same next-item task as HSTU), three sparse features:
    hist_item    bag of the last `hist_len` items up to t   (mean-pooled)
    recent_item  bag of the last 5 items up to t            (mean-pooled)
    last_item    the item at t
each in its own table of one `user` EBC. DLRM's pairwise dot interactions of the three pooled vectors,
concatenated with them, go through the top MLP to a user vector; logit = cos(user, item) / temperature
against a fourth table (`t_cand`, in the `cand` EBC, one item per bag). No attention, no order beyond the
three windows: a bag-of-items model, which is what DLRM-family retrieval towers are.

It keeps SequentialModel's interface (config.max_len/temperature, encode, item_table, user_states,
score_all), so training/trainer.train_epoch and evaluation.evaluate_model run it unchanged. Built from
genrec.models.dlrm's interaction and genrec.models.sparse's MLP, as the CTR DLRM is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from genrec.models.dlrm import pairwise_dots
from genrec.models.sparse import mlp
from genrec.ops.jagged import positions

FEATURES = ("hist_item", "recent_item", "last_item")


@dataclass
class DLRMNextItemConfig:
    num_items: int
    dim: int = 32
    hidden: int = 128
    mlp_layers: int = 2
    hist_len: int = 50
    recent_len: int = 5
    max_len: int = 50  # training window, as for the sequential models
    temperature: float = 0.05
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, **asdict(self)}


def _tables(c: DLRMNextItemConfig, names: list[tuple[str, str, PoolingType]]) -> list[EmbeddingBagConfig]:
    return [
        EmbeddingBagConfig(name=t, embedding_dim=c.dim, num_embeddings=c.num_items + 1, feature_names=[f], pooling=p)
        for t, f, p in names
    ]


def window_bags(items: torch.Tensor, offsets: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each position t: the ids items[max(start, t - width + 1) .. t]. -> values (sum_t len_t,), lengths (N,)."""
    pos = positions(offsets)  # (N,) position within its sequence
    lengths = torch.clamp(pos + 1, max=width)  # (N,)
    ends = torch.arange(len(items), device=items.device) + 1
    starts = ends - lengths
    total = int(lengths.sum())
    bag_off = torch.zeros(len(items) + 1, dtype=torch.long, device=items.device)
    bag_off[1:] = torch.cumsum(lengths, 0)
    idx = torch.arange(total, device=items.device) - torch.repeat_interleave(bag_off[:-1] - starts, lengths)
    return items[idx], lengths


class DLRMNextItem(nn.Module):
    def __init__(self, config: DLRMNextItemConfig, device: str | torch.device = "cpu") -> None:
        super().__init__()
        c = self.config = config
        mean, total = PoolingType.MEAN, PoolingType.SUM
        self.user = EmbeddingBagCollection(
            tables=_tables(c, [("t_hist", "hist_item", mean), ("t_recent", "recent_item", mean),
                               ("t_last", "last_item", total)]),
            device=torch.device(device),
        )  # fmt: skip
        self.cand = EmbeddingBagCollection(
            tables=_tables(c, [("t_cand", "cand_item", total)]), device=torch.device(device)
        )
        n = len(FEATURES)
        self.top = mlp([n * c.dim + n * (n - 1) // 2, *[c.hidden] * c.mlp_layers, c.dim], False, c.dropout)
        if torch.device(device).type != "meta":
            for p in [*self.user.parameters(), *self.cand.parameters()]:
                nn.init.normal_(p, std=0.02)

    def features(self, items: torch.Tensor, offsets: torch.Tensor, stride: int | None = None) -> KeyedJaggedTensor:
        """KJT of the three features, one sample per position, padded with empty bags to `stride` samples
        (sharded EBCs need the same batch size on every rank)."""
        c = self.config
        hist, hist_len = window_bags(items, offsets, c.hist_len)
        recent, recent_len = window_bags(items, offsets, c.recent_len)
        ones = torch.ones_like(items)
        pad = torch.zeros((stride or len(items)) - len(items), dtype=items.dtype, device=items.device)
        return KeyedJaggedTensor.from_lengths_sync(
            keys=list(FEATURES),
            values=torch.cat([hist, recent, items]),
            lengths=torch.cat([hist_len, pad, recent_len, pad, ones, pad]).int(),
        )

    def encode(
        self,
        items: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        events: torch.Tensor | None = None,
        *,
        stride: int | None = None,
    ) -> torch.Tensor:
        """(sum N,) items, (B + 1,) offsets -> (sum N, D) L2-normalised user vectors (one per position).
        Timestamps and event types are not features of this model (the SequentialModel signature takes them).
        stride >= sum N: the per-rank batch size all ranks agreed on (sharded use)."""
        pooled = self.user(self.features(items, offsets, stride))  # KeyedTensor, (stride, D) per key
        N = len(items)
        embs = torch.stack([pooled[f][:N] for f in FEATURES], 1)  # (N, F, D): read by key, never by position
        x = torch.cat([embs.flatten(1), pairwise_dots(embs)], 1)  # the three vectors and their dot products
        return F.normalize(self.top(x), dim=-1)

    def candidates(self, ids: torch.Tensor) -> torch.Tensor:
        """(M,) item ids -> (M, D) normalised candidate embeddings (one-item bags; works sharded)."""
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=["cand_item"], values=ids, lengths=torch.ones(len(ids), dtype=torch.int32, device=ids.device)
        )
        return F.normalize(self.cand(kjt)["cand_item"], dim=-1)

    def forward(
        self, items: torch.Tensor, offsets: torch.Tensor, cand: torch.Tensor, stride: int | None = None
    ) -> torch.Tensor:
        """Sharded path: (N, D) states and (M, D) candidate rows in one forward -> (N, M) logits.
        Every rank must pass the same stride (>= its N) and the same number M of candidates."""
        return self.encode(items, offsets, stride=stride) @ self.candidates(cand).T / self.config.temperature

    # SequentialModel interface (unsharded use: trainer.train_epoch, evaluation.evaluate_model)
    def item_table(self) -> torch.Tensor:
        return F.normalize(self.cand.embedding_bags["t_cand"].weight, dim=-1)

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """Rows of item_table() for `items` (the trainer's sampled loss)."""
        return F.normalize(self.cand.embedding_bags["t_cand"].weight[items], dim=-1)

    def user_states(
        self,
        items: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        events: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.encode(items, offsets)[offsets[1:] - 1]

    def score_all(self, states: torch.Tensor) -> torch.Tensor:
        return states @ self.item_table().T / self.config.temperature
