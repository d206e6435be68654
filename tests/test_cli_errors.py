"""User errors through the command line: one line naming the file and the way out, never a traceback."""

import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from genrec.cli import LAZY_COMMANDS, app

runner = CliRunner()
TRAIN = ["train", "--model", "sasrec", "--dataset", "synthetic:tiny", "--epochs", "1", "--max-len", "20",
         "--dim", "16", "--threads", "1"]  # fmt: skip


def one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "Aborted" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    # progress lines (what is being trained) may come first; the error is one line, and the last
    assert len(errors) == 1 and lines[-1] == errors[0], res.output
    for n in needles:
        assert n in errors[0], res.output


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("errors") / "run"
    res = runner.invoke(app, [*TRAIN, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_broken_last_pt_names_the_file_and_suggests_restart(run, tmp_path, damage) -> None:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    last = out / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 64}[damage])
    res = runner.invoke(app, [*TRAIN, "--out", str(out)])
    one_line_error(res, str(last), "--restart")
    assert runner.invoke(app, [*TRAIN, "--out", str(out), "--restart"]).exit_code == 0  # the way out works


def test_broken_or_missing_weights_are_one_line_for_every_command(run, tmp_path) -> None:
    from genrec.bundle import Bundle

    out = tmp_path / "run"
    shutil.copytree(run, out)
    weights = Bundle.open(out).component(role="retrieval").path / "model.pt"
    weights.write_bytes(b"")
    for args in (["evaluate", str(out)], ["recommend", str(out), "--user", "u1"],
                 ["recommend", str(out), "--all-users", "--out", str(tmp_path / "r.csv")]):  # fmt: skip
        one_line_error(runner.invoke(app, args), str(weights))
    weights.unlink()
    one_line_error(runner.invoke(app, ["evaluate", str(out)]), "model.pt")


def test_a_missing_data_file_is_file_not_found(tmp_path) -> None:
    missing = tmp_path / "events.csv"
    one_line_error(runner.invoke(app, [*TRAIN[:3], "--dataset", str(missing), "--out", str(tmp_path / "r")]),
                   f"file not found: {missing}")  # fmt: skip


def test_help_lists_lazy_commands_with_their_own_help() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name, (*_, short_help) in LAZY_COMMANDS.items():
        assert name in res.output
        # the listing's text is the command's own first help line: the two cannot drift apart
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0, sub.output
        assert " ".join(short_help.split()) in " ".join(sub.output.replace("│", " ").split()), (name, sub.output)


def test_version() -> None:
    import genrec

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"genrec {genrec.__version__}"


def test_without_torchrec_sequential_models_work_and_torchrec_features_say_how_to_install(tmp_path) -> None:
    # a process where the TorchRec stack cannot be imported, as after a plain `pip install .`
    script = f"""
import sys
sys.modules.update(dict.fromkeys(["torchrec", "fbgemm_gpu", "tensordict", "torchmetrics"]))
from typer.testing import CliRunner
from genrec.cli import app
r = CliRunner()
out = {str(tmp_path / "run")!r}
res = r.invoke(app, {TRAIN!r} + ["--out", out, "--item-attributes"])
assert res.exit_code == 0, res.output
res = r.invoke(app, ["recommend", out, "--all-users", "--out", out + "/recs.parquet"])
assert res.exit_code == 0, res.output
res = r.invoke(app, ["train", "--model", "two-tower", "--dataset", "synthetic:tiny", "--out", out + "2"])
print(res.exit_code, res.output)
assert "torchrec" not in sys.modules or sys.modules["torchrec"] is None
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    code, _, output = proc.stdout.partition(" ")
    assert code == "2" and output.strip().count("\n") == 0, proc.stdout
    assert "TorchRec" in output and "pip install --no-deps torchrec==1.8.0" in output and "scripts/setup.sh" in output
