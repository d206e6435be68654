"""Fuzz: hypothesis-generated bodies, near the schema and far from it, against every endpoint: zero 5xx."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from genrec.serving.app import create_app
from genrec.serving.config import ServeConfig
from genrec.serving.pipeline import ServingModel
from genrec.serving.tests.conftest import TOKEN

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
anything = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12
)
ids = st.text(max_size=12) | st.integers(-5, 10**6) | st.sampled_from(["u1", "i1", "cat1", "", " ", "\x00", "é/ü?#"])
maybe = lambda s: st.none() | s | anything  # noqa: E731 - a field: absent-ish, plausible, or garbage


def shaped(fields: dict) -> st.SearchStrategy[dict]:
    """Dicts with a random subset of the schema's keys (plausible or garbage values), plus stray keys."""
    return st.fixed_dictionaries({}, optional={k: v for k, v in fields.items()}) | st.dictionaries(
        st.sampled_from([*fields, "extra"]), anything, max_size=5
    )


filters = shaped({"category": maybe(ids | st.lists(ids, max_size=3)), "price_min": maybe(st.floats()), "price_max": maybe(st.floats())})  # fmt: skip
recommend_body = shaped({
    "user_id": ids, "k": st.integers(-3, 200) | anything, "context": maybe(st.dictionaries(st.text(max_size=10), json_leaf, max_size=4)),
    "exclude_item_ids": maybe(st.lists(ids, max_size=5)), "filters": maybe(filters),
})  # fmt: skip
event = shaped({
    "event_id": ids, "user_id": ids, "item_id": ids, "event_type": st.sampled_from(["view", "purchase", "", "a b"]) | anything,
    "timestamp": st.integers(-10, 10**12) | anything,
})  # fmt: skip
events_body = shaped({"events": st.lists(event, max_size=4) | anything})


@pytest.fixture(scope="module")
def client(bundle: ServingModel, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("fuzz") / "ev.db"
    cfg = ServeConfig(store=f"sqlite:///{path}", admin_token=TOKEN, max_batch=3)
    with TestClient(create_app(cfg, bundle=bundle), raise_server_exceptions=False) as c:
        yield c


def check(r) -> None:
    assert r.status_code < 500, (r.status_code, r.request.url, r.request.content[:300], r.text[:300])
    if r.status_code == 422:
        assert r.json()["error"]  # a message naming the field, not an empty body


def post(client: TestClient, path: str, body, **kw):
    return client.post(path, content=json.dumps(body, allow_nan=True).encode(), headers={"content-type": "application/json", **kw.get("headers", {})})  # fmt: skip


@FUZZ
@given(body=recommend_body | anything)
def test_fuzz_recommend(client: TestClient, body) -> None:
    check(post(client, "/v1/recommend", body))


@FUZZ
@given(body=events_body | anything)
def test_fuzz_events(client: TestClient, body) -> None:
    check(post(client, "/v1/events", body))


@FUZZ
@given(
    body=shaped({"run_dir": ids | st.sampled_from(["/", "/etc/passwd", ".", "../.."])}) | anything, auth=st.booleans()
)
def test_fuzz_admin_reload(client: TestClient, body, auth: bool) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
    check(post(client, "/v1/admin/reload", body, headers=headers))


@FUZZ
@given(seg=st.text(min_size=1, max_size=30), limit=st.text(max_size=6) | st.integers(-5, 10**6).map(str))
def test_fuzz_paths(client: TestClient, seg: str, limit: str) -> None:
    seg = quote(seg, safe="")  # any text, percent-encoded as a client would send it
    check(client.get(f"/v1/users/{seg}/history", params={"limit": limit}))
    check(client.get(f"/v1/items/{seg}"))


@FUZZ
@given(raw=st.binary(max_size=200), ctype=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))  # fmt: skip
def test_fuzz_raw_bytes(client: TestClient, raw: bytes, ctype: str) -> None:
    for path in ("/v1/recommend", "/v1/events"):
        check(client.post(path, content=raw, headers={"content-type": ctype} if ctype else {}))


def test_reload_to_odd_paths_keeps_serving(client: TestClient, bundle: ServingModel, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    r = post(client, "/v1/admin/reload", {"run_dir": str(broken)}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422 and "run_dir" in r.json()["error"]
    assert post(client, "/v1/recommend", {"user_id": bundle.users.ids[0], "k": 3}).status_code == 200
