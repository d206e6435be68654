"""A bundle is portable: copied elsewhere, with its training file deleted, read from a third directory, it
evaluates, recommends and serves exactly as the original; bad bundles are one-line errors (exit code 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.synthetic import generate_shop, shop_config

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """sasrec trained on the user's own CSV, named by a path relative to the shop folder (the classic trap)."""
    root = tmp_path_factory.mktemp("portable")
    shop = generate_shop(shop_config("tiny", seed=5))
    (root / "shop").mkdir()
    shop.events.write_csv(root / "shop/events.csv")
    shop.catalog.write_csv(root / "shop/catalog.csv")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "shop")
        args = ["train", "--model", "sasrec", "--dataset", "events.csv", "--out", "../runs/a", "--epochs", "1",
                "--max-len", "20", "--dim", "16", "--threads", "1"]  # fmt: skip
        res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return root, shop.events["user_id"].unique(maintain_order=True).to_list()[:3]


def answers(bundle: Path, users: list[str], tmp: Path) -> dict:
    """What evaluate, recommend and serve say about `bundle`."""
    from genrec.serving.app import create_app
    from genrec.serving.config import ServeConfig
    from genrec.serving.pipeline import ServingModel

    out: dict = {}
    res = runner.invoke(app, ["evaluate", str(bundle), "--split", "valid"])
    assert res.exit_code == 0, res.output
    out["evaluate"] = json.loads((bundle / "eval_valid.json").read_text())
    for u in users:
        res = runner.invoke(app, ["recommend", str(bundle), "--user", u, "-k", "5"])
        assert res.exit_code == 0, res.output
        out[f"recommend {u}"] = res.output
    cfg = ServeConfig(store=f"sqlite:///{tmp / 'events.db'}")
    with TestClient(create_app(cfg, bundle=ServingModel.load(bundle, cfg))) as client:
        for u in users:
            r = client.post("/v1/recommend", json={"user_id": u, "k": 5})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["known_user"] and body["history_length"] > 0
            out[f"serve {u}"] = [(i["item_id"], round(i["score"], 5), i["category"]) for i in body["items"]]
    return out


def test_copied_bundle_answers_like_the_original_without_the_data(trained, tmp_path, monkeypatch) -> None:
    root, users = trained
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    original = answers(root / "runs/a", users, tmp_path)
    shutil.copytree(root / "runs/a", tmp_path / "elsewhere/b")
    shutil.rmtree(root / "shop")  # the training data is gone
    (tmp_path / "third").mkdir()
    monkeypatch.chdir(tmp_path / "third")
    copied = answers(tmp_path / "elsewhere/b", users, tmp_path / "third")
    assert copied == original
    assert len(original[f"serve {users[0]}"]) == 5 and original["evaluate"]["metrics"]["HR@10"] >= 0


def _one_line_error(args: list[str], *needles: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    text = res.output.strip()
    assert "\n" not in text and text.startswith("error:") and all(n in text for n in needles), text


def test_bad_bundles_are_one_line_errors(trained, tmp_path) -> None:
    root, users = trained
    b = tmp_path / "b"
    shutil.copytree(root / "runs/a", b)
    manifest = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    for cmd in (["evaluate", str(b)], ["recommend", str(b), "--user", users[0]], ["serve", str(b)]):
        _one_line_error(cmd, "manifest.json", "format_version 99")
    (b / "manifest.json").write_text(json.dumps(manifest)[:-20])
    for cmd in (["evaluate", str(b)], ["recommend", str(b), "--user", users[0]], ["serve", str(b)]):
        _one_line_error(cmd, "manifest.json", "not valid JSON")
    (b / "manifest.json").write_text(json.dumps(manifest))
    (b / "histories.parquet").unlink()
    _one_line_error(["evaluate", str(b)], "histories.parquet", "missing")
    _one_line_error(["evaluate", str(tmp_path / "nothing")], "no such bundle")
