"""A sequential model (HSTU / SASRec) whose item table is a TorchRec EmbeddingCollection, so it can be sharded.

ShardableSequential composes, it does not edit genrec/models: the wrapped encoder's `item_emb` is swapped for
an `InjectedRows` module, and the wrapper looks every item it needs up in one EmbeddingCollection call
(table "t_item", feature "item_id"; a table is never called `items`) before running the encoder:

    ids  = unique(history items | targets | negatives)      one KJT, one (sharded) lookup
    rows = ec(ids)[inverse]                                  (n_ids, D)
    encoder.item_emb.rows = rows[:N]; states = encoder.encode(items, offsets, timestamps)   (N, D)
    loss = sampled softmax of states vs normalised target / negative rows (same as training/losses.py)

The table is stored sharding.table_width(D) wide (fbgemm needs a multiple of 4) and lookups keep its first D columns.
forward() returns the training loss, so DMP/DDP see one forward per step. The full table exists only when
`full_table()` gathers it (evaluation of small catalogs) or a checkpoint is exported for serving.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from genrec.distributed.sharding import table_width
from genrec.models import SequentialModel, build_model, model_from_config
from genrec.ops.jagged import lengths_from_offsets, padded_index, to_jagged, to_padded

TABLE = "t_item"
FEATURE = "item_id"
TABLE_KEY = f"ec.embeddings.{TABLE}.weight"  # its state_dict key


class InjectedRows(nn.Module):
    """Stands in for nn.Embedding inside the encoder: returns the rows the wrapper looked up for this call."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows, self.rows = self.rows, None
        if rows is None or rows.shape[0] != ids.shape[0]:
            raise RuntimeError("ShardableSequential: encoder looked up items the wrapper did not inject")
        return rows


def item_kjt(ids: torch.Tensor) -> KeyedJaggedTensor:
    """(M,) ids -> KJT with one feature and one sample (every rank keeps stride 1, whatever its M)."""
    return KeyedJaggedTensor.from_lengths_sync(
        keys=[FEATURE], values=ids, lengths=torch.tensor([ids.numel()], dtype=torch.int32, device=ids.device)
    )


def sampled_loss_rows(
    states: torch.Tensor,
    targets: torch.Tensor,
    target_rows: torch.Tensor,
    negatives: torch.Tensor,
    negative_rows: torch.Tensor,
    offsets: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """training.losses' sampled loss from looked-up rows. states: (N, D), targets: (N,), target_rows: (N, D)
    normalised, negatives: (B, K) per sequence, negative_rows: (B, K, D) normalised, offsets: (B + 1,)."""
    lengths = lengths_from_offsets(offsets)
    B, n = len(lengths), int(lengths.max())
    pos = (states * target_rows).sum(-1, keepdim=True) / temperature  # (N, 1)
    idx = padded_index(offsets, n)
    negl = torch.bmm(to_padded(states, idx, B, n), negative_rows.transpose(1, 2))  # (B, n, K)
    negl = to_jagged(negl, idx) / temperature  # (N, K)
    neg_tok = negatives.repeat_interleave(lengths, dim=0)
    negl = negl.masked_fill(neg_tok == targets[:, None], float("-inf"))  # accidental hits
    return F.cross_entropy(torch.cat([pos, negl], 1), torch.zeros_like(targets))


class ShardableSequential(nn.Module):
    """encoder: a SequentialModel whose own item_emb is dropped; the table lives in `self.ec`.

    device="meta" builds the table without memory (the usual case before DMP shards it); otherwise the table
    is allocated and, if `copy_weights`, starts from the encoder's item_emb (single-process reference)."""

    def __init__(self, encoder: SequentialModel, device: str | torch.device = "meta", copy_weights: bool = True):
        super().__init__()
        c = encoder.config
        self.config = c
        old = encoder.item_emb
        encoder.item_emb = InjectedRows()
        self.encoder = encoder
        self.ec = EmbeddingCollection(
            tables=[EmbeddingConfig(name=TABLE, embedding_dim=table_width(c.dim), num_embeddings=c.num_items + 1,
                                    feature_names=[FEATURE])],
            device=torch.device(device),
        )  # fmt: skip
        if torch.device(device).type != "meta" and copy_weights and isinstance(old, nn.Embedding):
            with torch.no_grad():
                weight = self.ec.embeddings[TABLE].weight
                weight[:, : c.dim].copy_(old.weight)
                weight[:, c.dim :].zero_()

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """(M,) ids -> (M, D) rows; duplicates are looked up (and sent between ranks) once."""
        uniq, inv = torch.unique(ids, return_inverse=True)
        rows = self.ec(item_kjt(uniq))[FEATURE].values()[:, : self.config.dim]  # (U, D)
        return rows[inv]

    def forward(
        self,
        items: torch.Tensor,
        offsets: torch.Tensor,
        timestamps: torch.Tensor | None,
        targets: torch.Tensor,
        negatives: torch.Tensor,
    ) -> torch.Tensor:
        """Mean sampled-softmax loss of one jagged batch. items/targets: (N,), offsets: (B + 1,),
        negatives: (B, K) uniform in 1..V (drawn by the caller so every world size can draw the same)."""
        N, (B, K) = len(items), negatives.shape
        rows = self.lookup(torch.cat([items, targets, negatives.reshape(-1)]))
        hist, tgt, neg = rows.split([N, N, B * K])
        self.encoder.item_emb.rows = hist  # type: ignore[union-attr]
        states = self.encoder.encode(items, offsets, timestamps)  # (N, D)
        return sampled_loss_rows(
            states,
            targets,
            F.normalize(tgt, dim=-1),
            negatives,
            F.normalize(neg, dim=-1).view(B, K, -1),
            offsets,
            self.config.temperature,
        )

    @torch.no_grad()
    def full_table(self, chunk: int = 1 << 20) -> torch.Tensor:
        """(V + 1, D) the whole table on every rank, looked up in chunks (a collective when sharded: all
        ranks must call it)."""
        V = self.config.num_items + 1
        dev = next(iter(self.encoder.parameters())).device
        parts = [self.ec(item_kjt(torch.arange(s, min(s + chunk, V), device=dev)))[FEATURE].values()
                 for s in range(0, V, chunk)]  # fmt: skip
        return torch.cat(parts)[:, : self.config.dim]

    def to_sequential(self, table: torch.Tensor) -> SequentialModel:
        """A plain SequentialModel (for evaluate_model / serving) with `table` (V + 1, D or its stored width)
        as its item_emb."""
        model = model_from_config(self.config.to_dict())
        state = {k: v for k, v in self.encoder.state_dict().items() if not k.startswith("item_emb")}
        model.load_state_dict({**state, "item_emb.weight": table[:, : self.config.dim]}, strict=True)
        return model.eval()


def build_shardable(name: str, num_items: int, device: str = "meta", **overrides: Any) -> ShardableSequential:
    """Like models.build_model, but the item table is a TorchRec EC (on `device`; meta = not yet allocated).
    The encoder is built with a 1-row table so a 10M-item catalog is never allocated whole."""
    encoder = build_model(name, 1, **overrides)
    encoder.config.num_items = num_items
    return ShardableSequential(encoder, device=device, copy_weights=False)
