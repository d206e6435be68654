"""Benchmarks as the README runs them, at a tiny scale: serving (--bundle ... --workers 1,2), the own-log export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (scripts/setup.sh installs it)")
def test_serving_benchmark_compares_worker_counts(tmp_path: Path) -> None:
    cmd = [sys.executable, "benchmarks/serving.py", "--quick", "--workers", "1,2", "--rates", "10,20",
           "--duration", "1", "--out", str(tmp_path)]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = json.loads((tmp_path / "serving_pipeline.json").read_text())
    assert sorted({(x["workers"], x["rate"]) for x in rows}) == [(1, 10.0), (1, 20.0), (2, 10.0), (2, 20.0)]
    for x in rows:
        assert {"rate", "achieved_rps", "p50_ms", "p95_ms", "p99_ms", "errors", "workers", "stages"} <= set(x)
        assert x["errors"] == 0 and x["requests"] > 0 and "rerank" in x["stages"]
    meta = json.loads((tmp_path / "serving_pipeline_meta.json").read_text())
    assert meta["store"] == "redis" and set(meta["scaling"]["max_rps"]) == {"1", "2"}
    assert (tmp_path / "serving_pipeline.png").stat().st_size > 0


def test_own_log_export_benchmark_reads_the_export_as_the_clean_files(tmp_path: Path) -> None:
    """benchmarks/own_log_export.py at the tiny scale: the raw export (guest rows, month-first dates, product
    columns on the rows, also as a workbook) reads into the clean files' sequences and trains to the same numbers."""
    cmd = [sys.executable, "benchmarks/own_log_export.py", "--size", "tiny", "--epochs", "1", "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rec = json.loads((tmp_path / "own_log_export.json").read_text())
    assert rec["sequences_identical"] is True and rec["xlsx_identical_to_csv"] is True
    clean, export = rec["runs"]["clean"], rec["runs"]["export"]
    assert clean["metrics"] == export["metrics"] and clean["metrics"]["NDCG@10"] > 0
    assert any("without 'Customer ID'" in line for line in export["report"])
    assert any("item attributes from the log's own columns" in line for line in export["report"])
