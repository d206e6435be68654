"""POST /v1/admin/catalog: items added after training are recommendable through their attributes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from genrec.serving.app import create_app
from genrec.serving.config import ServeConfig
from genrec.serving.tests.conftest import TOKEN
from genrec.training.tests.test_new_items import write_shop

AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW = {"item_id": "c0-new", "category": "cat0", "brand": "brand0", "price": 3.0}


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rich.console import Console

    from genrec.training.trainer import TrainConfig, train

    folder = tmp_path_factory.mktemp("shop")
    events = write_shop(folder, cold_in_catalog=False)  # the catalog of training: items with events only
    cfg = TrainConfig(
        model="sasrec", dataset=str(events), out=str(folder / "run"), epochs=6, batch_size=32, dim=16, max_len=16,
        threads=1, item_attributes=True, lr=3e-3, num_negatives=16,
    )  # fmt: skip
    train(cfg, console=Console(quiet=True))
    return folder / "run"


@pytest.fixture
def client(shop_run: Path, tmp_path: Path):
    config = ServeConfig(store=f"sqlite:///{tmp_path / 'events.db'}", admin_token=TOKEN)
    with TestClient(create_app(config, run_dir=shop_run)) as c:
        for _ in range(200):
            if c.get("/readyz").status_code == 200:
                break
            import time

            time.sleep(0.05)
        yield c


def recommended(c: TestClient, user: str, k: int = 3) -> list[str]:
    r = c.post("/v1/recommend", json={"user_id": user, "k": k})
    assert r.status_code == 200, r.text
    return [it["item_id"] for it in r.json()["items"]]


def first_outside(recs: list[str], prefix: str) -> int:
    return next(i for i, r in enumerate(recs) if not r.startswith(prefix))


def test_an_item_added_after_training_is_recommended_to_its_category(client: TestClient) -> None:
    assert "c0-new" not in recommended(client, "u0", k=24)  # not in the catalog yet: never returned
    assert client.get("/v1/items/c0-new").status_code == 404
    r = client.post("/v1/admin/catalog", json={"items": [NEW]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["added"] == ["c0-new"] and r.json()["updated"] == 0 and r.json()["num_items"] == 25
    # u0 browses cat0: the new cat0 item ranks above every item of another category; a cat1 user's top 3 lacks it
    assert first_outside(recommended(client, "u0", k=24), "c0-") > recommended(client, "u0", k=24).index("c0-new")
    assert "c0-new" not in recommended(client, "u1")
    item = client.get("/v1/items/c0-new").json()
    assert item["known_to_model"] and item["in_catalog"] and item["attributes"]["brand"] == "brand0"
    # a second update keeps the first one and can change a known item's row
    r = client.post(
        "/v1/admin/catalog", json={"items": [{"item_id": "c1-new", "category": "cat1", "brand": "brand1"},
                                             {"item_id": "c0-i0", "category": "cat0", "brand": "brand0"}]},
        headers=AUTH,
    )  # fmt: skip
    assert r.status_code == 200 and r.json() == {**r.json(), "added": ["c1-new"], "updated": 1, "num_items": 26}
    for user, new in (("u0", "c0-new"), ("u1", "c1-new"), ("u4", "c0-new")):
        recs = recommended(client, user, k=24)
        assert recs.index(new) < first_outside(recs, new[:3])


def test_catalog_update_errors_name_the_field(client: TestClient, tiny_run: Path) -> None:
    assert client.post("/v1/admin/catalog", json={"items": [NEW]}).status_code == 401
    r = client.post("/v1/admin/catalog", json={"items": [{"category": "cat0"}]}, headers=AUTH)
    assert r.status_code == 422 and "item_id" in r.json()["error"]
    r = client.post("/v1/admin/catalog", json={"items": []}, headers=AUTH)
    assert r.status_code == 422 and "items" in r.json()["error"]
    mixed = [{"item_id": "a", "tags": ["x"]}, {"item_id": "b", "tags": "y"}]
    r = client.post("/v1/admin/catalog", json={"items": mixed}, headers=AUTH)
    assert r.status_code == 422 and "mix types" in r.json()["error"]
    # a bundle trained without item attributes cannot give a new item a vector: 422, the old model keeps serving
    assert client.post("/v1/admin/reload", json={"bundle": str(tiny_run)}, headers=AUTH).status_code == 200
    r = client.post("/v1/admin/catalog", json={"items": [NEW]}, headers=AUTH)
    assert (
        r.status_code == 422
        and r.json()["error"].startswith("body.items:")
        and "--item-attributes" in r.json()["error"]
    )
    assert client.get("/readyz").status_code == 200
