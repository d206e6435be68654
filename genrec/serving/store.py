"""Durable event stores for live user history: SQLite in WAL mode (embedded default) and Redis (many replicas).

store = open_store("sqlite:///var/genrec/events.db")   # or "redis://127.0.0.1:6379/0"
store.add([Event("e1", "u7", "i42", "view", 1_700_000_000)])   -> AddResult(stored=1, duplicates=0, conflicts=())
store.history("u7", limit=200)                                   -> [StoredEvent(...)], oldest first

Contract shared by both stores (one test suite runs against each):
  * add() returns only once the batch is durable: SQLite commits with synchronous=FULL (WAL fsynced);
    Redis runs one Lua script per batch, and the server must run `appendonly yes` + `appendfsync always`
    for a reply to mean "on disk" (durable() reports whether it does).
  * idempotent on event_id: a repeated id with the same payload (user, item, type, timestamp) is counted
    as a duplicate and never stored twice.
  * an id reused with a DIFFERENT payload is a conflict: add() stores nothing of that batch and returns
    the conflicts (the batch is all or nothing, so a client can fix it and resend it whole).
  * history() is per user in arrival order (oldest first), the last `limit` events.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp: int  # unix seconds

    def payload(self) -> tuple[str, str, str, int]:
        """What must match for a repeated event_id to be a duplicate rather than a conflict."""
        return (self.user_id, self.item_id, self.event_type, int(self.timestamp))


@dataclass(frozen=True)
class StoredEvent(Event):
    seq: int = 0  # arrival order within the store (per user for Redis, global for SQLite)


@dataclass(frozen=True)
class Conflict:
    """events[index] reuses `event_id` with another payload than `existing`: the stored event, or an earlier
    event of the same batch (existing_index)."""

    index: int
    event_id: str
    existing: Event
    existing_index: int | None = None  # None: `existing` is already in the store


@dataclass(frozen=True)
class AddResult:
    stored: int
    duplicates: int
    conflicts: tuple[Conflict, ...] = ()  # non-empty: nothing of the batch was stored


class EventStore(Protocol):
    url: str

    def add(self, events: list[Event]) -> AddResult: ...
    def history(self, user_id: str, limit: int) -> list[StoredEvent]: ...
    def histories(self, user_ids: list[str], limit: int) -> list[list[StoredEvent]]: ...
    def has_user(self, user_id: str) -> bool: ...
    def has_item(self, item_id: str) -> bool: ...
    def get(self, event_id: str) -> StoredEvent | None: ...
    def count(self) -> int: ...
    def ping(self) -> bool: ...
    def durable(self) -> bool: ...
    def close(self) -> None: ...


class StoreError(ValueError):
    """A store URL that cannot be used."""


def _first_of_each_id(events: list[Event]) -> tuple[list[tuple[int, Event]], int, list[Conflict]]:
    """Within one batch: the first event of each id (with its index), the repeats with the same payload
    (duplicates), and the repeats with another payload (conflicts)."""
    first: dict[str, tuple[int, Event]] = {}
    duplicates, conflicts = 0, []
    for i, e in enumerate(events):
        seen = first.get(e.event_id)
        if seen is None:
            first[e.event_id] = (i, e)
        elif seen[1].payload() == e.payload():
            duplicates += 1
        else:
            conflicts.append(Conflict(i, e.event_id, _plain(seen[1]), existing_index=seen[0]))
    return list(first.values()), duplicates, conflicts


def _plain(e: Event) -> Event:
    return Event(e.event_id, e.user_id, e.item_id, e.event_type, int(e.timestamp))


def open_store(url: str) -> EventStore:
    """sqlite:///relative.db, sqlite:////absolute.db (SQLAlchemy's convention), redis://HOST:PORT/DB,
    or a bare file path (SQLite)."""
    parsed = urlparse(url)
    if parsed.scheme == "":
        return SQLiteStore(Path(url))
    if parsed.scheme == "sqlite":
        path = url[len("sqlite://") :]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise StoreError(f"store {url!r}: sqlite URL needs a file path, e.g. sqlite:///events.db")
        return SQLiteStore(Path(path))
    if parsed.scheme == "redis":
        return RedisStore(url)
    raise StoreError(f"store {url!r}: use sqlite:///PATH or redis://HOST:PORT/DB")


# ---------------------------------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    timestamp  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id, seq);
CREATE INDEX IF NOT EXISTS events_item ON events (item_id);
"""


