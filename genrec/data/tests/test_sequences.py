import numpy as np
import polars as pl
import pytest

from genrec.data.batches import eval_batches, train_batches
from genrec.data.sequences import build_sequences, leave_one_out


def log(rows: list[tuple[str, str, int]], event_types: list[str] | None = None) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    return df.with_columns(pl.Series("event_type", event_types)) if event_types else df


def test_stable_sort_keeps_file_order_on_equal_timestamps() -> None:
    events = log([("u1", "c", 5), ("u2", "x", 1), ("u1", "a", 3), ("u1", "b", 5), ("u1", "d", 5), ("u2", "y", 0)])
    seq = build_sequences(events)
    raw = [[seq.item_vocab.raw(int(i)) for i in seq.user_items(u)] for u in range(seq.num_users)]
    assert seq.user_vocab.ids == ["u1", "u2"]
    assert raw == [["a", "c", "b", "d"], ["y", "x"]]  # c, b, d share t=5: file order
    assert seq.item_vocab.ids[:2] == ["c", "x"]  # first appearance
    assert seq.offsets.tolist() == [0, 4, 6]
    assert seq.timestamps.tolist() == [3, 5, 5, 5, 0, 1]


def test_funnel_collapses_but_repeat_purchase_stays() -> None:
    events = log(
        [("u", "a", 1), ("u", "a", 2), ("u", "a", 3), ("u", "b", 4), ("u", "a", 9)],
        ["view", "cart", "purchase", "view", "purchase"],
    )
    seq = build_sequences(events)
    assert [seq.item_vocab.raw(int(i)) for i in seq.items] == ["a", "b", "a"]
    assert [seq.event_vocab.raw(int(e)) for e in seq.event_types] == ["purchase", "view", "purchase"]
    assert seq.timestamps.tolist() == [1, 4, 9]
    assert len(build_sequences(events, collapse_repeats=False).items) == 5


def test_leave_one_out_split() -> None:
    events = log([("u1", str(i), i) for i in range(1, 6)] + [("u2", "9", 1), ("u2", "8", 2)])
    split = leave_one_out(build_sequences(events))
    seq = split.data
    assert split.eval_users.tolist() == [0]  # u2 has 2 events: trained on, never evaluated
    assert [seq.item_vocab.raw(int(i)) for i in split.train_items] == ["1", "2", "3", "9", "8"]
    users, ends, targets = split.eval_inputs("valid")
    assert seq.item_vocab.raw(int(targets[0])) == "4" and ends[0] == 3
    users, ends, targets = split.eval_inputs("test")
    assert seq.item_vocab.raw(int(targets[0])) == "5" and ends[0] == 4
    with pytest.raises(ValueError):
        split.eval_inputs("train")


def test_batches_are_jagged_and_shifted() -> None:
    events = log([("u1", str(i), i) for i in range(1, 8)] + [("u2", str(i), i) for i in range(10, 14)])
    split = leave_one_out(build_sequences(events))
    batches = list(train_batches(split, batch_size=8, max_len=3, seed=0))
    assert len(batches) == 1
    b = batches[0]
    assert b.timestamps is not None and b.targets is not None
    by_user = {}
    for k, u in enumerate(b.users.tolist()):
        s, e = int(b.offsets[k]), int(b.offsets[k + 1])
        by_user[u] = (b.timestamps[s:e].tolist(), split.data.item_vocab.raw(int(b.targets[e - 1])))
    # u1 trains on events 1..5 (6, 7 held out); window of max_len + 1 = 4 -> inputs t=2,3,4, last target 5
    assert by_user[0] == ([2, 3, 4], "5")
    assert by_user[1] == ([10], "11")
    (batch, targets, seen), *_ = list(eval_batches(split, "test", 4, max_len=3))
    assert batch.offsets.tolist() == [0, 3, 3 + 3]
    assert sorted(len(s) for s in seen) == [3, 6]  # seen = the whole history before the target
    assert np.all(targets.numpy() > 0)


