"""The served pipeline is the offline pipeline: for a bundle with two retrievers, a CTR ranker and re-ranking,
`/v1/recommend` answers the same top-k (items, scores, stages) that `genrec pipeline evaluate` scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from genrec.bundle import Bundle
from genrec.data.sequences import leave_one_out
from genrec.pipeline.pipeline import Pipeline
from genrec.serving.app import create_app
from genrec.serving.config import ServeConfig
from genrec.serving.pipeline import ServingModel
from genrec.serving.tests.test_model_process import wait_state


def _without_last_events(src: Path, dst: Path) -> None:
    """A copy of the bundle whose stored histories stop before each user's last event (the test input)."""
    shutil.copytree(src, dst)
    df = pl.read_parquet(dst / "histories.parquet").with_row_index("row")
    last = df.group_by("user_id").agg(pl.col("row").max())["row"]
    df.filter(~pl.col("row").is_in(last.implode())).drop("row").write_parquet(dst / "histories.parquet")


def assert_served_equals_offline(bundle: Path, tmp_path: Path, users: int = 20) -> None:
    """For a sample of test users, `/v1/recommend` from the bundle (its stored histories cut before each user's
    last event) answers the offline pipeline's top-10: items and scores."""
    offline = Pipeline.from_bundle(Bundle.open(bundle))
    split = leave_one_out(offline.sequences)
    u, e, _ = split.eval_inputs("test")
    pick = np.random.default_rng(0).choice(len(u), users, replace=False)
    ctxs = offline.offline_contexts(split.data, u[pick], e[pick], k=10)
    pages = offline.run_batch(ctxs)[-1]
    _without_last_events(bundle, tmp_path / "served")
    cfg = ServeConfig(store=f"sqlite:///{tmp_path / 'ev.db'}")
    served = ServingModel.load(tmp_path / "served", cfg)
    with TestClient(create_app(cfg, bundle=served)) as client:
        for ctx, page in zip(ctxs, pages, strict=True):
            body = client.post("/v1/recommend", json={"user_id": ctx.user_id, "k": 10,
                                                      "context": {"timestamp": ctx.request_time}}).json()  # fmt: skip
            assert [it["item_id"] for it in body["items"]] == [served.vocab.raw(int(i)) for i in page.items]
            np.testing.assert_allclose([it["score"] for it in body["items"]], page.scores.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("ranker", "model_processes"), [("dlrm", 0), ("wide-deep", 0), ("wide-deep", 1)])
def test_served_top_k_equals_the_offline_pipeline(
    stacks: Path, tmp_path: Path, ranker: str, model_processes: int
) -> None:
    stack = stacks / ranker
    offline = Pipeline.from_bundle(Bundle.open(stack))
    kinds = [s.get("stage") for s in offline.stage_specs]
    assert kinds == ["retrieve", "retrieve", "popular", "rank", "rerank"]
    split = leave_one_out(offline.sequences)
    u, e, _ = split.eval_inputs("test")
    pick = np.random.default_rng(0).choice(len(u), 25, replace=False)
    ctxs = offline.offline_contexts(split.data, u[pick], e[pick], k=10)
    pages = offline.run_batch(ctxs)[-1]  # what evaluate() scores after rerank

    _without_last_events(stack, tmp_path / "served")
    cfg = ServeConfig(store=f"sqlite:///{tmp_path / 'ev.db'}", model_processes=model_processes)
    served = ServingModel.load(tmp_path / "served", cfg)
    assert [s.name for s in served.stages] == [s.name for s in offline.stages]
    factored = [getattr(st, "factored", None) is not None for st in served.stages]
    assert any(factored) == (ranker == "wide-deep")  # W&D pages come from the precomputed-catalog path
    with TestClient(create_app(cfg, bundle=served)) as client:
        if model_processes:  # the stages of every request below run in the child (timings_ms has "transfer")
            wait_state(client, "ready")
        ranked = 0
        for ctx, page in zip(ctxs, pages, strict=True):
            body = client.post("/v1/recommend", json={"user_id": ctx.user_id, "k": 10,
                                                      "context": {"timestamp": ctx.request_time}}).json()  # fmt: skip
            assert body["history_length"] == len(ctx.history.items)
            assert [it["item_id"] for it in body["items"]] == [served.vocab.raw(int(i)) for i in page.items]
            np.testing.assert_allclose([it["score"] for it in body["items"]], page.scores.numpy(), rtol=1e-5, atol=1e-6)
            assert [it["stage"] for it in body["items"]] == page.stages
            assert ("transfer" in body["timings_ms"]) == bool(model_processes)
            ranked += {it["stage"] for it in body["items"]} == {ranker}
        assert ranked == len(ctxs)  # every final item was scored by the ranker
        text = client.get("/metrics").text
        for stage in ("hstu", "two-tower", "popular", ranker, "rerank"):
            assert f'genrec_stage_latency_seconds_count{{stage="{stage}"}} {len(ctxs)}' in text


