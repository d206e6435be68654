"""`genrec serve RUN_DIR [--host] [--port] [--store] [--config]`: the HTTP API on uvicorn.

Register in genrec/cli.py with:
    from genrec.serving.cli import serve
    app.command()(serve)
Also runnable alone: python -m genrec.serving.cli RUN_DIR --port 8000
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def serve(
    run_dir: Path = typer.Argument(..., help="a bundle written by `genrec train` / `genrec quickstart`"),
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8000, help="TCP port"),
    store: str | None = typer.Option(None, help="sqlite:///PATH (default: RUN_DIR/events.db) or redis://HOST:PORT/DB"),
    config: Path | None = typer.Option(None, help="serving config (.toml / .json): rules, stages, limits, token"),
    admin_token: str | None = typer.Option(
        None, envvar="GENREC_ADMIN_TOKEN", help="bearer token for /v1/admin/reload (else from the config)"
    ),
    threads: int | None = typer.Option(None, help="torch threads per request (default 1)"),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
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
        setup(cfg.threads)
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
    console.print(f"genrec serving {run_dir} on http://{host}:{port} (docs: /docs, store: {cfg.store})")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


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
