"""One suite, both stores: durability contract, idempotency, order, concurrency, reopen."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from genrec.serving.store import Event, RedisStore, SQLiteStore, StoreError, open_store
from genrec.serving.tests.conftest import make_store


@pytest.fixture
def store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    s = make_store(store_kind, tmp_path, request)
    yield s
    s.close()


def ev(i: int, user: str = "u1", item: str | None = None, ts: int | None = None, etype: str = "view") -> Event:
    return Event(f"e{i}", user, item or f"i{i}", etype, ts if ts is not None else 1_700_000_000 + i)


def test_add_is_idempotent_on_event_id(store) -> None:
    assert store.add([ev(1), ev(2)]).stored == 2
    res = store.add([ev(2), ev(3), ev(3)])  # a repeat from an earlier batch and one inside the batch
    assert (res.stored, res.duplicates) == (1, 2)
    assert store.count() == 3
    # a replay with other content is a conflict, not a duplicate, and does not overwrite
    res = store.add([Event("e1", "u1", "other", "purchase", 5)])
    assert (res.stored, res.duplicates, [c.event_id for c in res.conflicts]) == (0, 0, ["e1"])
    assert store.get("e1").item_id == "i1"
    assert store.get("missing") is None


def test_reused_event_id_with_another_payload_is_a_conflict_and_the_batch_is_not_stored(store) -> None:
    store.add([ev(1), ev(2)])
    changed = [
        Event("e1", "u1", "i1", "view", 1_700_000_001 + 1),  # only the timestamp differs
        Event("e2", "u2", "i2", "view", 1_700_000_002),  # only the user differs
    ]
    res = store.add([ev(9), changed[0], changed[1]])  # a new event and two conflicts
    assert (res.stored, res.duplicates) == (0, 0)
    assert [(c.index, c.event_id, c.existing_index) for c in res.conflicts] == [(1, "e1", None), (2, "e2", None)]
    assert res.conflicts[0].existing == Event("e1", "u1", "i1", "view", 1_700_000_001)  # what is stored
    assert store.count() == 2 and store.get("e9") is None  # all or nothing
    assert store.history("u2", 10) == []
    # inside one batch: the second use of an id with another payload names the first
    res = store.add([ev(5), Event("e5", "u1", "i5", "purchase", 1_700_000_005)])
    assert [(c.index, c.existing_index, c.existing.event_type) for c in res.conflicts] == [(1, 0, "view")]
    assert store.get("e5") is None
    # the same payload again, inside the batch and across batches, is a duplicate and the batch is stored
    res = store.add([ev(9), ev(9), ev(1)])
    assert (res.stored, res.duplicates, res.conflicts) == (1, 2, ())


def test_concurrent_conflicting_writers_store_one_payload(store) -> None:
    # 8 threads race to write the same fresh ids with their own item: each id lands once, every loser is told
    results: dict[int, list] = {}

    def writer(t: int) -> None:
        results[t] = [store.add([Event(f"r{n}", "u", f"item-{t}", "view", 1)]) for n in range(10)]

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.count() == 10
    for n in range(10):
        winners = [t for t in range(8) if results[t][n].stored == 1]
        losers = [t for t in range(8) if results[t][n].conflicts]
        assert len(winners) == 1 and sorted(winners + losers) == list(range(8))
        assert store.get(f"r{n}").item_id == f"item-{winners[0]}"
        assert {results[t][n].conflicts[0].existing.item_id for t in losers} == {f"item-{winners[0]}"}


def test_history_is_per_user_in_arrival_order_with_limit(store) -> None:
    store.add([ev(1, "a"), ev(2, "b"), ev(3, "a")])
    store.add([ev(4, "a", ts=1)])  # an old timestamp still arrives last
    assert [e.event_id for e in store.history("a", 10)] == ["e1", "e3", "e4"]
    assert [e.event_id for e in store.history("a", 2)] == ["e3", "e4"]
    assert [e.event_id for e in store.history("b", 10)] == ["e2"]
    assert store.history("nobody", 10) == []
    # a batch of requests reads its users together: the same lists, in the order asked
    users = ["b", "nobody", "a", "a"]
    assert store.histories(users, 2) == [store.history(u, 2) for u in users]
    assert store.histories([], 5) == []
    h = store.history("a", 10)[0]
    assert (h.user_id, h.item_id, h.event_type, h.timestamp) == ("a", "i1", "view", 1_700_000_001)
    assert store.has_user("a") and not store.has_user("zzz")
    assert store.has_item("i2") and not store.has_item("nope")


def test_odd_but_valid_ids_round_trip(store) -> None:
    weird = Event("id with spaces/and:colons", "ユーザー", "item\"'{}", "add_to_cart", 0)
    store.add([weird])
    assert store.history("ユーザー", 5)[0].item_id == "item\"'{}"
    assert store.get("id with spaces/and:colons").user_id == "ユーザー"


def test_concurrent_writers_store_each_event_once(store) -> None:
    # 4 threads write overlapping id ranges: every id lands exactly once
    def writer(offset: int) -> None:
        for start in range(offset, offset + 60, 10):
            store.add([ev(i, user=f"u{i % 3}") for i in range(start, start + 10)])

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 30, 30, 60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 120
    ids = [e.event_id for u in ("u0", "u1", "u2") for e in store.history(u, 1000)]
    assert sorted(ids) == sorted(f"e{i}" for i in range(120))


def test_reopen_sees_everything(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s = make_store(store_kind, tmp_path, request)
    s.add([ev(i) for i in range(5)])
    s.close()
    again = SQLiteStore(s.path) if store_kind == "sqlite" else RedisStore(s.url, prefix=s.prefix)
    assert again.count() == 5
    assert [e.event_id for e in again.history("u1", 10)] == [f"e{i}" for i in range(5)]
    assert again.ping() and again.durable()
    again.close()


def test_open_store_urls(tmp_path: Path, redis_url: str) -> None:
    s = open_store(f"sqlite:///{tmp_path}/a.db")  # four slashes: absolute
    assert isinstance(s, SQLiteStore) and s.path == tmp_path / "a.db"
    s.close()
    assert isinstance(open_store(str(tmp_path / "b.db")), SQLiteStore)
    r = open_store(redis_url)
    assert isinstance(r, RedisStore) and r.ping()
    with pytest.raises(StoreError, match="sqlite:///PATH or redis://"):
        open_store("postgres://x")
    with pytest.raises(StoreError, match="needs a file path"):
        open_store("sqlite://")
