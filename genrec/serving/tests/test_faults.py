"""Fault tests against the real server process: kill -9 mid-stream, restart on the same store, hot reload
under load. Each starts `python -m genrec.serving.cli` (uvicorn) in a subprocess on a free loopback port."""

from __future__ import annotations

import itertools
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from genrec.serving.store import RedisStore, SQLiteStore
from genrec.serving.tests.conftest import TOKEN, Server

TS = 1_750_000_000  # in the past: the API rejects timestamps over a day ahead of its clock


def snapshot(url: str, user: str) -> tuple[list, list]:
    hist = httpx.get(f"{url}/v1/users/{user}/history", params={"limit": 10_000}).json()["events"]
    recs = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 10}).json()["items"]
    return hist, [(r["item_id"], round(r["score"], 4)) for r in recs]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_kill9_loses_no_acknowledged_event_and_restart_serves_same_history(
    kind: str, tiny_run: Path, tmp_path: Path, server_factory, request: pytest.FixtureRequest
) -> None:
    store_url = f"sqlite:///{tmp_path}/events.db" if kind == "sqlite" else request.getfixturevalue("redis_url")
    first: Server = server_factory(tiny_run, store_url).start()
    known_user = "u1"
    items = [f"i{i}" for i in range(1, 40)]
    steady = {"events": [{"event_id": f"steady-{i}", "user_id": known_user, "item_id": items[i], "event_type": "view", "timestamp": TS + i} for i in range(5)]}  # fmt: skip
    assert httpx.post(f"{first.url}/v1/events", json=steady).status_code == 200
    before = snapshot(first.url, known_user)
    assert len(before[0]) > 5 and before[1]

    acked: list[str] = []
    errors: list[str] = []

    def stream() -> None:  # batches of 5 events, sequential, until the server dies under it
        with httpx.Client(base_url=first.url, timeout=5.0) as c:
            for n in itertools.count():
                batch = [{"event_id": f"s{n}-{j}", "user_id": f"streamer{j}", "item_id": random.choice(items), "event_type": "view", "timestamp": TS + n} for j in range(5)]  # fmt: skip
                try:
                    r = c.post("/v1/events", json={"events": batch})
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)
                    return
                if r.status_code == 200:
                    acked.extend(e["event_id"] for e in batch)

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 10
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.kill()  # SIGKILL while the client is mid-stream
    t.join(10)
    assert errors, "the stream should have been cut by the kill"
    assert len(acked) >= 200

    store = SQLiteStore(tmp_path / "events.db") if kind == "sqlite" else RedisStore(store_url)
    missing = [e for e in acked if store.get(e) is None]
    store.close()
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"

    second: Server = server_factory(tiny_run, store_url).start()
    assert snapshot(second.url, known_user) == before  # same history, same recommendations
    hist = httpx.get(f"{second.url}/v1/users/streamer0/history", params={"limit": 10_000}).json()["events"]
    assert {e["event_id"] for e in hist} >= {e for e in acked if e.endswith("-0")}


def test_hot_reload_under_load_fails_no_request(
    tiny_run: Path, other_run: Path, tmp_path: Path, server_factory
) -> None:
    srv: Server = server_factory(tiny_run, f"sqlite:///{tmp_path}/events.db").start()
    stop = threading.Event()
    statuses: list[int] = []
    failures: list[str] = []
    models: set[str] = set()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=srv.url, timeout=30.0) as c:
            for n in itertools.count():
                if stop.is_set():
                    return
                try:
                    if n % 4 == 3:
                        ev = {"event_id": f"c{seed}-{n}", "user_id": f"u{rng.randrange(300)}", "item_id": f"i{rng.randrange(200)}", "event_type": "view", "timestamp": TS + n}  # fmt: skip
                        r = c.post("/v1/events", json={"events": [ev]})
                    else:
                        user = f"u{rng.randrange(300)}" if rng.random() < 0.8 else f"new{seed}-{n}"
                        r = c.post("/v1/recommend", json={"user_id": user, "k": 10})
                        if r.status_code == 200:
                            models.add(r.json()["model"])
                    statuses.append(r.status_code)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reloads = []
    time.sleep(0.5)
    for target in (other_run, tiny_run, other_run, tiny_run):
        r = httpx.post(f"{srv.url}/v1/admin/reload", json={"bundle": str(target)}, headers=auth, timeout=60)
        reloads.append(r.status_code)
        time.sleep(0.4)
    stop.set()
    for t in threads:
        t.join(30)
    assert reloads == [200, 200, 200, 200]
    assert not failures, failures[:5]
    assert len(statuses) > 50
    assert models == {str(tiny_run), str(other_run)}  # traffic was served by both models
    metrics = httpx.get(f"{srv.url}/metrics").text
    assert 'genrec_model_reloads_total{outcome="ok"} 4' in metrics
