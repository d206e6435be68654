"""A fresh `pip install .` (no TorchRec, no system site-packages) gives a working genrec: scripts/check_install.sh.

The check lives in a script (also run by hand: `scripts/check_install.sh`): a new venv, the torch CPU wheel, the
package from a clean copy of the checkout, then `genrec --version`, `python -m genrec --help`, a tiny train ->
recommend -> --all-users export, and the one-line install hint of a TorchRec feature. About a minute on an idle
2-core box (pip's cache warm); a few on a busy one.
"""

import subprocess
from pathlib import Path

import pytest

import genrec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fresh_venv_install_trains_and_recommends_without_torchrec(tmp_path) -> None:
    p = subprocess.run(
        [str(ROOT / "scripts" / "check_install.sh"), str(tmp_path)], capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "check_install: ok" in p.stdout and f"genrec {genrec.__version__}" in p.stdout
