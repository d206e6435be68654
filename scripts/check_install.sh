#!/usr/bin/env bash
# A fresh `pip install .` works without TorchRec: a new venv (no system site-packages), the torch CPU wheel, the
# package from a clean copy of this checkout, then the CLI's entry points and a tiny train -> recommend -> export.
# Usage: scripts/check_install.sh [WORKDIR]   (default: a temporary folder, removed afterwards)
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
[ -n "${1:-}" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
# a copy, so the build leaves no build/ or *.egg-info in the checkout
cp -r "$src/pyproject.toml" "$src/README.md" "$src/genrec" "$work/src/"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n 1 || true)
"$py" -m pip install -q --no-compile ${wheel:-torch==2.13.0}  # no .pyc of all of torch: minutes on a busy box
"$py" -m pip install -q --no-compile "$work/src"
"$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchrec') is not None)" \
  || { echo "check_install: torchrec is installed in the fresh venv: the check would prove nothing"; exit 1; }
cd "$work"
bin="$work/venv/bin"
"$bin/genrec" --version
"$bin/python" -m genrec --help >/dev/null
"$bin/genrec" train --model hstu --dataset synthetic:tiny --out runs/tiny --epochs 1 --threads 1 >/dev/null
"$bin/genrec" recommend runs/tiny --user u1 -k 5 >/dev/null
"$bin/genrec" recommend runs/tiny --all-users -k 5 --out recs.csv >/dev/null
[ "$(wc -l < recs.csv)" -gt 5 ]
# a TorchRec feature says how to install it, in one line, with the usage-error exit code
set +e
msg=$("$bin/genrec" train --model two-tower --dataset synthetic:tiny --out runs/tt 2>&1)
rc=$?
set -e
[ "$rc" -eq 2 ] && [ "$(printf '%s\n' "$msg" | grep -c .)" -eq 1 ] && printf '%s\n' "$msg" | grep -q "torchrec==1.8.0" \
  || { echo "check_install: two-tower without torchrec (exit $rc): $msg"; exit 1; }
echo "check_install: ok"
