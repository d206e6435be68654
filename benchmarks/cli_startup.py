"""CLI startup: wall time of `genrec --help`, `genrec --version` and `genrec recommend RUN --user U`, each a fresh
process, median of --repeats runs (targets: --help <= 1.5 s, recommend <= 3 s on the 2-core box).

    python benchmarks/cli_startup.py                    # trains a tiny run (synthetic:tiny, 1 epoch) first
    python benchmarks/cli_startup.py --run runs/shop --user u1

Writes benchmarks/results/cli_startup.json and cli_startup.md. The box's load average is recorded with the times:
on a shared machine a busy neighbour adds to every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"help": 1.5, "version": 1.5, "recommend": 3.0, "import torch": None}


def genrec_executable() -> str:
    """The `genrec` console script of this interpreter's environment (else the one on PATH)."""
    here = Path(sys.executable).parent / "genrec"
    found = str(here) if here.exists() else shutil.which("genrec")
    if found is None:
        raise SystemExit("no genrec executable: pip install . (or scripts/setup.sh) first")
    return found


def wall(cmd: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a trained run folder (default: train a tiny one)")
    ap.add_argument("--user", default="u1")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    exe = genrec_executable()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "tiny"
            subprocess.run([exe, "train", "--model", "hstu", "--dataset", "synthetic:tiny", "--out", str(run),
                            "--epochs", "1", "--threads", "1"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        commands = {
            "help": [exe, "--help"],
            "version": [exe, "--version"],
            "recommend": [exe, "recommend", str(run), "--user", args.user, "-k", "10"],
            "import torch": [sys.executable, "-c", "import torch"],  # the floor of any command that runs a model
        }
        wall(commands["help"], 1)  # warm the OS file cache once
        rows = []
        for name, cmd in commands.items():
            load = os.getloadavg()[0]
            times = wall(cmd, args.repeats)
            shown = ["python", *cmd[1:]] if name == "import torch" else ["genrec", *cmd[1:]]
            if args.run is None and name == "recommend":
                shown[2] = "RUN(synthetic:tiny hstu, 1 epoch)"
            rows.append({"command": shlex.join(shown), "median_s": statistics.median(times), "min_s": min(times),
                         "max_s": max(times), "runs": len(times), "target_s": TARGETS[name],
                         "load_avg_1min": load})  # fmt: skip
    result = {
        "benchmark": "cli_startup",
        "command": "python benchmarks/cli_startup.py " + shlex.join(sys.argv[1:]),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# CLI startup",
        "",
        f"Command: `{result['command']}`. Each row: a fresh process per run, wall time; {os.cpu_count()} CPUs,",
        "1-minute load average when the row started (the box is shared). `import torch` alone is the floor of every",
        "command that runs a model: recommend's time above it is genrec's own.",
        "",
        "| command | median s | min s | max s | target s | load |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['command']}` | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
                     f"{r['target_s'] or '-'} | {r['load_avg_1min']:.1f} |")  # fmt: skip
    (RESULTS / "cli_startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