def test_refit_split_trains_on_the_validation_event() -> None:
    events = log([("u1", str(i), i) for i in range(1, 6)] + [("u2", "9", 1), ("u2", "8", 2)])
    split = leave_one_out(build_sequences(events), valid_in_train=True)
    seq = split.data
    assert [seq.item_vocab.raw(int(i)) for i in split.train_items] == ["1", "2", "3", "4", "9", "8"]
    assert split.train_offsets.tolist() == [0, 4, 6]
    users, ends, targets = split.eval_inputs("test")  # test is unchanged
    assert seq.item_vocab.raw(int(targets[0])) == "5" and ends[0] == 4
    with pytest.raises(ValueError, match="refit"):
        split.eval_inputs("valid")


def test_target_event_split_holds_out_the_last_two_purchases() -> None:
    # u1: a(v) b(p) c(v) d(p) e(v) f(p) g(v): test = f, valid = d, train = a b c, g (after the test) never used
    # u2: x(p) y(v): one purchase only, never evaluated, trained on in full
    types = ["view", "purchase", "view", "purchase", "view", "purchase", "view", "purchase", "view"]
    rows = [("u1", i, t) for t, i in enumerate("abcdefg")] + [("u2", "x", 20), ("u2", "y", 21)]
    seq = build_sequences(log(rows, types))
    split = leave_one_out(seq, target_events=["purchase"])
    v = seq.item_vocab
    assert split.eval_users.tolist() == [0]
    for which, target, history in (("valid", "d", "abc"), ("test", "f", "abcde")):
        users, ends, targets = split.eval_inputs(which)
        assert [v.raw(int(t)) for t in targets] == [target]
        assert [v.raw(int(i)) for i in seq.items[seq.offsets[0] : ends[0]]] == list(history)
    assert [v.raw(int(i)) for i in split.train_items] == ["a", "b", "c", "x", "y"]
    assert split.train_targets.tolist() == [False, True, False, True, False]
    purchase = seq.event_vocab.index("purchase")
    assert (split.train_events == purchase).tolist() == split.train_targets.tolist()
    (batch,) = list(train_batches(split, batch_size=8, max_len=10, seed=0))  # u1 only: u2's target is its first
    assert batch.events.tolist() == [seq.event_vocab.index(t) for t in ("view", "purchase")]
    assert batch.target_mask.tolist() == [True, False]  # a -> b (a purchase) counts, b -> c (a view) does not
    eval_batch, _, _ = next(eval_batches(split, "test", 8, 10))
    assert eval_batch.events.tolist() == [seq.event_vocab.index(t) for t in types[:5]]
    refit = leave_one_out(seq, valid_in_train=True, target_events=["purchase"])
    assert [v.raw(int(i)) for i in refit.train_items] == list("abcde") + ["x", "y"]
    with pytest.raises(ValueError, match="unknown event type 'buy'.*view, purchase"):
        leave_one_out(seq, target_events=["buy"])
    with pytest.raises(ValueError, match="needs an event_type column"):
        leave_one_out(build_sequences(log(rows)), target_events=["purchase"])


def test_validation_on_a_fixed_sample_of_users() -> None:
    from genrec.data.datasets import load_synthetic

    seq = load_synthetic("tiny", 0).sequences
    for split in (leave_one_out(seq), leave_one_out(seq, target_events=["purchase"])):
        sub = split.sample_users(50, seed=1)
        assert len(sub.eval_users) == 50 and set(sub.eval_users) <= set(split.eval_users)
        assert np.array_equal(sub.eval_users, split.sample_users(50, seed=1).eval_users)  # fixed by the seed
        users, ends, targets = sub.eval_inputs("valid")
        full = dict(zip(split.eval_users, zip(*split.eval_inputs("valid")[1:], strict=True), strict=True))
        assert all(full[u] == (e, t) for u, e, t in zip(users, ends, targets, strict=True))  # same targets
        assert split.sample_users(10**6) is split


def test_an_epoch_over_a_sample_of_users() -> None:
    from genrec.data.datasets import load_synthetic

    split = leave_one_out(load_synthetic("tiny", 0).sequences)
    every = sum(b.num_sequences for b in train_batches(split, 32, 20, seed=1))
    assert sum(b.num_sequences for b in train_batches(split, 32, 20, seed=1, max_users=50)) == 50 < every
    first = {tuple(b.items.tolist()) for b in train_batches(split, 64, 20, seed=1, max_users=50)}
    other = {tuple(b.items.tolist()) for b in train_batches(split, 64, 20, seed=2, max_users=50)}
    assert first != other  # another seed (epoch), another sample
