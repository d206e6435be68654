"""(user, candidate, context) rows for rankers and the two towers' inputs, built from FeatureTables.

A ranking row r is a user u_r with the history that ends (exclusive) at position end_r of data.items, and a
candidate item c_r. Its features:
    sparse  cand_item, hist_items (last H items, mean-pooled), last_item      -> one shared item-id table
            u_<attr> (user attributes), i_<attr> (candidate attributes, multi-hot ones included)
            c_hour, c_weekday (request time = the target event's time), c_last_event (type of the last event)
            x_* crossed features for the wide part: last item x candidate, last item's category x the
            candidate's, every user attribute x the candidate's category (hashed into `cross_buckets`)
    dense   candidate numeric attributes (popularity, year, price), user numeric attributes,
            log history length, share of the last H items in the candidate's category, then `extra` columns
            (retrieval scores) supplied by the caller
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genrec.data.batches import gather_windows
from genrec.data.sequences import SequenceData
from genrec.features.encoders import hash_cross
from genrec.features.jagged import Rows, SparseColumns, last_of, take_jagged
from genrec.features.schema import FeatureSchema, TableSpec
from genrec.features.tables import FeatureTables

ITEM_TABLE = "t_item_id"  # never "items": a later sharding plan keys tables by name


@dataclass
class FeatureConfig:
    history_len: int = 20
    cross_buckets: int = 1 << 18
    extra_dense: list[str] = field(default_factory=list)  # names of the caller's extra dense columns


def recent_items(data: SequenceData, users: np.ndarray, ends: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Last h items before `ends` (exclusive, positions in data.items) of each row's user -> jagged (values, offsets)."""
    starts = np.maximum(data.offsets[users], ends - h)
    idx, offsets = gather_windows(starts, ends)
    return data.items[idx], offsets


@dataclass
class Requests:
    """B requests as the features read them (a row = a request + a candidate), from dataset positions
    (RankingFeaturizer.requests_at) or from a served request's history arrays (Requests.from_histories).

    users: (B,) int64 0-based dataset user, -1 for a user the feature tables do not know
    recent, recent_offsets: jagged last H known items of each history, oldest first
    hist_len: (B,) int64 length of the whole history
    times: (B,) int64 request time (unix seconds) or None;  last_event: (B,) int64 last event's type or None
    """

    users: np.ndarray
    recent: np.ndarray
    recent_offsets: np.ndarray
    hist_len: np.ndarray
    times: np.ndarray | None = None
    last_event: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_histories(
        cls,
        users: np.ndarray,
        histories: list[np.ndarray],
        h: int,
        times: np.ndarray | None = None,
        last_event: np.ndarray | None = None,
    ) -> Requests:
        """histories: per request its known items, oldest first (the whole history; the last h are read)."""
        recent = [x[-h:] if h > 0 else x[:0] for x in histories]
        off = np.zeros(len(recent) + 1, np.int64)
        np.cumsum([len(x) for x in recent], out=off[1:])
        values = np.concatenate(recent).astype(np.int64) if recent else np.zeros(0, np.int64)
        lens = np.array([len(x) for x in histories], np.int64)
        return cls(np.asarray(users, np.int64), values, off, lens, times, last_event)


