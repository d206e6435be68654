import json
import shlex
from pathlib import Path

from benchmarks import sequential
from genrec.training.trainer import FITS


def test_every_sequential_record_says_what_it_was_fitted_on() -> None:
    records = json.loads((sequential.RESULTS / "sequential.json").read_text())
    assert records
    for r in records:
        assert r["fit"] in FITS, r["model"]
        refit = "--refit-from" in r["command"]
        assert r["fit"] == ("train+valid" if refit else "train"), r["model"]
        assert not sequential.is_auto(r["model"]) or "chosen" in r
    # every hand-set row's command is the one its SETTINGS entry gives (the old Beauty rows carry what used to
    # be a dataset preset as flags; the automatic rows choose their own settings)
    hand = [
        r for r in records if r["command"].startswith("genrec train --model") and not sequential.is_auto(r["model"])
    ]
    assert hand
    for r in hand:
        want = sequential.train_command(r["dataset"], r["model"], Path("runs/bench") / f"{r['dataset']}-{r['model']}")
        assert _flags(r["command"]) == _flags(shlex.join(want)), r["model"]
    old_beauty = [r for r in hand if r["dataset"] == "amazon-beauty" and r["model"] in ("sasrec", "hstu", "hstu-large")]
    assert old_beauty and all("--max-len 50 --dropout 0.5 --dim 64" in r["command"] for r in old_beauty)


def _flags(command: str) -> tuple[list[str], dict[str, str | None]]:
    """(the words before the first flag, {flag: value}): a command's settings whatever their order."""
    words = shlex.split(command)
    first = next((i for i, w in enumerate(words) if w.startswith("--")), len(words))
    flags: dict[str, str | None] = {}
    i = first
    while i < len(words):
        has_value = i + 1 < len(words) and not words[i + 1].startswith("--")
        flags[words[i]] = words[i + 1] if has_value else None
        i += 2 if has_value else 1
    return words[:first], flags


def _run(folder: Path, fit: str | None, tuning: dict | None = None) -> None:
    folder.mkdir(parents=True)
    metrics = {"metrics": {"NDCG@10": 0.1}, "best_epoch": 2, "epochs": 3, "train_seconds": 9.0, "best_valid": {}}
    if fit:
        metrics["fit"] = fit
    (folder / "metrics.json").write_text(json.dumps(metrics))
    hist = [{"epoch": e, "elapsed": 3.0 * e, "seq_per_s": 100.0, "valid": {"NDCG@10": 0.1}} for e in (1, 2, 3)]
    (folder / "history.json").write_text(json.dumps(hist))
    if tuning:
        (folder / "tuning.json").write_text(json.dumps(tuning))


def test_new_records_carry_fit_and_auto_records_their_chosen_setting(tmp_path) -> None:
    _run(tmp_path / "ml-1m-hstu", "train")
    _run(tmp_path / "ml-1m-hstu-large-refit", None)  # a folder from before metrics.json had `fit`
    params = {"family": "hstu", "dim": 64, "max_len": 200}
    _run(tmp_path / "ml-1m-auto", "train", {"chosen": {"params": params, "setting": "hstu d64"}, "wall_s": 3590.0})
    rec = sequential.run_model("ml-1m", "hstu", tmp_path, collect_only=True)
    assert rec["fit"] == "train" and rec["model"] == "hstu"
    refit = sequential.run_model("ml-1m", "hstu-large-refit", tmp_path, collect_only=True)
    assert refit["fit"] == "train+valid" and "--refit-from" in refit["command"]
    auto = sequential.run_model("ml-1m", "auto", tmp_path, collect_only=True)
    assert auto["model"] == "auto" and auto["fit"] == "train" and auto["chosen"]["dim"] == 64
    assert (
        auto["command"].startswith("genrec train --model auto --dataset ml-1m")
        and "--time-budget 60" in auto["command"]
    )


def test_an_ensemble_record_names_its_members_and_the_command_that_chose_them(tmp_path) -> None:
    folder = tmp_path / "ml-1m-ensemble"
    _run(folder, "train")
    (folder / "history.json").unlink()  # an ensemble trains nothing itself
    members = [{"run": "runs/bench/ml-1m-hstu-large-d96-ema-t075-b80", "weight": 0.75},
               {"run": "runs/bench/ml-1m-auto-60-single", "weight": 0.25}]  # fmt: skip
    ens = {"members": members, "steps": [{"members": {"a": 1}, "NDCG@10": 0.2}], "candidates": {"a": 0.2}}
    manifest = {"components": {"ensemble": {"config": {"ensemble": ens}}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rec = sequential.run_model("ml-1m", "ensemble", tmp_path, collect_only=True)
    assert rec["fit"] == "train" and rec["ensemble"]["members"] == members and rec["seq_per_s"] is None
    words = shlex.split(rec["command"])
    assert words[:2] == ["genrec", "ensemble"] and words[-4:] == ["--out", str(folder), "--threads", "2"]
    assert words[2:-4] == [str(tmp_path / f"ml-1m-{m}") for m in sequential.ENSEMBLES["ml-1m"]["ensemble"]]


def test_old_records_are_migrated() -> None:
    old = {"dataset": "amazon-beauty", "model": "sasrec", "command": "genrec train --model sasrec --dataset "
           "amazon-beauty --out runs/bench/amazon-beauty-sasrec --loss full"}  # fmt: skip
    new = sequential.migrate(dict(old), Path("runs/bench"))
    assert new["fit"] == "train" and "--max-len 50 --dropout 0.5 --dim 64" in new["command"]
    refit = sequential.migrate({"dataset": "ml-1m", "model": "hstu-large-refit", "command": "x"}, Path("runs/bench"))
    assert refit["fit"] == "train+valid" and refit["command"] == "x"


def test_equal_epoch_sections_of_runs_elsewhere_are_kept(tmp_path) -> None:
    kept = "# t\n\n## ml-1m: validation NDCG@10 of the HSTU-large runs at equal epochs\n\n| run |\n| old | x |\n"
    assert "| old | x |" in sequential.curves("ml-1m", tmp_path, kept)  # no folders here: as it was
    _run(tmp_path / "ml-1m-hstu", "train")
    lines = sequential.curves("ml-1m", tmp_path, kept)
    assert "| old | x |" in lines and "## ml-1m: validation NDCG@10 of the HSTU runs at equal epochs" in lines


def test_a_section_keeps_the_rows_of_runs_whose_folders_are_elsewhere(tmp_path) -> None:
    head = "## ml-1m: validation NDCG@10 of the HSTU runs at equal epochs"
    kept = f"# t\n\n{head}\n\n| run | ep 10 | epochs run | best |\n|---|---|---|---|\n| hstu-large | 0.1482 | 12 | 0.1500 |\n"
    _run(tmp_path / "ml-1m-hstu", "train")  # a folder here for another run of the same section
    lines = sequential.curves("ml-1m", tmp_path, kept)
    assert "| hstu-large | 0.1482 | 12 | 0.1500 |" in lines  # its row as it was
    assert "| hstu |  | 3 | 0.1000 |" in lines  # the present run from its history (3 epochs, none at 10)
    assert sum(line.startswith(head) for line in lines) == 1
