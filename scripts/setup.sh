#!/usr/bin/env bash
# Create .venv with genrec and its pinned dependencies. torch 2.13.0 comes from the machine's CPU wheel
# when one is on disk (a plain `pip install torch` would fetch a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$wheel" ]; then
  pip install -q "$wheel"
else
  pip install -q torch==2.13.0  # no local CPU wheel: PyPI's build (large)
fi
pip install -q -e ".[dev,torchrec]"
pip install -q --no-deps torchrec==1.8.0
