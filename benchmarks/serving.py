"""Load benchmark of the serving API: open-loop /v1/recommend traffic with events in between, at rising rates.

    python benchmarks/serving.py --run runs/ml1m-hstu                 # full: 50..400 req/s, 20 s each
    python benchmarks/serving.py --quick                              # tiny synthetic run, 3 rates, 3 s each

Starts `python -m genrec.serving.cli RUN --store sqlite:///TMP` on a free loopback port (fresh store each run),
then for each rate sends recommend requests as a Poisson process (seeded). Before a share of them
(--event-share) the same user first posts 1-3 events, as a shopper who clicks and then sees the next page.

Latency is measured from each request's *scheduled* time, so a client or server that falls behind shows up
as latency (no coordinated omission). The client is a bounded asyncio keep-alive HTTP/1.1 pool written on
raw streams (at most --max-in-flight connections), several times cheaper per request than httpx, and it
reports its own lateness (start - schedule) so a saturated client is visible rather than blamed on the server.

Writes benchmarks/results/serving.json (a list of rows: rate, achieved_rps, p50_ms, p95_ms, p99_ms, errors, ... plus
per-stage server timings), serving.md, and serving.png (latency histograms per rate, per-stage p50/p99).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TS0 = 1_900_000_000


# ---------------------------------------------------------------------------------------------------
# a small keep-alive HTTP/1.1 client
# ---------------------------------------------------------------------------------------------------


class Pool:
    """At most `size` keep-alive connections; a request waits for a free one (the bound on in-flight work)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.free: asyncio.Queue = asyncio.Queue()
        self.opened = 0

    async def _get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.free.empty() and self.opened < self.size:
            self.opened += 1
            try:
                return await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.opened -= 1
                raise
        return await self.free.get()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self._get()
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            payload = await reader.readexactly(int(m.group(1))) if m else b""
            close = re.search(rb"(?i)connection:\s*close", head) is not None
        except (OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            self.opened -= 1
            raise
        if close:
            writer.close()
            self.opened -= 1
        else:
            self.free.put_nowait((reader, writer))
        return status, payload

    async def close(self) -> None:
        while not self.free.empty():
            _, w = self.free.get_nowait()
            w.close()


# ---------------------------------------------------------------------------------------------------
# load generation
# ---------------------------------------------------------------------------------------------------


async def drive(
    pool: Pool,
    rate: float,
    duration: float,
    users: list[str],
    items: list[str],
    event_share: float,
    k: int,
    seed: int,
    record: bool = True,
) -> dict:
    rng = random.Random(seed)
    t = 0.0
    arrivals = []
    while t < duration:  # Poisson arrivals
        t += rng.expovariate(rate)
        arrivals.append(t)
    lat, ev_lat, late, errors, stages = [], [], [], [], []
    ev_counter = [0]

    async def one(due: float, user: str, n_events: int) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        late.append(time.perf_counter() - due)
        rec_due = due
        try:
            if n_events:
                evs = []
                for _ in range(n_events):
                    ev_counter[0] += 1
                    evs.append({"event_id": f"bench-{seed}-{ev_counter[0]}", "user_id": user, "item_id": rng.choice(items),
                                "event_type": rng.choice(("view", "view", "view", "cart", "purchase")),
                                "timestamp": TS0 + ev_counter[0]})  # fmt: skip
                status, _ = await pool.post("/v1/events", json.dumps({"events": evs}).encode())
                now = time.perf_counter()
                ev_lat.append(now - due)
                if status != 200:
                    errors.append(f"events {status}")
                rec_due = now
            status, payload = await pool.post("/v1/recommend", json.dumps({"user_id": user, "k": k}).encode())
            lat.append(time.perf_counter() - rec_due)
            if status != 200:
                errors.append(f"recommend {status}")
            else:
                stages.append(json.loads(payload)["timings_ms"])
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            errors.append(type(e).__name__)

    start = time.perf_counter() + 0.05
    tasks = [
        asyncio.create_task(
            one(start + a, rng.choice(users), rng.choice((1, 1, 2, 3)) if rng.random() < event_share else 0)
        )
        for a in arrivals
    ]
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    if not record:
        return {}
    ms = np.array(lat) * 1e3
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan")  # noqa: E731
    stage_names = list(dict.fromkeys(s for d in stages for s in d))  # pipeline order
    per_stage = {
        s: {"p50_ms": pct([d.get(s, 0.0) for d in stages], 50), "p99_ms": pct([d.get(s, 0.0) for d in stages], 99),
            "mean_ms": float(np.mean([d.get(s, 0.0) for d in stages]))}
        for s in stage_names
    }  # fmt: skip
    return {
        "rate": rate,
        "achieved_rps": len(lat) / elapsed,
        "p50_ms": pct(ms, 50),
        "p95_ms": pct(ms, 95),
        "p99_ms": pct(ms, 99),
        "max_ms": float(ms.max()) if len(ms) else float("nan"),
        "errors": len(errors),
        "requests": len(lat),
        "events_posts": len(ev_lat),
        "events_p99_ms": pct(np.array(ev_lat) * 1e3, 99),
        "client_late_p99_ms": pct(np.array(late) * 1e3, 99),
        "stages": per_stage,
        "latencies_ms": ms.round(3).tolist(),
        "error_kinds": sorted(set(errors))[:5],
    }


# ---------------------------------------------------------------------------------------------------
# server
# ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    run: Path, store: str, port: int, log: Path, threads: int, config: Path | None = None
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "genrec.serving.cli", str(run), "--port", str(port), "--store", store,
           "--threads", str(threads)]  # fmt: skip
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    import urllib.request

    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server not ready after 120 s; see {log}")


