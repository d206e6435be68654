"""Endpoint behaviour through the FastAPI app in process (TestClient): the contract of each route."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from genrec.serving.app import RecommendResponse, create_app
from genrec.serving.config import ServeConfig
from genrec.serving.pipeline import ServingModel
from genrec.serving.store import SQLiteStore
from genrec.serving.tests.conftest import TOKEN

TS = 1_750_000_000  # in the past: the API rejects timestamps over a day ahead of its clock


@pytest.fixture
def client(bundle: ServingModel, tmp_path: Path):
    cfg = ServeConfig(store=f"sqlite:///{tmp_path}/ev.db", admin_token=TOKEN, max_batch=50, max_body_bytes=200_000)
    with TestClient(create_app(cfg, bundle=bundle)) as c:
        yield c


def events(*rows: tuple[str, str, str], etype: str = "view", ts: int = TS) -> dict:
    return {"events": [{"event_id": e, "user_id": u, "item_id": i, "event_type": etype, "timestamp": ts + n} for n, (e, u, i) in enumerate(rows)]}  # fmt: skip


def rec(client: TestClient, user: str, k: int = 10, **kw) -> dict:
    r = client.post("/v1/recommend", json={"user_id": user, "k": k, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_known_user_gets_model_items_without_seen_or_out_of_stock(client: TestClient, bundle: ServingModel) -> None:
    user = bundle.users.ids[5]
    body = rec(client, user, k=20)
    assert RecommendResponse.model_validate(body).model_dump() == body  # the documented shape, exactly
    assert body["known_user"] and not body["cold_start"] and len(body["items"]) == 20
    assert {it["stage"] for it in body["items"]} == {"hstu"}  # the bundle's retrieval stage: its component
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    seen = {bundle.vocab.raw(int(i)) for i in bundle.history(user, []).items}
    out_of_stock = {bundle.vocab.raw(i) for i in range(1, bundle.num_items + 1) if not bundle.catalog.in_stock[i]}
    assert out_of_stock, "the synthetic catalog has out-of-stock items"
    got = {it["item_id"] for it in body["items"]}
    assert not got & seen and not got & out_of_stock
    assert set(body["timings_ms"]) == {"history", "prepare", "hstu", "popular", "rerank"}


def test_events_are_idempotent_and_the_next_recommendation_reads_them(client: TestClient, bundle: ServingModel) -> None:
    user = bundle.users.ids[7]
    before = rec(client, user, k=10)
    target = before["items"][0]["item_id"]
    others = [bundle.vocab.raw(i) for i in (3, 9, 27)]
    batch = events(("a1", user, target), ("a2", user, others[0]), ("a3", user, others[1]), ("a4", user, others[2]))
    r = client.post("/v1/events", json=batch)
    assert r.status_code == 200 and r.json() == {"stored": 4, "duplicates": 0, "unknown_items": 0}
    r = client.post("/v1/events", json=batch)  # a client retry
    assert r.json() == {"stored": 0, "duplicates": 4, "unknown_items": 0}
    after = rec(client, user, k=10)
    assert after["history_length"] == before["history_length"] + 4
    assert target not in {it["item_id"] for it in after["items"]}  # now seen
    # the model re-read the history: its scores changed, not just the exclusions
    assert [it["score"] for it in after["items"]] != [it["score"] for it in before["items"]]
    hist = client.get(f"/v1/users/{user}/history", params={"limit": 4}).json()
    assert [e["event_id"] for e in hist["events"]] == ["a1", "a2", "a3", "a4"]
    assert {e["source"] for e in hist["events"]} == {"live"} and hist["total"] == after["history_length"]


def test_cold_start_is_context_aware_popular(client: TestClient, bundle: ServingModel) -> None:
    plain = rec(client, "brand-new-user", k=10)
    assert plain["cold_start"] and not plain["known_user"]
    assert {it["stage"] for it in plain["items"]} == {"popular"}
    top = max(range(1, bundle.num_items + 1), key=lambda i: bundle.popularity[i] if bundle.base_mask[i] else -1)
    assert plain["items"][0]["item_id"] == bundle.vocab.raw(top)
    by_region = {r: [it["item_id"] for it in rec(client, "new", k=10, context={"region": r})["items"]] for r in ("north", "south")}  # fmt: skip
    assert by_region["north"] != by_region["south"]
    cat = bundle.catalog.category_names[2]
    in_cat = rec(client, "new", k=5, context={"category": cat})
    assert in_cat["context_used"] == ["category"] and {it["category"] for it in in_cat["items"]} == {cat}


def test_unknown_item_event_is_stored_and_harmless(client: TestClient, bundle: ServingModel) -> None:
    r = client.post("/v1/events", json=events(("x1", "newbie", "brand-new-sku")))
    assert r.json() == {"stored": 1, "duplicates": 0, "unknown_items": 1}
    body = rec(client, "newbie", k=5)
    assert body["cold_start"] and body["history_length"] == 1 and len(body["items"]) == 5
    item = client.get("/v1/items/brand-new-sku").json()
    assert item["seen_in_events"] and not item["known_to_model"] and not item["in_catalog"]
    hist = client.get("/v1/users/newbie/history").json()
    assert hist["events"][0]["known_to_model"] is False
    # a known item afterwards turns the user warm
    client.post("/v1/events", json=events(("x2", "newbie", bundle.vocab.raw(4))))
    assert not rec(client, "newbie", k=5)["cold_start"]


def test_filters_and_exclusions(client: TestClient, bundle: ServingModel) -> None:
    user = bundle.users.ids[1]
    cat = bundle.catalog.category_names[0]
    body = rec(client, user, k=8, filters={"category": cat})
    assert body["items"] and {it["category"] for it in body["items"]} == {cat}
    body = rec(client, user, k=10, filters={"price_min": 1.0, "price_max": 3.0})
    prices = [bundle.catalog.price[bundle.vocab.index(it["item_id"])] for it in body["items"]]
    assert prices and all(1.0 <= p <= 3.0 for p in prices)
    first = rec(client, user, k=5)["items"]
    excl = [first[0]["item_id"], first[1]["item_id"]]
    again = rec(client, user, k=5, exclude_item_ids=excl)
    assert not {it["item_id"] for it in again["items"]} & set(excl)


def test_bad_input_is_422_naming_the_field(client: TestClient) -> None:
    cases = [
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "k": 101}, "k"),
        ({"user_id": "u1", "k": "ten"}, "k"),
        ({"k": 5}, "user_id"),
        ({"user_id": "", "k": 5}, "user_id"),
        ({"user_id": "u1", "filters": {"price_min": 5, "price_max": 1}}, "filters"),
        ({"user_id": "u1", "filters": {"category": "no-such-category"}}, "filters.category"),
        ({"user_id": "u1", "filters": {"colour": "red"}}, "filters.colour"),
        ({"user_id": "u1", "context": {"nested": {"a": 1}}}, "context"),
    ]
    for body, field in cases:
        r = client.post("/v1/recommend", json=body)
        assert r.status_code == 422, (body, r.text)
        assert f"body.{field}" in r.json()["error"], (field, r.json()["error"])
    bad_event = events(("e", "u", "i"))
    bad_event["events"][0]["timestamp"] = "yesterday"
    r = client.post("/v1/events", json=bad_event)
    assert r.status_code == 422 and "body.events[0].timestamp" in r.json()["error"]
    r = client.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert client.post("/v1/events", json={"events": []}).status_code == 422


def test_unknown_paths_and_methods_are_errors_in_the_same_shape(client: TestClient) -> None:
    r = client.get("/v2/nothing-here")
    assert r.status_code == 404 and r.json() == {"error": "GET /v2/nothing-here: Not Found"}
    r = client.request("BREW", "/v1/recommend")
    assert r.status_code == 405 and r.json()["error"].startswith("BREW /v1/recommend") and r.headers["allow"] == "POST"


def test_oversize_is_413(client: TestClient) -> None:
    big = events(*[(f"b{i}", "u", "i") for i in range(51)])  # max_batch = 50
    r = client.post("/v1/events", json=big)
    assert r.status_code == 413 and "50" in r.json()["error"]
    r = client.post("/v1/events", content=b"x" * 300_000, headers={"content-type": "application/json"})
    assert r.status_code == 413  # over max_body_bytes, rejected before parsing


def test_history_and_item_lookups(client: TestClient, bundle: ServingModel) -> None:
    user = bundle.users.ids[0]
    hist = client.get(f"/v1/users/{user}/history", params={"limit": 3}).json()
    assert hist["known_user"] and len(hist["events"]) == 3 and {e["source"] for e in hist["events"]} == {"dataset"}
    assert client.get("/v1/users/nobody-at-all/history").status_code == 404
    assert client.get(f"/v1/users/{user}/history", params={"limit": 0}).status_code == 422
    item = bundle.vocab.raw(1)
    body = client.get(f"/v1/items/{item}").json()
    assert body["known_to_model"] and body["in_catalog"] and body["popularity"] > 0 and "category" in body["attributes"]
    assert client.get("/v1/items/not-an-item").status_code == 404


def test_admin_reload_auth_and_swap(client: TestClient, other_run: Path, tiny_run: Path) -> None:
    body = {"run_dir": str(other_run)}
    assert client.post("/v1/admin/reload", json=body).status_code == 401
    assert client.post("/v1/admin/reload", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.post("/v1/admin/reload", json={"run_dir": "/no/such/run"}, headers=auth)
    assert r.status_code == 422 and "body.run_dir" in r.json()["error"]
    r = client.post("/v1/admin/reload", json=body, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["previous_run_dir"] == str(tiny_run)
    assert rec(client, "u1", k=3)["model"] == str(other_run)
    assert client.get("/readyz").json()["model"]["run_dir"] == str(other_run)


def test_admin_disabled_without_token(bundle: ServingModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENREC_ADMIN_TOKEN", raising=False)
    with TestClient(create_app(ServeConfig(store=str(tmp_path / "e.db")), bundle=bundle)) as c:
        r = c.post("/v1/admin/reload", json={"run_dir": "x"}, headers={"Authorization": "Bearer "})
        assert r.status_code == 403


def test_ops_endpoints(client: TestClient, bundle: ServingModel) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["store"]["ok"]
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/events", "/v1/users/{user_id}/history", "/v1/items/{item_id}"} <= set(spec["paths"])
    rec(client, bundle.users.ids[0], k=3)
    client.post("/v1/events", json=events(("m1", "u", "i"), ("m2", "u", "i")))
    client.post("/v1/recommend", json={"k": 3})
    text = client.get("/metrics").text
    assert 'genrec_requests_total{endpoint="/v1/recommend",method="POST",status="200"} 1' in text
    assert 'genrec_requests_total{endpoint="/v1/recommend",method="POST",status="422"} 1' in text
    assert "genrec_events_ingested_total 2" in text
    for stage in ("history", "hstu", "popular", "rerank"):
        assert f'genrec_stage_latency_seconds_count{{stage="{stage}"}} 1' in text
    assert 'genrec_request_latency_seconds_bucket{endpoint="/v1/recommend",le="+Inf"} 2' in text


def test_store_contents_match_after_events(client: TestClient, tmp_path: Path) -> None:
    client.post("/v1/events", json=events(("s1", "u", "i1"), ("s2", "u", "i2")))
    s = SQLiteStore(tmp_path / "ev.db")
    assert {s.get("s1").item_id, s.get("s2").item_id} == {"i1", "i2"}
    s.close()


def test_new_item_is_served_once_a_model_knows_it(client: TestClient, bundle: ServingModel, tmp_path: Path) -> None:
    """An event on an item no model knows is stored; after a reload to a run trained with it, it is served."""
    import polars as pl
    from rich.console import Console

    from genrec.data.synthetic import generate_shop, shop_config
    from genrec.training.trainer import TrainConfig, train

    shop = generate_shop(shop_config("tiny", seed=42))
    buyers = shop.events["user_id"].unique(maintain_order=True).to_list()[:40]
    late = int(shop.events["timestamp"].max()) + 60  # after the log, not in the future (the reader rejects that)
    new = pl.DataFrame({"user_id": buyers, "item_id": ["sku-new"] * 40, "timestamp": [late] * 40,
                        "event_type": ["view"] * 40, "value": [None] * 40}, schema=shop.events.schema)  # fmt: skip
    data = tmp_path / "shop"
    data.mkdir()
    pl.concat([shop.events, new]).write_parquet(data / "events.parquet")
    row = pl.DataFrame([{**shop.catalog.row(0, named=True), "item_id": "sku-new", "category": "new-cat", "in_stock": True}])  # fmt: skip
    pl.concat([shop.catalog, row.cast(shop.catalog.schema)]).write_parquet(data / "catalog.parquet")
    run = tmp_path / "run-with-new-item"
    train(TrainConfig(model="hstu", dataset=str(data / "events.parquet"), epochs=1, max_len=20, dim=16, threads=1, out=str(run)), console=Console(quiet=True))  # fmt: skip

    shopper = "late-shopper"
    r = client.post("/v1/events", json=events(("n1", shopper, "sku-new"), ("n2", shopper, bundle.vocab.raw(5))))
    assert r.json()["unknown_items"] == 1
    assert not client.get("/v1/items/sku-new").json()["known_to_model"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/admin/reload", json={"run_dir": str(run)}, headers=auth).status_code == 200
    item = client.get("/v1/items/sku-new").json()
    assert item["known_to_model"] and item["in_catalog"] and item["popularity"] == 40
    other = bundle.users.ids[-1]  # a dataset user who never saw it
    got = rec(client, other, k=5, filters={"category": "new-cat"})["items"]
    assert [(it["item_id"], it["stage"]) for it in got] == [("sku-new", "hstu")]
    # the shopper's stored event now counts as history the model reads, and the item is excluded as seen
    assert rec(client, shopper, k=5, filters={"category": "new-cat"})["items"] == []


def test_events_accept_the_readers_timestamp_formats(client: TestClient) -> None:
    sent = [1_714_564_800, 1_714_564_800_000, "1714564800", 1_714_564_800.9, "2024-05-01T12:00:00Z",
            "2024-05-01T14:00:00+02:00", "2024-05-01 12:00:00", "2024-05-01"]  # fmt: skip
    body = {"events": [{"event_id": f"t{n}", "user_id": "clock", "item_id": "i", "event_type": "view", "timestamp": t} for n, t in enumerate(sent)]}  # fmt: skip
    r = client.post("/v1/events", json=body)
    assert r.status_code == 200 and r.json()["stored"] == len(sent), r.text
    got = [e["timestamp"] for e in client.get("/v1/users/clock/history").json()["events"]]
    assert sorted(got) == [1_714_521_600] + [1_714_564_800] * 7  # all noon UTC, the bare date its midnight
    # the same instant written another way is the same payload: a duplicate, not a conflict
    same = {"events": [{**body["events"][0], "timestamp": "2024-05-01T12:00:00Z"}]}
    assert client.post("/v1/events", json=same).json()["duplicates"] == 1


def test_unparseable_negative_or_future_timestamps_are_422_naming_the_field(client: TestClient) -> None:
    import time

    now = int(time.time())
    cases = {"01/05/2024 12:00": "cannot parse", True: "expected unix seconds", None: "expected unix seconds",
             -5: "before 1970", now + 2 * 86_400: "after the server's clock", 5138 * 10**7: "after the server's clock",
             "5138-01-01": "after the server's clock"}  # fmt: skip
    for value, message in cases.items():
        body = events(("f0", "u", "i"), ("f1", "u", "i"))
        body["events"][1]["timestamp"] = value
        r = client.post("/v1/events", json=body)
        assert r.status_code == 422, (value, r.text)
        assert "body.events[1].timestamp" in r.json()["error"] and message in r.json()["error"], (value, r.text)
        assert "Traceback" not in r.text
    assert client.get("/v1/users/u/history").status_code == 404  # nothing of a rejected batch was stored
    # within the skew (default one day) a client clock running ahead is fine
    ahead = events(("f2", "u", "i"), ts=now + 3600)
    assert client.post("/v1/events", json=ahead).status_code == 200


def test_future_skew_is_configurable(bundle: ServingModel, tmp_path: Path) -> None:
    import time

    cfg = ServeConfig(store=f"sqlite:///{tmp_path}/ev.db", max_future_skew_s=10 * 86_400)
    with TestClient(create_app(cfg, bundle=bundle)) as c:
        assert c.post("/v1/events", json=events(("s0", "u", "i"), ts=int(time.time()) + 5 * 86_400)).status_code == 200
        assert c.post("/v1/events", json=events(("s1", "u", "i"), ts=int(time.time()) + 11 * 86_400)).status_code == 422


def test_reused_event_id_with_another_payload_is_409_listing_the_conflicts(client: TestClient) -> None:
    assert client.post("/v1/events", json=events(("c1", "u", "i1"), ("c2", "u", "i2"))).json()["stored"] == 2
    again = events(("c3", "u", "i3"), ("c1", "u", "i1"), ("c2", "u", "OTHER"))  # new, conflict (timestamp), conflict
    r = client.post("/v1/events", json=again)
    assert r.status_code == 409, r.text
    body = r.json()
    assert "events[1].event_id 'c1'" in body["error"] and "events[2].event_id 'c2'" in body["error"]
    assert [(c["field"], c["event_id"], c["existing_index"]) for c in body["conflicts"]] == [
        ("events[1].event_id", "c1", None), ("events[2].event_id", "c2", None)]  # fmt: skip
    c2 = body["conflicts"][1]
    assert c2["sent"]["item_id"] == "OTHER" and c2["existing"] == {"user_id": "u", "item_id": "i2", "event_type": "view", "timestamp": TS + 1}  # fmt: skip
    hist = client.get("/v1/users/u/history").json()
    assert [e["event_id"] for e in hist["events"]] == ["c1", "c2"]  # c3 was not stored either: all or nothing
    # a conflict inside one batch names the earlier event
    r = client.post("/v1/events", json={"events": [events(("d1", "u", "i1"))["events"][0], events(("d1", "u", "i9"))["events"][0]]})  # fmt: skip
    assert r.status_code == 409 and r.json()["conflicts"][0]["existing_index"] == 0
    assert "genrec_events_conflict_total 3" in client.get("/metrics").text
    spec = client.get("/openapi.json").json()["paths"]["/v1/events"]["post"]
    assert "409" in spec["responses"] and "conflicts" in spec["description"]


def test_metrics_labels_stay_bounded_under_invented_methods_and_paths(client: TestClient) -> None:
    import random

    rng = random.Random(0)

    def junk(n: int) -> None:
        for i in range(n):
            method = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=rng.randint(3, 12)))
            path = f"/{rng.randrange(10**9)}/{'x' * rng.randint(1, 50)}" if i % 3 else "/v1/recommend"
            client.request(method if i % 2 else rng.choice(["GET", "DELETE"]), path)

    def series(text: str) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}

    client.get("/metrics")  # the scrape's own series
    junk(300)
    first = series(client.get("/metrics").text)
    junk(2700)
    text = client.get("/metrics").text
    assert series(text) == first and len(text) < 20_000  # 10x the junk, not one series more
    requests = [s for s in series(text) if s.startswith("genrec_requests_total")]
    assert 'genrec_requests_total{endpoint="other",method="other",status="404"}' in requests
    assert 'genrec_requests_total{endpoint="/v1/recommend",method="other",status="405"}' in requests
    assert all('method="other"' in s or any(f'method="{m}"' in s for m in ("GET", "POST", "DELETE")) for s in requests)


def test_integer_timestamps_take_the_fast_path_with_the_readers_scaling() -> None:
    import polars as pl

    from genrec.data.io import parse_timestamps
    from genrec.serving.app import EventIn, _event_seconds

    vals = [0, 1, 1_714_564_800, 10**11, 10**11 + 1, 1_714_564_800_123, 10**14 + 7, 1_714_564_800_123_456,
            10**17 + 9, 1_714_564_800_123_456_789, (1 << 63) - 1]  # fmt: skip
    events = [EventIn(event_id=f"e{i}", user_id="u", item_id="i", event_type="view", timestamp=v) for i, v in enumerate(vals)]  # fmt: skip
    fast, _ = _event_seconds(events, skew_s=10**19)
    slow = parse_timestamps(pl.Series("t", [str(v) for v in vals], dtype=pl.Utf8)).to_list()
    assert fast == slow
