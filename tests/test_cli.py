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


def test_train_on_a_shop_log_with_its_own_columns_separator_time_format_and_catalog(tmp_path) -> None:
    shop = generate_shop(shop_config("tiny", seed=3))
    folder = tmp_path / "my-shop"
    folder.mkdir()
    events = shop.events.with_columns(pl.from_epoch("timestamp").dt.strftime("%d/%m/%Y %H:%M:%S")).rename(
        {"user_id": "customer_id", "item_id": "product_id", "timestamp": "event_time", "event_type": "type"}
    )
    events.write_csv(folder / "log.csv", separator="\t")  # tabs in a .csv
    keep = shop.catalog.head(100)  # half the items: a coverage warning
    keep.rename({"item_id": "product_id"}).write_csv(tmp_path / "products.txt", separator=";")
    run = tmp_path / "run"
    args = ["train", "--model", "sasrec", "--dataset", str(folder / "log.csv"), "--out", str(run), "--epochs", "1",
            "--max-len", "20", "--dim", "16", "--threads", "1", "--item-attributes",
            "--columns", "user_id=customer_id,item_id=product_id,timestamp=event_time,event_type=type",
            "--timestamp-format", "%d/%m/%Y %H:%M:%S", "--catalog", str(tmp_path / "products.txt"),
            "--attributes", "brand,category,price"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert f"read log.csv: {events.height:,} rows" in out and "rows merged into the previous token" in out
    assert "warning:" in out and "describes" in out and "sasrec on my-shop" in out
    from genrec.bundle import Bundle

    bundle = Bundle.open(run)
    config = bundle.component(role="retrieval").config
    assert bundle.data["summary"]["name"] == "my-shop"
    assert config["train"]["read"]["columns"]["user_id"] == "customer_id"
    assert config["model"]["num_attribute_tokens"] > 0
    res = runner.invoke(app, ["evaluate", str(run)])  # from the bundle alone
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, args[:-2] + ["--attributes", "colour"])
    assert res.exit_code == 2 and "no attribute column 'colour'" in " ".join(res.output.split())
    res = runner.invoke(app, ["train", "--dataset", str(tmp_path / "nope.csv"), "--out", str(run)])
    assert res.exit_code == 2 and "file not found:" in res.output
    assert str(tmp_path / "nope.csv") in "".join(res.output.split())  # rich may wrap a long path


def test_train_on_a_log_with_anonymous_rows_and_month_first_dates(tmp_path) -> None:
    """An Online Retail-like export: no customer on some rows, 12/31/2010 dates. Without --drop-incomplete the
    first such row stops the command with its line; with it they are dropped and counted, the dates read month
    first from the values, and the flag is kept in the bundle's reading options."""
    shop = generate_shop(shop_config("tiny", seed=4))
    events = (
        shop.events.join(shop.users.select("user_id", pl.col("region").alias("Country")), on="user_id", how="left")
        .with_columns(
            pl.from_epoch("timestamp").dt.strftime("%m/%d/%Y %H:%M").alias("InvoiceDate"),
            pl.when(pl.int_range(pl.len()) % 17 == 5).then(None).otherwise(pl.col("user_id")).alias("CustomerID"),
        )
        .select("CustomerID", pl.col("item_id").alias("StockCode"), "InvoiceDate", "Country")
    )
    events.write_csv(tmp_path / "retail.csv")
    run = tmp_path / "run"
    args = ["train", "--model", "sasrec", "--dataset", str(tmp_path / "retail.csv"), "--out", str(run),
            "--epochs", "1", "--max-len", "20", "--dim", "16", "--threads", "1"]  # fmt: skip
    res = runner.invoke(app, args)
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "retail.csv, line 7, column 'CustomerID': missing CustomerID" in out, out
    assert "--drop-incomplete" in out and "Traceback" not in res.output
    res = runner.invoke(app, [*args, "--drop-incomplete"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    dropped = events.height - events.drop_nulls().height
    assert f"dropped rows that lack a value (--drop-incomplete): {dropped:,} without 'CustomerID'" in out
    assert "timestamps read as '%m/%d/%Y', with or without a time (month first" in out
    assert "user attributes from the log's own columns: Country" in out
    from genrec.bundle import Bundle
    from genrec.pipeline.pipeline import Pipeline

    bundle = Bundle.open(run)
    assert bundle.component(role="retrieval").config["train"]["read"]["drop_incomplete"] is True
    assert "Country" in bundle.users().columns  # a new user's request context {"Country": ...} picks its popularity
    regions = set(shop.users["region"].to_list())
    assert {v for k, v in Pipeline.from_bundle(bundle).group_popularity if k == "Country"} == regions
    res = runner.invoke(app, ["evaluate", str(run)])  # reads the log again, as trained
    assert res.exit_code == 0, res.output


def test_genrank_trains_on_an_own_log_with_event_types(tmp_path) -> None:
    shop = generate_shop(shop_config("tiny", seed=5))
    shop.events.write_csv(tmp_path / "events.csv")
    args = ["genrank", "train", "--out", str(tmp_path / "rank"), "--dataset", str(tmp_path / "events.csv"),
            "--epochs", "1", "--max-len", "20", "--dim", "16", "--max-users", "120"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "purchase/auc" in res.output and "unknown action dataset" not in res.output


def test_train_and_serve_from_a_published_split_file_with_its_attributes(tmp_path) -> None:
    """S3-Rec's layout, as an external check would pass it: Toys.txt ('user item item ...') with
    Toys_item2attributes.json beside it, no flags; the bundle then recommends from its own copy of the data."""
    shop = generate_shop(shop_config("tiny", seed=3))
    seqs = shop.events.group_by("user_id", maintain_order=True).agg("item_id")
    folder = tmp_path / "s3rec"
    folder.mkdir()
    (folder / "Toys.txt").write_text("".join(f"{u} {' '.join(items)}\n" for u, items in seqs.iter_rows()))
    attrs = {i: [c, b] for i, c, b in shop.catalog.select("item_id", "category", "brand").iter_rows()}
    (folder / "Toys_item2attributes.json").write_text(json.dumps(attrs))
    run = tmp_path / "run"
    args = ["train", "--model", "hstu", "--dataset", str(folder / "Toys.txt"), "--out", str(run), "--epochs", "1",
            "--item-attributes", "--dim", "16", "--threads", "1"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "a user and their items per line: no timestamps" in res.output and "Toys_item2attributes.json" in res.output
    assert json.loads((run / "manifest.json").read_text())["data"]["summary"]["name"] == "Toys"
    (folder / "Toys.txt").unlink()  # the bundle carries what it needs
    res = runner.invoke(app, ["recommend", str(run), "--user", seqs["user_id"][0], "-k", "3"])
    assert res.exit_code == 0, res.output
