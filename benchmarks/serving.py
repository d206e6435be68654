"""Load benchmark of the serving API: open-loop /v1/recommend traffic with events in between, at rising rates.

    python benchmarks/serving.py --run runs/ml1m-hstu                 # full: 50..400 req/s, 20 s each
    python benchmarks/serving.py --quick                              # tiny synthetic run, 3 rates, 3 s each
    python benchmarks/serving.py --bundle runs/ml1m-stack --workers 1,2
        # the full stack bundle, 100..400 req/s, once per worker count on one throwaway redis-server:
        # benchmarks/results/serving_pipeline.{json,md,png}

With --workers, every worker count runs on the same store (a fresh Redis database each; redis-server is
started on a free port unless --store names one), and the report gives each count's highest achieved rate
with p99 <= --ceiling-p99 ms and the ratio to one worker's.

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
TS0 = 1_700_000_000  # in the past: the API rejects timestamps over a day ahead of its clock


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
    run: Path,
    store: str,
    port: int,
    log: Path,
    threads: int | None,
    config: Path | None = None,
    workers: int = 1,
    model_processes: int | None = None,
) -> subprocess.Popen:
    """The server, once it answers /readyz and its model processes (if any) hold the bundle."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "genrec.serving.cli", str(run), "--port", str(port), "--store", store,
           "--workers", str(workers)] + (["--threads", str(threads)] if threads else [])  # fmt: skip
    if model_processes is not None:
        cmd += ["--model-processes", str(model_processes)]
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    import urllib.request

    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                mp = json.loads(r.read()).get("model_process", {})
                state = mp.get("state", "off")
                if r.status == 200 and not state.startswith("starting"):  # "failed: ..." is reported, not waited on
                    proc.model_processes = mp.get("processes", 0) if state == "ready" else 0  # type: ignore[attr-defined]
                    return proc
                time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server not ready after 120 s; see {log}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (uvicorn's workers), from /proc; nan elsewhere."""
    try:
        stats = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                stats[int(d.name)] = (int(f[1]), int(f[11]) + int(f[12]))  # ppid, utime + stime (ticks)
    except OSError:
        return float("nan")
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, (pp, _) in stats.items() if pp == p and c not in tree]
    return sum(stats[p][1] for p in tree if p in stats) / os.sysconf("SC_CLK_TCK")


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    """A throwaway redis-server (no persistence) on a free port: the store every worker count shares."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("--workers needs redis-server on PATH (apt install redis-server) or --store redis://...")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def max_rate_under(rows: list[dict], p99_ms: float) -> float:
    """The highest achieved rate among the rows with p99 <= p99_ms and no errors (0 when none)."""
    ok = [r["achieved_rps"] for r in rows if r["p99_ms"] <= p99_ms and r["errors"] == 0]
    return max(ok, default=0.0)


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


def write_report(rows: list[dict], meta: dict, out: Path, stem: str = "serving") -> None:
    out.mkdir(parents=True, exist_ok=True)
    slim = [{k: v for k, v in r.items() if k != "latencies_ms"} for r in rows]
    # the format: a list of {rate, achieved_rps, p50_ms, p95_ms, p99_ms, errors, workers, stages}
    (out / f"{stem}.json").write_text(json.dumps(slim, indent=2))
    (out / f"{stem}_meta.json").write_text(json.dumps(meta, indent=2))
    lines = [
        f"# Serving load benchmark ({meta['run']}, {meta['mode']})",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['machine']}; store {meta['store']}; k={meta['k']}; {meta['duration_s']} s per rate; "
        f"{meta['event_share']:.0%} of recommends follow 1-3 events by the same user; latency from the scheduled "
        f"time (open loop, Poisson arrivals), client pool of {meta['max_in_flight']} connections; the client "
        f"runs on the same machine; torch threads per worker: {meta.get('threads', 1)}. "
        f"Stages: {' -> '.join(meta.get('stages', []))}.",
        "",
        "| workers | model procs | rate (req/s) | achieved | p50 ms | p95 ms | p99 ms | max ms | errors | events p99 ms | client late p99 ms | server CPU ms/req |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r.get('model_processes', 0)} | {r['rate']:.0f} | {r['achieved_rps']:.1f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['errors']} | {r['events_p99_ms']:.2f} "
            f"| {r['client_late_p99_ms']:.2f} | {r.get('server_cpu_ms_per_request', float('nan')):.2f} |"
        )
    stages = list(dict.fromkeys(s for r in rows for s in r["stages"]))
    lines += ["", "Where the time goes inside the server (per-stage, from each response's timings_ms; a batched stage "
              "counts the whole batch's time for each of its requests):", ""]  # fmt: skip
    lines += ["| workers | rate | " + " | ".join(f"{s} p50/p99 ms" for s in stages) + " |",
              "|---:|---:|" + "---:|" * len(stages)]  # fmt: skip
    for r in rows:
        cells = [f"{r['stages'][s]['p50_ms']:.2f} / {r['stages'][s]['p99_ms']:.2f}" if s in r["stages"] else "-" for s in stages]  # fmt: skip
        lines.append(f"| {r['workers']} | {r['rate']:.0f} | " + " | ".join(cells) + " |")
    target = meta.get("target")
    if target:
        at = [r for r in rows if r["rate"] == target["rate"] and r["workers"] == min(x["workers"] for x in rows)]
        if at:
            ok = at[0]["p99_ms"] <= target["p99_ms"] and at[0]["errors"] == 0
            lines += ["", f"Target p99 <= {target['p99_ms']} ms at {target['rate']:.0f} req/s with 0 errors "
                      f"({at[0]['workers']} worker): {'met' if ok else 'NOT met'} (p99 {at[0]['p99_ms']:.2f} ms, "
                      f"{at[0]['errors']} errors)."]  # fmt: skip
    scale = meta.get("scaling")
    if scale:
        parts = [f"{w} worker(s) {v:.0f} req/s" for w, v in scale["max_rps"].items()]
        lines += ["", f"Highest achieved rate with p99 <= {scale['p99_ms']} ms and no errors: {', '.join(parts)}."]
        if scale.get("saturation_rps"):
            sat = ", ".join(f"{w} worker(s) {v:.0f} req/s" for w, v in scale["saturation_rps"].items())
            lines += [f"Highest achieved rate at any latency (saturation): {sat}."]
        if scale.get("ratio") is not None:
            ok = scale["ratio"] >= scale["target_ratio"]
            lines += [f"Ratio {scale['ratio']:.2f}x (target >= {scale['target_ratio']}x): {'met' if ok else 'NOT met'}; "
                      f"bounded above by the highest offered rate."]  # fmt: skip
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / f"{stem}.png", meta)


def plot(rows: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    first = [r for r in rows if r["workers"] == rows[0]["workers"]] if rows else []
    hi = max((np.percentile(r["latencies_ms"], 99.5) for r in first if r["latencies_ms"]), default=10)
    bins = np.linspace(0, hi * 1.05, 60)
    for r in first:
        if r["latencies_ms"]:
            a.hist(np.clip(r["latencies_ms"], 0, bins[-1]), bins=bins, histtype="step", lw=1.5,
                   label=f"{r['rate']:.0f} req/s (p99 {r['p99_ms']:.1f} ms)")  # fmt: skip
    a.set(xlabel="end-to-end latency (ms)", ylabel="requests",
          title=f"/v1/recommend latency per offered rate ({rows[0]['workers'] if rows else 1} worker)")  # fmt: skip
    a.set_yscale("log")
    a.legend(fontsize=8)
    for w in sorted({r["workers"] for r in rows}):
        sel = [r for r in rows if r["workers"] == w]
        b.plot([r["achieved_rps"] for r in sel], [r["p99_ms"] for r in sel], "o-", label=f"{w} worker(s) p99")
        b.plot(
            [r["achieved_rps"] for r in sel], [r["p50_ms"] for r in sel], "x--", alpha=0.6, label=f"{w} worker(s) p50"
        )
    for y, lab in ((meta.get("target") or {}).get("p99_ms"), "target"), ((meta.get("scaling") or {}).get("p99_ms"), "ceiling"):  # fmt: skip
        if y:
            b.axhline(y, color="grey", ls=":", lw=1)
            b.text(b.get_xlim()[0], y, f" {lab} {y:g} ms", va="bottom", fontsize=8, color="grey")
    b.set(xlabel="achieved rate (req/s)", ylabel="ms", title="latency vs throughput")
    b.set_yscale("log")
    b.legend(fontsize=8)
    fig.suptitle(f"genrec serving: {meta['run']} ({meta['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", "--bundle", dest="run", type=Path,
                    help="bundle folder to serve (default with --quick: train a small one)")  # fmt: skip
    ap.add_argument("--rates", default=None, help="offered recommend rates, req/s (default 50..400; 100..400 "
                    "with --workers)")  # fmt: skip
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds at the lowest rate, not recorded")
    ap.add_argument("--event-share", type=float, default=0.3, help="share of recommends preceded by events")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-in-flight", type=int, default=64, help="client connection pool size (the bound)")
    ap.add_argument("--store", default=None, help="redis://HOST:PORT/DB to bench Redis (default: fresh SQLite; "
                    "a throwaway redis-server with --workers)")  # fmt: skip
    ap.add_argument("--workers", default=None, help="worker counts to compare, e.g. 1,2 (server --workers N)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per server worker (default: the server's, cores / workers - 1)",
    )
    ap.add_argument("--config", type=Path, default=None, help="serving config file (TOML/JSON) for the server")
    ap.add_argument("--model-processes", type=int, default=None,
                    help="server --model-processes N (default: the server's, from its cores per worker)")  # fmt: skip
    ap.add_argument("--target-rate", type=float, default=200.0)
    ap.add_argument("--target-p99", type=float, default=None, help="ms (default 25; 30 with --workers)")
    ap.add_argument("--ceiling-p99", type=float, default=50.0, help="ms: the p99 at which throughput is read")
    ap.add_argument("--target-ratio", type=float, default=1.6, help="wanted throughput of N workers / 1")
    ap.add_argument("--name", default=None, help="result file stem (default serving; serving_pipeline with --workers)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="small synthetic run, rates 25,50,100, 3 s each")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    compare = args.workers is not None
    workers = [int(w) for w in args.workers.split(",")] if compare else [1]
    default_rates = "100,150,200,250,300,350,400" if compare else "50,100,200,300,400"
    rates_text = args.rates or default_rates
    if args.quick:
        rates_text, args.duration, args.warmup = args.rates or "25,50,100", min(args.duration, 3.0), 1.0
    rates = [float(r) for r in rates_text.split(",")]
    target_p99 = args.target_p99 if args.target_p99 is not None else (30.0 if compare else 25.0)
    stem = args.name or ("serving_pipeline" if compare else "serving")
    tmp = Path(tempfile.mkdtemp(prefix="genrec-bench-"))
    run = args.run
    if run is None:
        if not args.quick:
            raise SystemExit("give --bundle BUNDLE (or --quick to train a small synthetic run)")
        print("training a small synthetic run for the quick benchmark ...", flush=True)
        run = quick_run(tmp)
    from genrec.bundle import Bundle

    bundle = Bundle.open(run)
    users = bundle.user_vocab.ids[:5000] + [f"bench-new-{i}" for i in range(200)]  # ~4% cold-start users at ML-1M size
    items = bundle.item_vocab.ids
    redis = None
    if args.store is None and (compare or max(workers) > 1):
        redis, base = start_redis(tmp)
    rows: list[dict] = []
    try:
        for n, w in enumerate(workers):
            if args.store:
                store = args.store
            elif redis is not None:
                store = f"{base}/{n}"  # a fresh database per worker count
            else:
                store = f"sqlite:///{tmp / 'events.db'}"
            port = free_port()
            log = tmp / f"server-{w}.log"
            proc = start_server(run, store, port, log, args.threads, args.config, workers=w, model_processes=args.model_processes)  # fmt: skip
            try:

                async def go(w: int = w, port: int = port, pid: int = proc.pid, mp: int = proc.model_processes) -> None:
                    pool = Pool("127.0.0.1", port, args.max_in_flight)
                    await drive(pool, rates[0], args.warmup, users, items, args.event_share, args.k, seed=0, record=False)  # fmt: skip
                    for i, rate in enumerate(rates):
                        cpu0 = cpu_seconds(pid)
                        row = await drive(pool, rate, args.duration, users, items, args.event_share, args.k, seed=i + 1)  # fmt: skip
                        # the server's CPU per recommend (its events included): a cost that noise from other
                        # processes on the machine changes far less than it changes latency
                        row["server_cpu_ms_per_request"] = 1e3 * (cpu_seconds(pid) - cpu0) / max(row["requests"], 1)
                        rows.append({"workers": w, "model_processes": mp, **row})
                        print(f"workers {w} rate {rate:6.0f}: achieved {row['achieved_rps']:6.1f}/s  p50 {row['p50_ms']:6.2f}  "
                              f"p95 {row['p95_ms']:6.2f}  p99 {row['p99_ms']:6.2f} ms  errors {row['errors']}  "
                              f"client late p99 {row['client_late_p99_ms']:.2f} ms  server CPU {row['server_cpu_ms_per_request']:.2f} ms/req", flush=True)  # fmt: skip
                    await pool.close()

                asyncio.run(go())
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)
    # the server's own stage names, in pipeline order (its responses' timings_ms keys)
    stage_names = [s for s in dict.fromkeys(k for r in rows for k in r["stages"]) if s not in ("history", "prepare")]
    store_kind = (
        "redis" if (redis is not None or (args.store or "").startswith("redis")) else "sqlite (WAL, synchronous=FULL)"
    )
    meta = {
        "run": str(run) if args.run else "synthetic:small HSTU (1 epoch, max_len 50)",
        "mode": "quick" if args.quick else "full",
        "command": "python benchmarks/serving.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "store": store_kind,
        "k": args.k,
        "duration_s": args.duration,
        "event_share": args.event_share,
        "max_in_flight": args.max_in_flight,
        "threads": args.threads or "cores / workers - 1, at least 1 (the server's default)",
        "stages": stage_names,
        "target": {"rate": args.target_rate, "p99_ms": target_p99},
        "load_average_at_end": os.getloadavg(),
    }
    if compare:
        best = {w: max_rate_under([r for r in rows if r["workers"] == w], args.ceiling_p99) for w in workers}
        one = best.get(min(workers)) or 0.0
        ratio = best[max(workers)] / one if one and max(workers) > min(workers) else None
        meta["scaling"] = {
            "p99_ms": args.ceiling_p99,
            "max_rps": best,
            "ratio": ratio,
            "target_ratio": args.target_ratio,
            # the highest achieved rate at any latency: what each worker count can push at all
            "saturation_rps": {w: max(r["achieved_rps"] for r in rows if r["workers"] == w) for w in workers},
        }
    write_report(rows, meta, args.out, stem)
    print(f"wrote {args.out / (stem + '.json')}, {stem}.md, {stem}.png")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
