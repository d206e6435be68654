"""`genrec pipeline train --config`: a bad config is one error naming the file and the key; a good one
trains every component into ONE bundle whose manifest holds the stage list."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from genrec.bundle import Bundle
from genrec.cli import app
from genrec.stack.config import ConfigError, _trained_two_tower, load_pipeline_config

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
TINY = """
[data]
dataset = "synthetic:tiny"
threads = 1

[[retrieval]]
model = "sasrec"
epochs = 1
max_len = 20
dim = 16
layers = 1
k = 50

[[retrieval]]
model = "two-tower"
epochs = 1

[ranking]
model = "lr"
k = 30
epochs = 1
test_users = 50

[rerank]
max_per_category = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipeline.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("edit", "message", "base"),
    [
        (
            ("epochs = 1\nmax_len", "epoch = 1\nmax_len"),
            r"\[\[retrieval\]\] #1 \(sasrec\): unknown key 'epoch'",
            "tiny",
        ),
        (
            ('model = "two-tower"', 'model = "two-tower"\nmax_len = 5'),
            r"#2 \(two-tower\): unknown key 'max_len'",
            "tiny",
        ),
        (('model = "lr"', 'model = "lr"\nlayers = 2'), r"\[ranking\] \(lr\): unknown key 'layers'", "tiny"),
        (('model = "lr"', 'model = "gbdt"'), r"\[ranking\]: key 'model' must be one of", "tiny"),
        (('model = "sasrec"', 'model = "bert4rec"'), r"#1: key 'model' is 'bert4rec'", "tiny"),
        (("max_per_category = 2", "max_per_cat = 2"), r"\[rerank\]: unknown key 'max_per_cat'", "tiny"),
        (("threads = 1", "thread = 1"), r"\[data\]: unknown key 'thread'", "tiny"),
        (("threads = 1", 'threads = 1\ncolumns = {shopper = "x"}'), r"\[data\]: key 'columns': .*'shopper'", "tiny"),
        (("threads = 1", "threads = 1\nk_core = -2"), r"\[data\]: key 'k_core': k_core must be", "tiny"),
        (("threads = 1", 'threads = 1\ndrop_incomplete = "yes"'), r"key 'drop_incomplete': .* true or false", "tiny"),
        (("[rerank]", "[reranking]"), r"top level: unknown key 'reranking'", "tiny"),
        (('dataset = "synthetic:tiny"', 'name = "x"'), r"\[data\]: key 'dataset' missing", "tiny"),
        (("k = 50", 'k = 50\nindex = "hnsw"'), r"key 'index' must be exact \| faiss \| auto", "tiny"),
        (("[data]", "[data"), r"not valid TOML", "tiny"),
        # an auto retriever (AUTO below)
        (("time_budget = 0.4\n", ""), r"#1 \(auto\): key 'time_budget' \(minutes, > 0\) is required", "auto"),
        (("time_budget = 0.4", "time_budget = 0"), r"key 'time_budget' \(minutes, > 0\) is required", "auto"),
        (("time_budget = 0.4", "time_budget = 0.4\nepochs = 3"), r"#1 \(auto\): unknown key 'epochs'", "auto"),
        (
            ("time_budget = 0.4", "time_budget = 0.4\nmax_members = 0"),
            r"key 'max_members' must be an integer >= 1",
            "auto",
        ),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, edit, message, base) -> None:
    path = write(tmp_path, {"tiny": TINY, "auto": AUTO}[base].replace(*edit, 1))
    with pytest.raises(ConfigError, match=message) as e:
        load_pipeline_config(path)
    assert str(e.value).startswith(f"{path}: ")


def test_shipped_examples_are_valid() -> None:
    for name in ("pipeline-quick.toml", "pipeline-ml1m.toml", "pipeline-beauty.toml"):
        cfg = load_pipeline_config(EXAMPLES / name)
        first = cfg["retrieval"][0]["model"]
        assert first.startswith("hstu") and cfg["retrieval"][1]["model"] == "two-tower" and cfg["ranking"]["model"]
    cfg = load_pipeline_config(EXAMPLES / "pipeline-auto.toml")
    assert [r["model"] for r in cfg["retrieval"]] == ["auto", "two-tower"] and cfg["retrieval"][0]["time_budget"]


