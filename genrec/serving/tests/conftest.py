"""Shared fixtures: tiny trained runs, a throwaway redis-server, stores, in-process and subprocess servers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from rich.console import Console

from genrec.data.datasets import load_synthetic
from genrec.serving.config import ServeConfig
from genrec.serving.pipeline import ServingModel
from genrec.serving.store import RedisStore, SQLiteStore

REPO = Path(__file__).resolve().parents[3]
TOKEN = "test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out: Path, model: str = "hstu", seed: int = 42, epochs: int = 2) -> Path:
    from rich.console import Console

    from genrec.training.trainer import TrainConfig, train

    cfg = TrainConfig(model=model, dataset="synthetic:tiny", epochs=epochs, max_len=20, dim=16, threads=1, out=str(out), seed=seed)  # fmt: skip
    train(cfg, console=Console(quiet=True))
    torch.set_num_threads(1)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("runs") / "hstu")


@pytest.fixture(scope="session")
def other_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, different model on the same data (SASRec): the reload target."""
    return _train(tmp_path_factory.mktemp("runs") / "sasrec", model="sasrec", epochs=1)


@pytest.fixture(scope="session")
def bundle(tiny_run: Path) -> ServingModel:
    return ServingModel.load(tiny_run, ServeConfig())


# ---- redis ----


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis-server on a free loopback port with a durable AOF (appendfsync always); stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (Debian: apt-get install -y redis-server); redis store tests skipped")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "events.db")
    url = request.getfixturevalue("redis_url")
    return RedisStore(url, prefix=f"t{uuid.uuid4().hex[:8]}:")  # a fresh namespace per test


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


# ---- servers ----


class Server:
    """`python -m genrec.serving.cli` in a subprocess: the real uvicorn process, killable with SIGKILL."""

    def __init__(self, run_dir: Path, store: str, port: int | None = None, log: Path | None = None) -> None:
        self.run_dir, self.store = run_dir, store
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Server:
        env = {**os.environ, "PYTHONPATH": str(REPO), "GENREC_ADMIN_TOKEN": TOKEN}
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "genrec.serving.cli", str(self.run_dir), "--port", str(self.port), "--store", self.store],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server not ready after {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing, like a crash."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def make(run_dir: Path, store: str) -> Server:
        s = Server(run_dir, store, log=tmp_path / f"server{len(servers)}.log")
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


# ---- the full stack: two retrievers, a ranker, re-rank (served = offline, batching) ----


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hstu + two-tower retrieval bundles and DLRM and Wide & Deep bundles over both (each carries them)."""
    from genrec.pipeline.runs import Context
    from genrec.stack.train import train_ranking_model
    from genrec.training.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("stack")
    console = Console(quiet=True)
    ds = load_synthetic("tiny", seed=0)
    train(TrainConfig(model="hstu", dataset="synthetic:tiny", out=str(root / "hstu"), epochs=1, max_len=20, dim=16,
                      threads=1), dataset=ds, console=console)  # fmt: skip
    ctx = Context("synthetic:tiny", ds=ds)
    train_ranking_model("two-tower", "synthetic:tiny", root / "tt", context=ctx, console=console, epochs=1, threads=1)
    train_ranking_model("dlrm", "synthetic:tiny", root / "dlrm", context=ctx, console=console, epochs=1, dim=8,
                        retrieval=f"{root / 'hstu'},{root / 'tt'}", k=50, test_users=50, threads=1)  # fmt: skip
    # Wide & Deep: served through FactoredWideDeep, the catalog's side precomputed
    train_ranking_model("wide-deep", "synthetic:tiny", root / "wide-deep", context=ctx, console=console, epochs=1,
                        dim=8, retrieval=f"{root / 'hstu'},{root / 'tt'}", k=50, test_users=50, threads=1)  # fmt: skip
    torch.set_num_threads(1)
    return root


@pytest.fixture(scope="session")
def stack(stacks: Path) -> Path:
    return stacks / "dlrm"