class SQLiteStore:
    """One connection per thread (readers run concurrently under WAL); writes serialise on a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        with self._write_lock:
            self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # autocommit mode (isolation_level=None): transactions are explicit BEGIN IMMEDIATE ... COMMIT
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit: durable before the 2xx
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def add(self, events: list[Event]) -> AddResult:
        if not events:
            return AddResult(0, 0)
        unique, duplicates, conflicts = _first_of_each_id(events)
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored_rows = self._existing(conn, [e.event_id for _, e in unique])
                new = []
                for i, e in unique:
                    old = stored_rows.get(e.event_id)
                    if old is None:
                        new.append((e.event_id, e.user_id, e.item_id, e.event_type, int(e.timestamp)))
                    elif old.payload() == e.payload():
                        duplicates += 1
                    else:
                        conflicts.append(Conflict(i, e.event_id, old))
                if conflicts:
                    conn.execute("ROLLBACK")
                    return AddResult(0, 0, tuple(sorted(conflicts, key=lambda c: c.index)))
                conn.executemany(
                    "INSERT INTO events (event_id, user_id, item_id, event_type, timestamp) VALUES (?, ?, ?, ?, ?)",
                    new,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return AddResult(len(new), duplicates)

    @staticmethod
    def _existing(conn: sqlite3.Connection, ids: list[str], chunk: int = 500) -> dict[str, Event]:
        out: dict[str, Event] = {}
        for p in range(0, len(ids), chunk):  # stay under SQLite's bound-parameter limit
            part = ids[p : p + chunk]
            rows = conn.execute(
                "SELECT event_id, user_id, item_id, event_type, timestamp FROM events "
                f"WHERE event_id IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
            out.update((r[0], Event(*r)) for r in rows)
        return out

    def history(self, user_id: str, limit: int) -> list[StoredEvent]:
        rows = (
            self._conn()
            .execute(
                "SELECT event_id, user_id, item_id, event_type, timestamp, seq FROM events "
                "WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
                (user_id, int(limit)),
            )
            .fetchall()
        )
        return [StoredEvent(*r) for r in reversed(rows)]

    def histories(self, user_ids: list[str], limit: int) -> list[list[StoredEvent]]:
        """history() of each user (a local file: no round trip to save)."""
        return [self.history(u, limit) for u in user_ids]

    def has_user(self, user_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM events WHERE user_id = ? LIMIT 1", (user_id,)).fetchone() is not None

    def has_item(self, item_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM events WHERE item_id = ? LIMIT 1", (item_id,)).fetchone() is not None

    def get(self, event_id: str) -> StoredEvent | None:
        row = (
            self._conn()
            .execute(
                "SELECT event_id, user_id, item_id, event_type, timestamp, seq FROM events WHERE event_id = ?",
                (event_id,),
            )
            .fetchone()
        )
        return StoredEvent(*row) if row else None

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def ping(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def durable(self) -> bool:
        return True

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        self._local = threading.local()


# ---------------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------------

# KEYS: none (single instance). ARGV: prefix, then 5 fields per event (event ids unique within the call).
# Atomically: first check every id; if any {p}ev:{id} holds another payload, write nothing and return the
# conflicts. Else per new id: SET {p}ev:{id} to the payload, RPUSH {p}u:{user} payload, SADD {p}items item,
# INCR {p}n. Returns {stored, duplicates, then (argument position, stored payload) per conflict}.
_ADD_SCRIPT = """
local p = ARGV[1]
local duplicates, new, conflicts = 0, {}, {}
for i = 2, #ARGV, 5 do
  local old = redis.call('GET', p .. 'ev:' .. ARGV[i])
  if not old then
    new[#new + 1] = i
  else
    local e = cjson.decode(old)
    if e[2] == ARGV[i + 1] and e[3] == ARGV[i + 2] and e[4] == ARGV[i + 3] and e[5] == tonumber(ARGV[i + 4]) then
      duplicates = duplicates + 1
    else
      conflicts[#conflicts + 1] = (i - 2) / 5
      conflicts[#conflicts + 1] = old
    end
  end
end
if #conflicts > 0 then
  local out = {0, 0}
  for _, v in ipairs(conflicts) do out[#out + 1] = v end
  return out
end
for _, i in ipairs(new) do
  local id, user, item = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local seq = redis.call('INCR', p .. 'seq')
  local payload = cjson.encode({id, user, item, ARGV[i + 3], tonumber(ARGV[i + 4]), seq})
  redis.call('SET', p .. 'ev:' .. id, payload)
  redis.call('RPUSH', p .. 'u:' .. user, payload)
  redis.call('SADD', p .. 'items', item)
  redis.call('INCR', p .. 'n')
end
return {#new, duplicates}
"""


class RedisStore:
    """Keys under a prefix (default "genrec:"): ev:{event_id} -> payload, u:{user_id} -> list of payloads."""

    def __init__(self, url: str, prefix: str = "genrec:") -> None:
        try:
            import redis
        except ImportError as e:  # pragma: no cover - redis-py is a declared dependency
            raise StoreError("redis store needs the 'redis' package (pip install redis)") from e
        self.url = url
        self.prefix = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, decode_responses=True)
        self._add = self._client.register_script(_ADD_SCRIPT)

    @staticmethod
    def _parse(payload: str) -> StoredEvent:
        eid, user, item, etype, ts, seq = json.loads(payload)
        return StoredEvent(eid, user, item, etype, int(ts), int(seq))

    def add(self, events: list[Event]) -> AddResult:
        if not events:
            return AddResult(0, 0)
        unique, duplicates, conflicts = _first_of_each_id(events)
        if conflicts:  # inside the batch: nothing to ask the server
            return AddResult(0, 0, tuple(conflicts))
        args: list[str | int] = [self.prefix]
        for _, e in unique:
            args += [e.event_id, e.user_id, e.item_id, e.event_type, int(e.timestamp)]
        stored, dups, *rest = self._add(keys=[], args=args)
        if rest:
            found = [Conflict(unique[int(j)][0], unique[int(j)][1].event_id, _plain(self._parse(old))) for j, old in zip(rest[::2], rest[1::2], strict=True)]  # fmt: skip
            return AddResult(0, 0, tuple(sorted(found, key=lambda c: c.index)))
        return AddResult(int(stored), duplicates + int(dups))

    def history(self, user_id: str, limit: int) -> list[StoredEvent]:
        return [self._parse(p) for p in self._client.lrange(f"{self.prefix}u:{user_id}", -int(limit), -1)]

    def histories(self, user_ids: list[str], limit: int) -> list[list[StoredEvent]]:
        """history() of each user in one round trip (a batch of requests reads its users together)."""
        pipe = self._client.pipeline(transaction=False)
        for u in user_ids:
            pipe.lrange(f"{self.prefix}u:{u}", -int(limit), -1)
        return [[self._parse(p) for p in rows] for rows in pipe.execute()]

    def has_user(self, user_id: str) -> bool:
        return bool(self._client.exists(f"{self.prefix}u:{user_id}"))

    def has_item(self, item_id: str) -> bool:
        return bool(self._client.sismember(f"{self.prefix}items", item_id))

    def get(self, event_id: str) -> StoredEvent | None:
        p = self._client.get(f"{self.prefix}ev:{event_id}")
        return self._parse(p) if p else None

    def count(self) -> int:
        return int(self._client.get(f"{self.prefix}n") or 0)

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except Exception:  # noqa: BLE001 - any connection problem means "not ready"
            return False

    def durable(self) -> bool:
        cfg = self._client.config_get("append*")
        return cfg.get("appendonly") == "yes" and cfg.get("appendfsync") == "always"

    def close(self) -> None:
        self._client.close()


def event_dict(e: StoredEvent) -> dict:
    return asdict(e)
