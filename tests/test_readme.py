"""Every command in README.md's ```bash blocks runs, in order, at a tiny scale: a README command cannot break silently.

Everything comes from the README text. Each `genrec ...` command runs as written, with only its scale changed:
--dataset NAME -> synthetic:tiny (a --dataset PATH gets the tiny synthetic shop written there), training commands
get --epochs 1 (quickstart: --size tiny and a few seconds), --user gets a user of that data, and the commands run
in a scratch folder so relative outputs (runs/...) land there. `genrec serve` lines start the server, wait for
/healthz, and the block's `curl` lines then run against it (with -f: an HTTP error fails). Lines that are not genrec
commands (setup, activate, export, torchrun across hosts) are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DATASETS = ("ml-1m", "ml-100k", "amazon-beauty", "synthetic")
TINY = "synthetic:tiny"


@dataclass
class Command:
    block: int
    text: str  # the README's words
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def readme_commands(text: str) -> list[Command]:
    """Commands of the ```bash blocks: continuations joined, comments dropped, `a && b` split, VAR=x prefixes kept."""
    out = []
    for b, block in enumerate(re.findall(r"```bash\n(.*?)```", text, re.S)):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            segments: list[list[str]] = [[]]
            for t in tokens:
                segments.append([]) if t == "&&" else segments[-1].append(t)
            for seg in filter(None, segments):
                env = {}
                while seg and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", seg[0]):
                    k, _, v = seg.pop(0).partition("=")
                    env[k] = v
                if seg:
                    out.append(Command(b, shlex.join([*(f"{k}={v}" for k, v in env.items()), *seg]), seg, env))
    return out


COMMANDS = readme_commands(README.read_text())


def genrec_args(argv: list[str]) -> list[str] | None:
    """The arguments after `genrec` (also `.venv/bin/genrec`, `python -m genrec`), None for other commands."""
    if Path(argv[0]).name == "genrec":
        return argv[1:]
    if Path(argv[0]).name.startswith("python") and argv[1:3] == ["-m", "genrec"]:
        return argv[3:]
    return None


def set_option(args: list[str], name: str, value: str) -> list[str]:
    if name in args:
        i = args.index(name)
        return [*args[: i + 1], value, *args[i + 2 :]]
    return [*args, name, value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workspace:
    """The scratch folder all commands share (in README order), and the server the curl lines talk to."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server: subprocess.Popen | None = None
        self.server_block = -1
        self.port = 0
        self.served: Path | None = None
        self.extra: list[subprocess.Popen] = []
        self.user: str | None = None

    def stop(self) -> None:
        for p in [self.server, *self.extra]:
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.server, self.extra = None, []

    def tiny_user(self) -> str:
        if self.user is None:
            from genrec.data.datasets import load_synthetic

            self.user = load_synthetic("tiny", 0).sequences.user_vocab.ids[0]
        return self.user

    def dataset(self, value: str, args: list[str]) -> str:
        if value.split(":")[0] in DATASETS:
            return TINY
        path = self.folder / value  # your own event log: the tiny shop, written the way the command reads it
        if not path.exists():
            write_own_log(path, args, self.folder)
        return value

    def config(self, value: str) -> str:
        """A pipeline config of the README, from the checkout, at the tiny scale (same tables, same keys)."""
        source = ROOT / value
        target = self.folder / value
        if source.exists() and not target.exists():
            import tomllib

            cfg = tomllib.loads(source.read_text())
            cfg.setdefault("data", {})["dataset"] = TINY
            cfg["data"]["threads"] = 1
            for table in [*cfg.get("retrieval", []), cfg.get("ranking", {})]:
                for key in ("epochs", "time_budget"):
                    if key in table:
                        table[key] = 1 if key == "epochs" else 0.2
            target.parent.mkdir(parents=True, exist_ok=True)
            from genrec.stack.config import dump_toml

            target.write_text(dump_toml(cfg))
        return value

    def rewrite(self, args: list[str]) -> list[str]:
        """The command at a tiny scale: same subcommand and options, small data and few epochs."""
        sub = args[:2] if args[:1] in (["pipeline"], ["genrank"]) else args[:1]
        if "--dataset" in args:
            args = set_option(args, "--dataset", self.dataset(args[args.index("--dataset") + 1], args))
        elif sub in (["scaling"], ["genrank", "train"], ["train"]):
            args = set_option(args, "--dataset", TINY)  # their defaults are full datasets
        if sub in (["train"], ["genrank", "train"], ["scaling"]):
            args = set_option(args, "--threads", "1")
            if option(args, "--model") != "auto":  # auto chooses its epochs (and refuses --epochs)
                args = set_option(args, "--epochs", "1")
        if "--time-budget" in args:  # --model auto searches for as long as it is given
            args = set_option(args, "--time-budget", "1")
        if sub == ["quickstart"]:
            args = set_option(set_option(args, "--size", "tiny"), "--minutes", "0.05")
        if "--user" in args:
            args = set_option(args, "--user", self.tiny_user())
        if "--config" in args and sub == ["pipeline", "train"]:
            args = set_option(args, "--config", self.config(args[args.index("--config") + 1]))
        return args


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def write_own_log(path: Path, args: list[str], folder: Path) -> None:
    """The tiny synthetic shop as a user's files: --columns names, --timestamp-format times, --catalog path."""
    import datetime

    import polars as pl

    from genrec.data.synthetic import generate_shop, shop_config

    shop = generate_shop(shop_config("tiny", seed=0))
    events, catalog = shop.events, shop.catalog
    fmt = option(args, "--timestamp-format")
    if fmt:
        stamp = [datetime.datetime.fromtimestamp(t, datetime.UTC).strftime(fmt) for t in events["timestamp"].to_list()]
        events = events.with_columns(pl.Series("timestamp", stamp))
    mapping = dict(pair.split("=", 1) for pair in (option(args, "--columns") or "").split(",") if "=" in pair)
    events = events.rename({k: v for k, v in mapping.items() if k in events.columns})
    if "item_id" in mapping:
        catalog = catalog.rename({"item_id": mapping["item_id"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    events.write_csv(path)
    target = folder / option(args, "--catalog") if option(args, "--catalog") else path.parent / "catalog.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_parquet(target) if target.suffix == ".parquet" else catalog.write_csv(target)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("readme"))
    yield ws
    ws.stop()


def wait_healthy(proc: subprocess.Popen, port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}): {proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"no /healthz on port {port} after {timeout:.0f} s")


def start_redis(ws: Workspace, url: str) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(f"needs a Redis server ({url}); redis-server is not installed")
    port = free_port()
    ws.extra.append(
        subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(ws.folder),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    )
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return re.sub(r"//[^/]+/", f"//127.0.0.1:{port}/", url)
        time.sleep(0.1)
    pytest.fail("redis-server did not start")


def serve(ws: Workspace, cmd: Command, args: list[str]) -> None:
    ws.stop()
    ws.port = free_port()
    args = set_option(args, "--port", str(ws.port))
    if "--store" in args and args[args.index("--store") + 1].startswith("redis://"):
        args = set_option(args, "--store", start_redis(ws, args[args.index("--store") + 1]))
    if "--config" in args and not (ws.folder / args[args.index("--config") + 1]).exists():
        (ws.folder / args[args.index("--config") + 1]).write_text("")  # a config of defaults: every key is optional
    ws.served = ws.folder / args[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **cmd.env}
    ws.server = subprocess.Popen(
        [sys.executable, "-m", "genrec", *args], cwd=ws.folder, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    ws.server_block = cmd.block
    wait_healthy(ws.server, ws.port)


def curl(ws: Workspace, cmd: Command) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    if ws.server is None or ws.server_block != cmd.block or ws.server.poll() is not None:
        pytest.skip("no server of this block is running (its `genrec serve` line was skipped or failed)")
    argv = [re.sub(r"localhost:8000", f"127.0.0.1:{ws.port}", a) for a in cmd.argv]
    for a in argv:  # a run folder to reload that the README has not made: a copy of the served one
        if a.startswith("{") and ('"run_dir"' in a or '"bundle"' in a):
            body = json.loads(a)
            target = ws.folder / body.get("bundle", body.get("run_dir", ""))
            if not target.exists() and ws.served is not None:
                shutil.copytree(ws.served, target, ignore=shutil.ignore_patterns("events.db*"))
    p = subprocess.run([argv[0], "-f", "--max-time", "60", *argv[1:]], capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, f"{cmd.text}\n-> curl exit {p.returncode}: {p.stdout[-2000:]} {p.stderr[-2000:]}"


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.text[:80] for c in COMMANDS])
def test_readme_command(cmd: Command, workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = workspace
    if ws.server is not None and ws.server_block != cmd.block:
        ws.stop()
    if cmd.argv[0] == "curl":
        return curl(ws, cmd)
    args = genrec_args(cmd.argv)
    if args is None:
        pytest.skip(f"not a genrec command ({cmd.argv[0]}): setup.sh is tests/test_install.py's, the rest is shell")
    args = ws.rewrite(args)
    if args[:1] == ["serve"]:
        return serve(ws, cmd, args)
    from genrec.cli import app

    monkeypatch.chdir(ws.folder)
    for k, v in cmd.env.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"{cmd.text}\nran as: genrec {shlex.join(args)}\n{res.output[-4000:]}"


def test_the_parser_finds_the_readme_commands() -> None:
    texts = [c.text for c in COMMANDS]
    assert sum(genrec_args(c.argv) is not None for c in COMMANDS) >= 5
    assert all("\\" not in t and "#" not in t for t in texts)  # continuations joined, comments dropped
