"""`genrec serve BUNDLE [--host] [--port] [--store] [--config] [--workers N]`: the HTTP API on uvicorn.

Register in genrec/cli.py with:
    from genrec.serving.cli import serve
    app.command()(serve)
Also runnable alone: python -m genrec.serving.cli BUNDLE --port 8000

Workers: `--workers N` starts N uvicorn worker processes on one port (the kernel spreads connections over
them); each loads the bundle itself and serves its whole pipeline, and all of them share the event store, so
an event posted to one worker is read by the next request on any other. Use Redis for that
(`--store redis://HOST:6379/0`). SQLite is one file on one host: its WAL mode lets processes read at once
but writes take turns on a file lock, so N > 1 on SQLite is refused unless `--sqlite-shared` says you know
(fine for a demo on one machine, not for write-heavy traffic). With N > 1, `POST /v1/admin/reload` is
refused (it would reach one worker only): deploy a new bundle by restarting, or run replicas.

Model processes: `--model-processes M` (default cores / workers - 1) runs each worker's stages in M child
processes (genrec/serving/model_process.py) while the worker answers HTTP, reads the store and builds the
request contexts: on 2 cores, one worker with one child uses both cores instead of one GIL. /readyz reports
their state ("starting" while a child loads the bundle: the worker runs the stages itself meanwhile).

Replicas behind a load balancer: run `genrec serve BUNDLE --store redis://HOST:6379/0 --host 0.0.0.0
--port 8000 [--workers N]` on each host or container (copy the bundle folder there: it is self-contained),
point the balancer (nginx upstream, an AWS ALB target group, a Kubernetes Service) at them with `/readyz`
as the health check (200 once the bundle is loaded and the store answers; /healthz is liveness only), and
roll a new bundle out host by host: drain one, restart it on the new bundle (or POST /v1/admin/reload with
{"bundle": PATH} to a single-worker replica), wait for /readyz, go on. Every replica reads and writes the
same Redis, so a user's live history is the same whichever replica answers.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=True)


def _auto_model_processes(cores: int) -> int:
    return cores - 1 if cores >= 2 else 0


def serve(
    run_dir: Path = typer.Argument(..., help="a bundle written by `genrec train` / `genrec quickstart`"),
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8000, help="TCP port"),
    store: str | None = typer.Option(None, help="sqlite:///PATH (default: RUN_DIR/events.db) or redis://HOST:PORT/DB"),
    config: Path | None = typer.Option(None, help="serving config (.toml / .json): rules, stages, limits, token"),
    admin_token: str | None = typer.Option(
        None, envvar="GENREC_ADMIN_TOKEN", help="bearer token for /v1/admin/reload (else from the config)"
    ),
    threads: int | None = typer.Option(
        None, help="torch threads per worker's pipeline (default: cores / workers - 1, at least 1)"
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes sharing the event store (use Redis)"),
    sqlite_shared: bool = typer.Option(
        False, help="allow --workers > 1 on one SQLite file (WAL: concurrent reads, writes take turns)"
    ),
    model_processes: int | None = typer.Option(
        None,
        min=0,
        help="child processes per worker that run the model stages, 0 = in the worker (default: from the cores per worker)",
    ),
) -> None:
    """Serve recommendations over HTTP (OpenAPI docs at /docs)."""
    import uvicorn
    from rich.markup import escape

    from genrec.bundle import Bundle, BundleError
    from genrec.runtime import setup
    from genrec.serving.app import create_app
    from genrec.serving.config import ConfigError, load_config
    from genrec.serving.pipeline import ServingModel
    from genrec.serving.store import StoreError

    try:
        Bundle.open(run_dir)
    except BundleError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        cfg = load_config(config, store=store, admin_token=admin_token, threads=threads)
        if store is None and (config is None or "store" not in _keys(config)):
            cfg.store = f"sqlite:///{(run_dir / 'events.db').resolve()}"
        if workers > 1 and not cfg.store.startswith("redis") and not sqlite_shared:
            raise ConfigError(
                f"--workers {workers} with the SQLite store {cfg.store}: worker processes would take turns "
                "writing one file. Use --store redis://HOST:PORT/DB (shared by all workers), or pass "
                "--sqlite-shared to accept SQLite in WAL mode on this host"
            )
        if threads is None and (config is None or "threads" not in _keys(config)):
            # the micro-batcher runs every model call on one thread per worker, and the worker's event loop
            # (HTTP, JSON) runs beside it: give the models the worker's cores but one. ML-1M stack, 1 worker on
            # 2 cores, 200 req/s: p99 79 ms at 1 thread, 106 ms at 2 (benchmarks/serving.py)
            cfg.threads = max(1, (os.cpu_count() or 1) // workers - 1)
        if model_processes is not None:
            cfg.model_processes = model_processes
        elif config is None or "model_processes" not in _keys(config):
            # HTTP + store in the worker, models in its children: worth it when they get cores of their own
            # (ML-1M stack, 1 worker on 2 cores, 200 req/s: benchmarks/results/serving_pipeline.md)
            cfg.model_processes = _auto_model_processes((os.cpu_count() or 1) // workers)
        setup(cfg.threads)
        if workers > 1:
            _serve_workers(run_dir, cfg, config, store, admin_token, cfg.threads, host, port, log_level, workers)
            return
        with console.status(f"loading {run_dir}"):
            bundle = ServingModel.load(run_dir, cfg)  # before binding the port: a broken run fails fast
        app = create_app(cfg, bundle=bundle)
    except (ConfigError, StoreError, ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    except Exception as e:  # a store that cannot be opened (redis down, unwritable path), a broken checkpoint
        console.print(f"[red]error:[/] cannot start: {type(e).__name__}: {e}")
        raise typer.Exit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    console.print(
        f"genrec serving {run_dir} on http://{host}:{port} (docs: /docs, store: {cfg.store}"
        f"{f', models in {cfg.model_processes} process(es)' if cfg.model_processes else ''})"
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


_WORKER_ENV = "GENREC_SERVE_WORKER"


def _serve_workers(run_dir: Path, cfg: Any, config: Path | None, store: str | None, admin_token: str | None,
                   threads: int | None, host: str, port: int, log_level: str, workers: int) -> None:  # fmt: skip
    """uvicorn's multi-process mode: each worker builds its own app with worker_app()."""
    import uvicorn

    from genrec.serving.store import open_store

    open_store(cfg.store).close()  # an unreachable store fails here, once, not in N workers
    os.environ[_WORKER_ENV] = json.dumps({"bundle": str(run_dir.resolve()), "config": str(config.resolve()) if config else None,
                                          "store": cfg.store, "admin_token": admin_token, "threads": threads,
                                          "workers": workers, "model_processes": cfg.model_processes})  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    console.print(f"genrec serving {run_dir} on http://{host}:{port} with {workers} workers (store: {cfg.store})")
    uvicorn.run("genrec.serving.cli:worker_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=False)  # fmt: skip


def worker_app() -> Any:
    """The app of one worker process (uvicorn calls this factory in each worker): loads the bundle itself."""
    from genrec.runtime import setup
    from genrec.serving.app import create_app
    from genrec.serving.config import load_config
    from genrec.serving.pipeline import ServingModel

    args = json.loads(os.environ[_WORKER_ENV])
    cfg = load_config(args["config"], store=args["store"], admin_token=args["admin_token"], threads=args["threads"])
    cfg.model_processes = args["model_processes"]
    setup(cfg.threads)
    return create_app(cfg, bundle=ServingModel.load(args["bundle"], cfg), workers=args["workers"])


def _keys(path: Path) -> set[str]:
    import json
    import tomllib

    text = path.read_text()
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    return set(data)


def main() -> None:
    app = typer.Typer(add_completion=False)
    app.command()(serve)
    app()


if __name__ == "__main__":
    main()
