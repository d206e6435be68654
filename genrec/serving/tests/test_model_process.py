"""The stages in a model process (config.model_processes): same answers as in process, reload swaps the child's
bundle too, and a killed child costs no request (its batches run in the server process until it is back)."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from genrec.serving.app import create_app
from genrec.serving.config import ServeConfig
from genrec.serving.pipeline import ServingModel

AUTH = {"Authorization": "Bearer t0ken"}


def wait_state(client: TestClient, want: str, restarts: int = 0, timeout: float = 180.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        mp = client.get("/readyz").json()["model_process"]
        if mp["state"] == want and mp["restarts"] >= restarts:
            return mp
        assert not mp["state"].startswith("failed"), mp
        time.sleep(0.2)
    raise AssertionError(f"model process not {want} after {timeout} s: {mp}")


def top(client: TestClient, user: str) -> dict:
    r = client.post("/v1/recommend", json={"user_id": user, "k": 10, "context": {"timestamp": 1_700_000_000}})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_model_process_serves_the_same_pages_reloads_and_survives_a_kill(
    tiny_run: Path, other_run: Path, tmp_path: Path
) -> None:
    cfg = ServeConfig(store=f"sqlite:///{tmp_path / 'ev.db'}", admin_token="t0ken", model_processes=1)
    local = ServingModel.load(tiny_run, cfg)
    users = local.users.ids[:8]
    with TestClient(create_app(ServeConfig(store=f"sqlite:///{tmp_path / 'ref.db'}"), bundle=local)) as ref:
        expected = {u: top(ref, u) for u in users}
    with TestClient(create_app(cfg, bundle=ServingModel.load(tiny_run, cfg))) as client:
        assert wait_state(client, "ready")["processes"] == 1
        for u in users:
            body = top(client, u)
            assert "transfer" in body["timings_ms"]  # the stages ran in the child
            assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in expected[u]["items"]]
            assert [i["score"] for i in body["items"]] == [i["score"] for i in expected[u]["items"]]
            assert [i["stage"] for i in body["items"]] == [i["stage"] for i in expected[u]["items"]]

        # reload: the child loads the new bundle before the swap, and drops the old one
        r = client.post("/v1/admin/reload", json={"bundle": str(other_run)}, headers=AUTH)
        assert r.status_code == 200, r.text
        body = top(client, users[0])
        assert body["model"] == str(other_run) and "transfer" in body["timings_ms"]
        state = client.app.state.genrec
        assert state.bundle.gen == 2

        # kill -9 the child: requests keep answering (in process), then the child is back with the bundle
        state.host.children[0].process.kill()
        state.host.children[0].process.join(10)
        for u in users:
            body = top(client, u)
            assert body["model"] == str(other_run)
        wait_state(client, "ready", restarts=1)
        body = top(client, users[1])
        assert "transfer" in body["timings_ms"] and body["model"] == str(other_run)


def test_model_processes_must_not_be_negative(tmp_path: Path) -> None:
    import pytest

    from genrec.serving.config import ConfigError

    with pytest.raises(ConfigError, match="model_processes"):
        ServeConfig(store=f"sqlite:///{tmp_path / 'x.db'}", model_processes=-1).validate()


def test_genrec_serve_picks_model_processes_from_the_cores_per_worker() -> None:
    """The README's rule: one child on a 2-core box with one worker, none with two workers (1 core each)."""
    from genrec.serving.cli import _auto_model_processes

    assert _auto_model_processes(2 // 1) == 1
    assert _auto_model_processes(2 // 2) == 0
    assert _auto_model_processes(8 // 2) == 3