def test_a_new_user_without_events_gets_a_full_ranked_page(stack: Path, tmp_path: Path) -> None:
    """A user the bundle never saw and who posted nothing: two-tower (attributes only) + popularity, ranked."""
    cfg = ServeConfig(store=f"sqlite:///{tmp_path / 'ev.db'}")
    with TestClient(create_app(cfg, bundle=ServingModel.load(stack, cfg))) as client:
        for user in ("never-seen-1", "never-seen-2"):
            r = client.post("/v1/recommend", json={"user_id": user, "k": 10})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["history_length"] == 0 and len(body["items"]) == 10
            assert {it["stage"] for it in body["items"]} == {"dlrm"}


def test_served_page_is_back_filled_under_the_category_cap(stack: Path, tmp_path: Path) -> None:
    from genrec.pipeline.core import RerankRules

    cfg = ServeConfig(store=f"sqlite:///{tmp_path / 'ev.db'}", rules=RerankRules(max_per_category=1))
    model = ServingModel.load(stack, cfg)
    n_cats = len(model.catalog.category_names)
    with TestClient(create_app(cfg, bundle=model)) as client:
        body = client.post("/v1/recommend", json={"user_id": model.users.ids[0], "k": n_cats + 4}).json()
    cats = [it["category"] for it in body["items"]]
    assert len(cats) == n_cats + 4  # never short while candidates remain
    head = cats[: len(set(cats))]
    assert len(set(head)) == len(head)  # one per category first, then the best capped-out items


def test_workers_on_sqlite_is_a_clear_error(stack: Path, tmp_path: Path) -> None:
    import typer

    from genrec.serving.cli import serve

    app = typer.Typer()
    app.command()(serve)
    res = CliRunner().invoke(app, [str(stack), "--workers", "2", "--store", f"sqlite:///{tmp_path / 'e.db'}"])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "--workers 2 with the SQLite store" in out and "redis://" in out and "--sqlite-shared" in out


def test_workers_share_the_redis_store(stack: Path, redis_url: str, tmp_path: Path) -> None:
    """`--workers 2`: two worker processes on one port over one Redis store; every answer reads the stored event."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from genrec.serving.tests.conftest import REPO, free_port

    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "genrec.serving.cli", str(stack), "--port", str(port), "--store", redis_url,
         "--workers", "2"], env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        workers = [p for p in os.listdir("/proc") if p.isdigit() and _parent(p) == proc.pid and "spawn_main" in _cmd(p)]
        assert len(workers) == 2
        model = Bundle.open(stack)
        item = model.item_vocab.raw(7)
        ev = {
            "event_id": "w1",
            "user_id": "walk-in",
            "item_id": item,
            "event_type": "view",
            "timestamp": int(time.time()) - 60,
        }
        assert httpx.post(f"{url}/v1/events", json={"events": [ev]}).json()["stored"] == 1
        for _ in range(12):  # whichever worker answers reads the stored event: a known history, the item seen
            body = httpx.post(f"{url}/v1/recommend", json={"user_id": "walk-in", "k": 50}).json()
            assert body["history_length"] == 1 and not body["cold_start"]
            assert item not in {it["item_id"] for it in body["items"]}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _parent(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _cmd(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""