def quick_run(folder: Path) -> Path:
    from rich.console import Console

    from genrec.training.trainer import TrainConfig, train

    out = folder / "quick-run"
    train(TrainConfig(model="hstu", dataset="synthetic:small", epochs=1, max_len=50, threads=2, out=str(out)),
          console=Console(quiet=True))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------


def write_report(rows: list[dict], meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    slim = [{k: v for k, v in r.items() if k != "latencies_ms"} for r in rows]
    # the format: a list of {rate, achieved_rps, p50_ms, p95_ms, p99_ms, errors, ...}; setup beside it
    (out / "serving.json").write_text(json.dumps(slim, indent=2))
    (out / "serving_meta.json").write_text(json.dumps(meta, indent=2))
    lines = [
        f"# Serving load benchmark ({meta['run']}, {meta['mode']})",
        "",
        f"{meta['machine']}; store {meta['store']}; k={meta['k']}; {meta['duration_s']} s per rate; "
        f"{meta['event_share']:.0%} of recommends follow 1-3 events by the same user; latency from the scheduled "
        f"time (open loop, Poisson arrivals), client pool of {meta['max_in_flight']} connections.",
        "",
        "| rate (req/s) | achieved | p50 ms | p95 ms | p99 ms | max ms | errors | events p99 ms | client late p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rate']:.0f} | {r['achieved_rps']:.1f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['max_ms']:.1f} | {r['errors']} | {r['events_p99_ms']:.2f} | {r['client_late_p99_ms']:.2f} |"
        )
    stages = list(dict.fromkeys(s for r in rows for s in r["stages"]))
    lines += ["", "Where the time goes inside the server (per-stage, from each response's timings_ms):", ""]
    lines += ["| rate | " + " | ".join(f"{s} p50/p99 ms" for s in stages) + " |", "|---:|" + "---:|" * len(stages)]
    for r in rows:
        cells = [f"{r['stages'][s]['p50_ms']:.2f} / {r['stages'][s]['p99_ms']:.2f}" if s in r["stages"] else "-" for s in stages]  # fmt: skip
        lines.append(f"| {r['rate']:.0f} | " + " | ".join(cells) + " |")
    target = meta.get("target")
    if target:
        at = [r for r in rows if r["rate"] == target["rate"]]
        if at:
            ok = at[0]["p99_ms"] <= target["p99_ms"] and at[0]["errors"] == 0
            lines += ["", f"Target p99 <= {target['p99_ms']} ms at {target['rate']} req/s: "
                      f"{'met' if ok else 'NOT met'} (p99 {at[0]['p99_ms']:.2f} ms, {at[0]['errors']} errors)."]  # fmt: skip
    (out / "serving.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "serving.png", meta)


def plot(rows: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    hi = max((np.percentile(r["latencies_ms"], 99.5) for r in rows if r["latencies_ms"]), default=10)
    bins = np.linspace(0, hi * 1.05, 60)
    for r in rows:
        if r["latencies_ms"]:
            a.hist(np.clip(r["latencies_ms"], 0, bins[-1]), bins=bins, histtype="step", lw=1.5,
                   label=f"{r['rate']:.0f} req/s (p99 {r['p99_ms']:.1f} ms)")  # fmt: skip
    a.set(xlabel="end-to-end latency (ms)", ylabel="requests", title="/v1/recommend latency per offered rate")
    a.set_yscale("log")
    a.legend(fontsize=8)
    stages = list(rows[-1]["stages"]) if rows else []
    x = np.arange(len(rows))
    width = 0.8 / max(len(stages), 1)
    for j, s in enumerate(stages):
        b.bar(x + j * width, [r["stages"].get(s, {}).get("p50_ms", 0) for r in rows], width, label=f"{s} p50")
        b.scatter(x + j * width, [r["stages"].get(s, {}).get("p99_ms", 0) for r in rows], marker="_", s=200, color="k")
    b.set_xticks(x + 0.4 - width / 2, [f"{r['rate']:.0f}" for r in rows])
    b.set(xlabel="offered rate (req/s)", ylabel="ms", title="per-stage server time (bar p50, tick p99)")
    b.legend(fontsize=8)
    fig.suptitle(f"genrec serving: {meta['run']} ({meta['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="run folder to serve (default with --quick: train a small one)")
    ap.add_argument("--rates", default="50,100,200,300,400", help="offered recommend rates, req/s")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds at the lowest rate, not recorded")
    ap.add_argument("--event-share", type=float, default=0.3, help="share of recommends preceded by events")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-in-flight", type=int, default=64, help="client connection pool size (the bound)")
    ap.add_argument("--store", default=None, help="redis://HOST:PORT/DB to bench Redis (default: fresh SQLite)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--config", type=Path, default=None, help="serving config file (TOML/JSON) for the server")
    ap.add_argument("--target-rate", type=float, default=200.0)
    ap.add_argument("--target-p99", type=float, default=25.0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="small synthetic run, rates 25,50,100, 3 s each")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.quick:
        args.rates, args.duration, args.warmup = "25,50,100", min(args.duration, 3.0), 1.0
    rates = [float(r) for r in args.rates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="genrec-bench-"))
    run = args.run
    if run is None:
        if not args.quick:
            raise SystemExit("give --run RUN_DIR (or --quick to train a small synthetic run)")
        print("training a small synthetic run for the quick benchmark ...", flush=True)
        run = quick_run(tmp)
    from genrec.bundle import Bundle

    bundle = Bundle.open(run)
    users = bundle.user_vocab.ids[:5000] + [f"bench-new-{i}" for i in range(200)]  # ~4% cold-start users at ML-1M size
    items = bundle.item_vocab.ids
    store = args.store or f"sqlite:///{tmp / 'events.db'}"
    port = free_port()
    log = tmp / "server.log"
    proc = start_server(run, store, port, log, args.threads, args.config)
    rows = []
    try:

        async def go() -> None:
            pool = Pool("127.0.0.1", port, args.max_in_flight)
            await drive(pool, rates[0], args.warmup, users, items, args.event_share, args.k, seed=0, record=False)
            for i, rate in enumerate(rates):
                row = await drive(pool, rate, args.duration, users, items, args.event_share, args.k, seed=i + 1)
                rows.append(row)
                print(f"rate {rate:6.0f}: achieved {row['achieved_rps']:6.1f}/s  p50 {row['p50_ms']:6.2f}  "
                      f"p95 {row['p95_ms']:6.2f}  p99 {row['p99_ms']:6.2f} ms  errors {row['errors']}  "
                      f"client late p99 {row['client_late_p99_ms']:.2f} ms", flush=True)  # fmt: skip
            await pool.close()

        asyncio.run(go())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    meta = {
        "run": str(run) if args.run else "synthetic:small HSTU (1 epoch, max_len 50)",
        "mode": "quick" if args.quick else "full",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "store": "redis" if args.store else "sqlite (WAL, synchronous=FULL)",
        "k": args.k,
        "duration_s": args.duration,
        "event_share": args.event_share,
        "max_in_flight": args.max_in_flight,
        "target": {"rate": args.target_rate, "p99_ms": args.target_p99},
        "load_average_at_end": os.getloadavg(),
    }
    write_report(rows, meta, args.out)
    print(f"wrote {args.out / 'serving.json'}, serving.md, serving.png")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
