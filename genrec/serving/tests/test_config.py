"""The serving config is validated at start: a wrong type or range is an error naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from genrec.serving.app import create_app
from genrec.serving.config import ConfigError, ServeConfig, load_config
from genrec.serving.pipeline import ServingModel
from genrec.serving.tests.conftest import REPO

BAD = [
    ("admin_token = 123\n", "admin_token must be a string or null, got int 123"),
    ('admin_token = "   "\n', "admin_token must not be blank"),
    ("max_k = -1\n", "max_k must be a positive integer, got -1"),
    ("max_batch = true\n", "max_batch must be an integer, got bool"),
    ('live_history = "1000"\n', "live_history must be an integer, got str"),
    ("max_future_skew_s = -60\n", "max_future_skew_s must be >= 0"),
    ("max_future_skew_s = 1.5\n", "max_future_skew_s must be an integer, got float"),
    ("store = 5\n", "store must be a string, got int"),
    ("dataset_history = 1\n", "dataset_history must be true/false, got int"),
    ('[rules]\nmax_per_category = "3"\n', "rules.max_per_category must be an integer or null, got str"),
    ("[rules]\nmax_per_category = 0\n", "rules.max_per_category must be a positive integer"),
    ("[rules]\npurchase_types = [1]\n", "rules.purchase_types must be a list of strings, got list [1]"),
    (
        '[[rules.boosts]]\nfield = "category"\nvalue = "c3"\nweight = "high"\n',
        "rules.boosts[0].weight must be a number",
    ),
    ('[[rules.boosts]]\nfield = "category"\nvalue = 3\nweight = 1\n', "rules.boosts[0].value must be a string"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_wrong_type_or_range_names_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "serving.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_a_valid_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "serving.json"
    path.write_text('{"admin_token": "t", "max_future_skew_s": 0, "rules": {"boosts": [{"field": "category", "value": "c1", "weight": 2}]}}')  # fmt: skip
    cfg = load_config(path)
    assert cfg.max_future_skew_s == 0 and cfg.rules.boosts[0].weight == 2 and ServeConfig().max_future_skew_s == 86_400


def test_create_app_rejects_a_bad_config_instead_of_failing_on_reload(bundle: ServingModel, tmp_path: Path) -> None:
    bad = ServeConfig(store=f"sqlite:///{tmp_path}/e.db", admin_token=123)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="admin_token must be a string"):
        create_app(bad, bundle=bundle)
    good = ServeConfig(store=f"sqlite:///{tmp_path}/e.db", admin_token="123")
    with TestClient(create_app(good, bundle=bundle)) as c:  # the reload path reads the token: 4xx, not 500
        r = c.post("/v1/admin/reload", json={"run_dir": "/nope"}, headers={"Authorization": "Bearer 123"})
        assert r.status_code == 422


def test_serve_with_a_bad_config_is_one_line_naming_file_and_key(tiny_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "serving.toml"
    path.write_text("admin_token = 123\n")
    r = subprocess.run(
        [sys.executable, "-m", "genrec.serving.cli", str(tiny_run), "--config", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "300"},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and f"{path}: admin_token must be a string" in r.stderr
