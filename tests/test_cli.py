"""End to end through the command line: a user's own event file -> train -> evaluate -> recommend."""

import json

import polars as pl
from typer.testing import CliRunner

from genrec.cli import app
from genrec.data.synthetic import generate_shop, shop_config

runner = CliRunner()


def test_train_evaluate_recommend_on_a_user_file(tmp_path) -> None:
    shop = generate_shop(shop_config("tiny", seed=2))
    events = tmp_path / "events.csv"
    shop.events.write_csv(events)
    shop.catalog.write_csv(tmp_path / "catalog.csv")
    run = tmp_path / "run"
    args = ["train", "--model", "sasrec", "--dataset", str(events), "--out", str(run), "--epochs", "2",
            "--max-len", "20", "--dim", "16", "--threads", "1"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((run / "metrics.json").read_text())["split"] == "test"
    res = runner.invoke(app, ["evaluate", str(run), "--split", "valid"])
    assert res.exit_code == 0, res.output
    assert "NDCG@10" in res.output and (run / "eval_valid.json").exists()
    user = shop.events["user_id"][0]
    res = runner.invoke(app, ["recommend", str(run), "--user", user, "-k", "5"])
    assert res.exit_code == 0, res.output
    assert res.output.count("\n│ ") >= 5  # five table rows
    res = runner.invoke(app, ["recommend", str(run), "--user", "nobody"])
    assert res.exit_code == 2 and "not in dataset" in res.output


def test_bad_event_file_is_a_clear_error_not_a_traceback(tmp_path) -> None:
    bad = tmp_path / "events.csv"
    pl.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": ["2024-01-01", "yesterday"]}).write_csv(
        bad
    )
    res = runner.invoke(app, ["train", "--dataset", str(bad), "--out", str(tmp_path / "r"), "--epochs", "1"])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "events.csv" in out and "line 3" in out and "timestamp" in out and "yesterday" in out
    assert "Traceback" not in res.output