def test_cli_trains_the_stack_into_one_bundle(tmp_path) -> None:
    runner = CliRunner()
    bad = write(tmp_path, TINY.replace("epochs = 1\nmax_len", "epoch = 1\nmax_len"))
    res = runner.invoke(app, ["pipeline", "train", "--config", str(bad), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown key 'epoch'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x").exists()  # nothing trained on a bad config
    res = runner.invoke(
        app, ["pipeline", "train", "--config", str(write(tmp_path, TINY)), "--out", str(tmp_path / "b")]
    )
    assert res.exit_code == 0, res.output
    b = Bundle.open(tmp_path / "b")
    assert {n: (c.kind, c.role) for n, c in b.components.items()} == {
        "sasrec": ("sasrec", "retrieval"), "two-tower": ("two-tower", "retrieval"), "lr": ("lr", "ranking"),
    }  # fmt: skip
    assert b.pipeline == [
        {"stage": "retrieve", "component": "sasrec", "k": 50, "index": "exact"},
        {"stage": "retrieve", "component": "two-tower", "k": 200, "index": "auto"},
        {"stage": "popular", "fill_factor": 3},
        {"stage": "rank", "component": "lr"},
        {"stage": "rerank", "exclude_seen": True, "exclude_out_of_stock": True, "max_per_category": 2},
    ]
    assert b.component("sasrec").config["model"]["num_layers"] == 1  # `layers` reached the model
    assert set(b.metrics) == {"sasrec", "two-tower", "lr"}

    # the same command again: the retrievers are reused, a changed [ranking] key retrains the ranker only
    tower = tmp_path / "b" / "work" / "two-tower"
    before = (tower / "manifest.json").stat().st_mtime_ns
    again = write(tmp_path, TINY.replace("epochs = 1\ntest_users", "epochs = 2\ntest_users"))
    res = runner.invoke(app, ["pipeline", "train", "--config", str(again), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "reused" in res.output and (tower / "manifest.json").stat().st_mtime_ns == before
    assert Bundle.open(tmp_path / "b").component("lr").config["train"]["epochs"] == 2
    assert not _trained_two_tower(tower, {"epochs": 2})  # another two-tower key: trained again


AUTO = """
[data]
dataset = "synthetic:tiny"
threads = 1

[[retrieval]]
model = "auto"
time_budget = 0.4
k = 40
target_events = "purchase,cart"
"""


def test_auto_retriever_is_tuned_within_its_budget(tmp_path) -> None:
    import json
    import time

    config = write(tmp_path, AUTO)
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["pipeline", "train", "--config", str(config), "--out", str(tmp_path / "b")])
    wall = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    tuning = json.loads((tmp_path / "b" / "work" / "auto" / "tuning.json").read_text())
    assert tuning["budget_s"] == pytest.approx(24.0) and tuning["wall_s"] <= 24.0 * 1.2
    assert any(t["state"] == "complete" for t in tuning["trials"])
    b = Bundle.open(tmp_path / "b")
    ((name, comp),) = b.components.items()
    shipped = "ensemble" if "members" in tuning["ensemble"] else tuning["chosen"]["params"]["family"]
    assert comp.role == "retrieval" and comp.kind == shipped  # the chosen model, or its ensemble with trials
    assert comp.config["train"]["target_events"] == ["purchase", "cart"]  # every trial learned what was asked
    assert comp.config["train"]["event_inputs"] == tuning["chosen"]["params"]["events"]
    assert b.pipeline[0] == {"stage": "retrieve", "component": name, "k": 40, "index": "exact"}
    assert wall < 24.0 + 30  # the tuning holds its budget; the rest is loading and writing one bundle
    t0 = time.perf_counter()  # a second call resumes: the finished tuning is reused, not run again
    res = CliRunner().invoke(app, ["pipeline", "train", "--config", str(config), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "reused" in res.output and time.perf_counter() - t0 < 20
    assert json.loads((tmp_path / "b" / "work" / "auto" / "tuning.json").read_text()) == tuning


def test_dump_toml_reads_back_every_shipped_example() -> None:
    import tomllib

    from genrec.stack.config import dump_toml

    examples = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.toml"))
    assert examples
    for path in examples:
        cfg = tomllib.loads(path.read_text())
        assert tomllib.loads(dump_toml(cfg)) == cfg, path


def test_every_genrec_train_setting_is_a_config_key():
    import typer.main

    from genrec.cli import app as cli_app
    from genrec.stack.config import NOT_SEQ_KEYS, SEQ_KEYS

    train = typer.main.get_command(cli_app).commands["train"]
    flags = {p.name for p in train.params} - set(NOT_SEQ_KEYS)
    assert flags <= set(SEQ_KEYS), sorted(flags - set(SEQ_KEYS))


def test_a_log_with_its_own_column_names_trains_through_the_data_table(tmp_path) -> None:
    """[data] takes `genrec train`'s reading keys: a shop's CSV with its own column names, 3-core."""
    from genrec.data.io import ReadOptions
    from genrec.data.synthetic import generate_shop, shop_config
    from genrec.stack.config import READ_KEYS

    assert set(READ_KEYS) == set(ReadOptions.__dataclass_fields__) - {"max_future_skew_s"}
    shop = generate_shop(shop_config("tiny", seed=0))
    names = {"user_id": "customer", "item_id": "product", "timestamp": "ts", "event_type": "kind"}
    shop.events.rename(names).write_csv(tmp_path / "log.csv")
    shop.catalog.rename({"item_id": "product"}).write_csv(tmp_path / "catalog.csv")
    columns = ", ".join(f'{k} = "{v}"' for k, v in names.items())
    sasrec = "[[retrieval]]" + TINY.split("[[retrieval]]")[1]  # TINY's first retriever alone
    data = f'[data]\ndataset = "{tmp_path / "log.csv"}"\ncolumns = {{{columns}}}\nk_core = 3\nthreads = 1\n\n'
    config = write(tmp_path, data + sasrec)
    res = CliRunner().invoke(app, ["pipeline", "train", "--config", str(config), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "read log.csv:" in res.output and "3-core:" in res.output  # the read report, as `genrec train` prints it
    comp = Bundle.open(tmp_path / "b").component("sasrec")
    assert comp.config["train"]["read"] == {"columns": names, "k_core": 3}