class RankingFeaturizer:
    def __init__(self, tables: FeatureTables, data: SequenceData, config: FeatureConfig | None = None) -> None:
        self.t, self.data, self.cfg = tables, data, config or FeatureConfig()

    def _has_time(self) -> bool:
        return self.t.has_time and self.data.timestamps is not None

    def _has_events(self) -> bool:
        return bool(self.t.num_event_types) and self.data.event_types is not None

    def requests_at(self, users: np.ndarray, ends: np.ndarray) -> Requests:
        """Requests of histories that end (exclusive) at positions `ends` of data.items; the request time is
        the next event's (the target's) time."""
        d = self.data
        users, ends = np.asarray(users, np.int64), np.asarray(ends, np.int64)
        recent, off = recent_items(d, users, ends, self.cfg.history_len)
        times = last = None
        if self._has_time():
            times = d.timestamps[np.minimum(ends, len(d.items) - 1)]
        if self._has_events():
            has = ends > d.offsets[users]
            last = np.where(has, d.event_types[np.maximum(ends - 1, 0)], 0)
        return Requests(users, recent, off, ends - d.offsets[users], times, last)

    def _context_ids(self, req: Requests) -> dict[str, np.ndarray]:
        """Request context: hour and weekday of the request time, type of the last seen event."""
        out: dict[str, np.ndarray] = {}
        if self._has_time():
            if req.times is None:
                raise ValueError("requests need their times: this featurizer's dataset has timestamps")
            out["c_hour"] = req.times // 3600 % 24 + 1
            out["c_weekday"] = (req.times // 86_400 + 3) % 7 + 1  # 1970-01-01 was a Thursday
        if self._has_events():
            out["c_last_event"] = np.zeros(len(req), np.int64) if req.last_event is None else req.last_event
        return out

    def _user_ids(self, users: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Categorical and numeric user attributes of each request; unknown users (-1) get bucket 0 / 0.0."""
        known, u = users >= 0, np.maximum(users, 0)
        cat = {n: np.where(known, ids[u], 0) for n, ids in self.t.users.cat.items()}
        num = {n: np.where(known, x[u], 0.0).astype(np.float32) for n, x in self.t.users.num.items()}
        return cat, num

    def _context_sizes(self) -> dict[str, int]:
        sizes = {}
        if self._has_time():
            sizes |= {"c_hour": 25, "c_weekday": 8}
        if self._has_events():
            sizes["c_last_event"] = self.t.num_event_types + 1
        return sizes

    def _crosses(self) -> list[str]:
        x = ["x_last_item_cand"]
        if self.t.category.max() > 0:
            x += ["x_last_cat_cand_cat"] + [f"x_u_{a}_cand_cat" for a in self.t.users.cat]
        return x

    def dense_names(self) -> list[str]:
        return [name for _, dense in self.sides().values() for name in dense]

    def schema(self) -> FeatureSchema:
        t = self.t
        tables = [TableSpec(ITEM_TABLE, t.num_items + 1, ["cand_item", "hist_items", "last_item"], "mean")]
        tables += [TableSpec(f"t_u_{n}", s, [f"u_{n}"]) for n, s in t.users.sizes.items() if n in t.users.cat]
        tables += [TableSpec(f"t_i_{n}", t.items.sizes[n], [f"i_{n}"]) for n in t.items.cat]
        tables += [TableSpec(f"t_i_{n}", t.items.sizes[n], [f"i_{n}"], "mean") for n in t.items.multi]
        tables += [TableSpec(f"t_{n}", s, [n]) for n, s in self._context_sizes().items()]
        tables += [TableSpec(f"t_{n}", self.cfg.cross_buckets + 1, [n], wide_only=True) for n in self._crosses()]
        return FeatureSchema(dense=self.dense_names(), tables=tables)

    def rows(
        self,
        users: np.ndarray,
        cands: np.ndarray,
        ends: np.ndarray,
        extra: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        groups: np.ndarray | None = None,
    ) -> Rows:
        """users, cands, ends: (R,) int64 -> Rows. extra: (R, len(extra_dense)) float, labels: (R,) 0/1."""
        req = self.requests_at(users, ends)
        return self.request_rows(req, np.arange(len(req)), cands, extra, labels, groups)

    def request_rows(
        self,
        req: Requests,
        of: np.ndarray,
        cands: np.ndarray,
        extra: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        groups: np.ndarray | None = None,
    ) -> Rows:
        """Row r = request of[r] with candidate cands[r]. of, cands: (R,) int64 -> Rows: the item side of
        cands[r], the request side of of[r] and the pair's own columns, side by side (dense in dense_names order)."""
        of, cands = np.asarray(of, np.int64), np.asarray(cands, np.int64)
        i_dense, i_sp = self.item_columns(cands)
        q_dense, q_sp = self.request_columns(req)
        p_dense, p_sp = self.pair_columns(req, of, cands, extra)
        q_sp = q_sp.take(of)
        sp = SparseColumns(
            {**i_sp.values, **q_sp.values, **p_sp.values}, {**i_sp.offsets, **q_sp.offsets, **p_sp.offsets}
        )
        dense = np.concatenate([i_dense, q_dense[of], p_dense], 1)
        lab = np.zeros(len(cands), np.float32) if labels is None else np.asarray(labels, np.float32)
        return Rows(dense, sp, lab, groups)

    # ---- the three sides of a ranking row: what depends on the item, on the request, on both ---------------
    def sides(self) -> dict[str, tuple[list[str], list[str]]]:
        """side -> (sparse keys, dense names) of a row's item, request and pair columns (the pair's sparse
        keys are the wide part's crosses). A scorer that is linear in some inputs precomputes the item side."""
        t = self.t
        return {
            "item": (["cand_item", *(f"i_{n}" for n in [*t.items.cat, *t.items.multi])], [f"i_{n}" for n in t.items.num]),
            "request": (
                ["hist_items", "last_item", *(f"u_{n}" for n in t.users.cat), *self._context_sizes()],
                [*(f"u_{n}" for n in t.users.num), "hist_len_log"],
            ),
            "pair": (
                self._crosses(),
                ["recent_cat_share"] + (["covisit_last", "covisit_recent"] if t.covisit is not None else [])
                + list(self.cfg.extra_dense),
            ),
        }  # fmt: skip

    def item_columns(self, items: np.ndarray) -> tuple[np.ndarray, SparseColumns]:
        """Candidate-side columns of `items` (n,): dense (n, item numeric attributes), sparse id columns."""
        t = self.t
        items = np.asarray(items, np.int64)
        sp = SparseColumns.single({"cand_item": items})
        for n, ids in t.items.cat.items():
            sp.add(f"i_{n}", ids[items])
        for n, (vals, offs) in t.items.multi.items():
            sp.add(f"i_{n}", *take_jagged(vals, offs, items))
        cols = [t.items.num[n][items] for n in t.items.num]
        return _stack(cols, len(items)), sp

    def request_columns(self, req: Requests) -> tuple[np.ndarray, SparseColumns]:
        """Request-side columns of B requests: recent and last item, user attributes, request context."""
        hist, off = req.recent, req.recent_offsets
        sp = SparseColumns.single({"last_item": last_of(hist, off)})
        sp.add("hist_items", hist, off)
        ucat, unum = self._user_ids(req.users)
        for n, ids in ucat.items():
            sp.add(f"u_{n}", ids)
        for n, ids in self._context_ids(req).items():
            sp.add(n, ids)
        cols = list(unum.values()) + [np.log1p(req.hist_len).astype(np.float32)]
        return _stack(cols, len(req)), sp

    def pair_columns(
        self, req: Requests, of: np.ndarray, cands: np.ndarray, extra: np.ndarray | None = None
    ) -> tuple[np.ndarray, SparseColumns]:
        """Columns of (request of[r], candidate cands[r]) pairs: hashed crosses, recent-category share,
        co-visitation counts, then the caller's `extra` columns (R, len(extra_dense))."""
        t, cfg = self.t, self.cfg
        r = len(cands)
        hist, hist_off = take_jagged(req.recent, req.recent_offsets, of)
        hist_len = np.diff(hist_off)
        last = last_of(hist, hist_off)
        b = cfg.cross_buckets
        cand_cat = t.category[cands]
        sp = SparseColumns.single({"x_last_item_cand": hash_cross(last, cands, b)})
        if t.category.max() > 0:
            sp.add("x_last_cat_cand_cat", hash_cross(t.category[last], cand_cat, b))
            for n, ids in self._user_ids(req.users)[0].items():  # per request, then per row
                sp.add(f"x_u_{n}_cand_cat", hash_cross(ids[of], cand_cat, b))
        # share of the recent items in the candidate's category: a cheap, strong ranking signal
        same = (t.category[hist] == np.repeat(cand_cat, hist_len)) & (np.repeat(cand_cat, hist_len) > 0)
        share = (
            np.add.reduceat(same.astype(np.float32), np.minimum(hist_off[:-1], max(len(hist) - 1, 0)))
            if len(hist)
            else np.zeros(r)
        )
        cols = [np.where(hist_len > 0, share / np.maximum(hist_len, 1), 0.0).astype(np.float32)]
        if t.covisit is not None:  # how often the candidate followed the last / the recent items in training
            last_c = t.covisit.lookup(last, cands)
            rec = t.covisit.lookup(hist, np.repeat(cands, hist_len))
            rec_sum = np.bincount(np.repeat(np.arange(r), hist_len), weights=rec, minlength=r)
            cols += [np.log1p(last_c), np.log1p(rec_sum).astype(np.float32)]
        dense = _stack(cols, r)
        if cfg.extra_dense:
            if extra is None or extra.shape != (r, len(cfg.extra_dense)):
                raise ValueError(
                    f"rows need extra dense columns {cfg.extra_dense} of shape ({r}, {len(cfg.extra_dense)})"
                )
            dense = np.concatenate([dense, extra.astype(np.float32)], 1)
        return dense, sp

    # ---- two-tower inputs -------------------------------------------------------------------------
    def user_schema(self) -> FeatureSchema:
        t = self.t
        tables = [TableSpec("t_tt_hist_item", t.num_items + 1, ["hist_items", "last_item"], "mean")]
        tables += [TableSpec(f"t_u_{n}", t.users.sizes[n], [f"u_{n}"]) for n in t.users.cat]
        tables += [TableSpec(f"t_{n}", s, [n]) for n, s in self._context_sizes().items() if n == "c_last_event"]
        return FeatureSchema(dense=[f"u_{n}" for n in t.users.num] + ["hist_len_log"], tables=tables)

    def item_schema(self) -> FeatureSchema:
        t = self.t
        tables = [TableSpec("t_tt_item_id", t.num_items + 1, ["cand_item"])]
        tables += [TableSpec(f"t_i_{n}", t.items.sizes[n], [f"i_{n}"]) for n in t.items.cat]
        tables += [TableSpec(f"t_i_{n}", t.items.sizes[n], [f"i_{n}"], "mean") for n in t.items.multi]
        dense = [f"i_{n}" for n in t.items.num if n != "popularity"]  # log-Q handles popularity
        return FeatureSchema(dense=dense or ["bias"], tables=tables)

    def user_side(self, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, SparseColumns]:
        """Two-tower user inputs for histories ending (exclusive) at `ends`: dense (B, F), sparse columns."""
        return self.request_user_side(self.requests_at(users, ends))

    def request_user_side(self, req: Requests) -> tuple[np.ndarray, SparseColumns]:
        """Two-tower user inputs of B requests: dense (B, F), sparse columns (the ranker's request side less
        the request time, which the user tower does not read)."""
        dense, sp = self.request_columns(req)
        for key in ("c_hour", "c_weekday"):
            sp.values.pop(key, None), sp.offsets.pop(key, None)
        return dense, sp

    def item_side(self, items: np.ndarray) -> tuple[np.ndarray, SparseColumns]:
        """Two-tower item inputs: the ranker's item side without popularity (log-Q correction handles it)."""
        dense, sp = self.item_columns(items)
        keep = [j for j, n in enumerate(self.t.items.num) if n != "popularity"]
        return (dense[:, keep] if keep else np.zeros((len(dense), 1), np.float32)), sp


def _stack(cols: list[np.ndarray], n: int) -> np.ndarray:
    return np.stack(cols, 1).astype(np.float32) if cols else np.zeros((n, 0), np.float32)
