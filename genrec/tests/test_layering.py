"""Layering: loading and serving a bundle never imports a trainer."""

from __future__ import annotations

import json
import subprocess
import sys

TRAINERS = (
    "genrec.training.trainer",
    "genrec.training.loop",
    "genrec.ranking.train",
    "genrec.generative_ranking.train",
    "genrec.distributed.train",
    "genrec.stack.train",
    "genrec.stack.config",
)

# A clean interpreter imports the heavy third-party packages once, then forks one child per module so each
# module's imports are seen alone (a module imported earlier cannot hide what a later one pulls in).
SCRIPT = """
import importlib, json, os, pkgutil, sys
import fastapi, numpy, polars, torch  # noqa: F401
import genrec.pipeline, genrec.serving
trainers = set(json.loads(sys.argv[1]))
mods = [m.name for pkg in (genrec.pipeline, genrec.serving)
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
mods += ["genrec.bundle"]
mods = [m for m in mods if ".tests" not in m and m not in trainers]
found = {}
for mod in mods:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        importlib.import_module(mod)
        os.write(w, json.dumps(sorted(t for t in trainers if t in sys.modules)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    found[mod] = json.loads(out) if out else ["import failed"]
print(json.dumps(found))
"""


def test_no_serving_or_pipeline_module_imports_a_trainer() -> None:
    res = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(TRAINERS)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert "genrec.serving.app" in found and "genrec.pipeline.runs" in found  # the walk saw the modules
    assert {m: t for m, t in found.items() if t} == {}
