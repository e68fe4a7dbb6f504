"""The command-line contract that scripts and CI jobs rely on: outputs, early checks, one-line errors,
progress in logs, piped tables."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from encoder_clean.cli import app
from encoder_clean.cli.progress import PlainProgress
from encoder_clean.data.formats import FORMATS
from encoder_clean.encoders import create_encoder
from encoder_clean.encoders.io import save_encoder
from tests.cli.test_cli import ARCH, assert_clean_error, run_cli

TINY = "builtin?train=64&test=20"
runner = CliRunner()


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


@pytest.fixture
def checkpoint(tmp_path) -> str:
    path = tmp_path / "encoder.safetensors"
    save_encoder(create_encoder(ARCH), path, produced_by="test")
    return str(path)


@pytest.fixture
def no_data(monkeypatch):
    """Any data read fails the test: the checks under test must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("data was read before the options were checked")

    refusing = {name: dataclasses.replace(fmt, loader=refuse) for name, fmt in FORMATS.items().items()}
    monkeypatch.setattr(FORMATS, "_items", refusing)


def commands(checkpoint: str, out: Path) -> dict[str, list[str]]:
    """Each command with an --out (where it has one), on tiny data."""
    return {
        "pretrain": ["pretrain", "--arch", ARCH, "--data", TINY, "--epochs", "1", "--out", str(out)],
        "poison": ["poison", checkpoint, "--data", TINY, "--epochs", "1", "--out", str(out)],
        "purify": ["purify", checkpoint, "--data", TINY, "--epochs", "1", "--out", str(out)],
        "distill": ["distill", checkpoint, "--data", TINY, "--epochs", "1", "--out", str(out)],
        "evaluate": ["evaluate", checkpoint, "--data", TINY],
        "scan": ["scan", checkpoint, "--data", TINY, "--shadow-images", "8"],
    }


# ------------------------------------------------------------------------------ output paths
def bad_json_paths(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    link = tmp_path / "to-fifo.json"
    link.symlink_to(fifo)
    paths = {"missing folder": tmp_path / "no" / "such" / "out.json", "folder": tmp_path, "fifo": fifo,
             "symlink to a fifo": link}
    if Path("/proc/self").is_dir():
        paths["/proc"] = Path("/proc/nope.json")  # root passes access() there; creating a file still fails
    return paths


@pytest.mark.parametrize("command", ["pretrain", "poison", "purify", "distill", "evaluate", "scan"])
def test_an_unwritable_json_is_refused_before_any_work_and_leaves_nothing(command, checkpoint, tmp_path, no_data):
    out = tmp_path / "out.safetensors"
    for what, bad in bad_json_paths(tmp_path).items():
        line = one_error_line(runner.invoke(app, [*commands(checkpoint, out)[command], "--json", str(bad)]))
        assert "--json" in line, what
        assert not out.exists() and not list(tmp_path.glob("*.resume.pt")), what
    assert stat.S_ISFIFO(os.stat(tmp_path / "fifo.json").st_mode)  # the special file is still what it was


def make_null_device(path: Path) -> Path:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


def test_a_device_node_is_refused_and_left_alone(checkpoint, tmp_path, no_data):
    out = tmp_path / "out.safetensors"
    device = make_null_device(tmp_path / "null.json")
    line = one_error_line(runner.invoke(app, [*commands(checkpoint, out)["purify"], "--json", str(device)]))
    assert "character device" in line and stat.S_ISCHR(os.stat(device).st_mode) and not out.exists()
    sarif = make_null_device(tmp_path / "null.sarif")
    line = one_error_line(runner.invoke(app, [*commands(checkpoint, out)["scan"], "--sarif", str(sarif)]))
    assert line.startswith(f"error: --sarif {sarif} is a character device") and stat.S_ISCHR(os.stat(sarif).st_mode)


def test_a_symlinked_output_is_written_through(checkpoint, tmp_path):
    target, link = tmp_path / "results" / "latest.json", tmp_path / "out.json"
    target.parent.mkdir()
    link.symlink_to(target)  # dangling: the write creates the target
    out_target, out_link = tmp_path / "real.safetensors", tmp_path / "link.safetensors"
    out_link.symlink_to(out_target)
    result = runner.invoke(app, ["pretrain", "--arch", ARCH, "--data", TINY, "--epochs", "0", "--out", str(out_link),
                                 "--json", str(link), "--quiet"])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and out_link.is_symlink()
    assert json.loads(target.read_text())["command"] == "pretrain"
    assert out_target.stat().st_size > 0


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_dash_and_dev_stdout_write_json_to_stdout(name, checkpoint):
    result = runner.invoke(app, ["evaluate", checkpoint, "--data", TINY, "--probe-epochs", "2", "--json", name])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["command"] == "evaluate"  # nothing but the JSON on stdout


def test_output_suffix_messages_name_the_flag_and_every_accepted_suffix(checkpoint, tmp_path, no_data):
    line = one_error_line(runner.invoke(app, ["scan", checkpoint, "--sarif", str(tmp_path / "out.txt")]))
    assert line.endswith("--sarif " + str(tmp_path / "out.txt") + ": must end in .sarif or .json")
    line = one_error_line(runner.invoke(app, ["scan", checkpoint, "--trigger-out", str(tmp_path / "t.jpg")]))
    assert "--trigger-out" in line and ".png" in line


# ------------------------------------------------------------------------------ options before data
@pytest.mark.parametrize("extra, flag", [
    (["--student", "nope"], "--student"),
    (["--loss", "nope"], "--loss"),
    (["--loss", "at@layer9"], "--loss"),
    (["--finetune", "nope"], "--finetune"),
    (["--finetune", "ft", "--finetune-option", "nope=1"], "--finetune"),
    (["--option", "nope=1"], "nope"),
])
def test_distill_names_are_checked_before_the_data(extra, flag, checkpoint, tmp_path, no_data):
    line = one_error_line(runner.invoke(app, [*commands(checkpoint, tmp_path / "o.safetensors")["distill"], *extra]))
    assert flag in line


@pytest.mark.parametrize("command, extra, flag", [
    ("evaluate", ["--trigger", "rainbow"], "--trigger"),
    ("evaluate", ["--target-class", "-1"], "--target-class"),
    ("evaluate", ["--probe-epochs", "0"], "--probe-epochs"),
    ("poison", ["--trigger", "rainbow"], "--trigger"),
    ("poison", ["--target-class", "-1"], "--target-class"),
    ("poison", ["--attack", "nope"], "--attack"),
    ("purify", ["--method", "nope"], "--method"),
    ("purify", ["--clean-fraction", "2"], "--clean-fraction"),
    ("purify", ["--option", "lr=0"], "lr=0"),
    ("poison", ["--option", "epochs=-1"], "epochs=-1"),
    ("poison", ["--reference-data", "nope:x"], "--reference-data nope:x"),
    ("distill", ["--option", "warmup_epochs=0"], "warmup_epochs=0"),
    ("distill", ["--loss", "nope"], "--loss"),
    ("pretrain", ["--method", "nope"], "--method nope"),
    ("pretrain", ["--augment", "nope"], "--augment nope"),
    ("scan", ["--method", "nope"], "--method nope"),
])
def test_options_are_checked_before_the_data(command, extra, flag, checkpoint, tmp_path, no_data):
    line = one_error_line(runner.invoke(app, [*commands(checkpoint, tmp_path / "o.safetensors")[command], *extra]))
    assert flag in line


def test_an_unknown_probe_names_only_its_own_flag(checkpoint):
    line = one_error_line(runner.invoke(app, ["evaluate", checkpoint, "--probe", "bogus"]))
    assert line.startswith("error: --probe bogus: unknown probe") and "--probe-epochs" not in line, line


def class_sorted_folder(root: Path, classes: int) -> Path:
    """A folder data set of `classes` classes whose images cannot be decoded: reading it fails loudly."""
    for split in ("train", "test"):
        for index in range(classes):
            folder = root / split / f"class{index}"
            folder.mkdir(parents=True)
            (folder / "0.png").write_bytes(b"not a png")
    return root


def labels_only_npz(root: Path, classes: int) -> Path:
    """npz arrays whose images are float (load_npz refuses them) and whose labels span `classes` classes."""
    import numpy as np

    root.mkdir()
    for split in ("train", "test"):
        np.savez(root / f"{split}.npz", x=np.zeros((classes, 4, 4, 3), np.float32), y=np.arange(classes))
    return root


@pytest.mark.parametrize("command", ["evaluate", "poison"])
@pytest.mark.parametrize("data", ["builtin", "folder", "npz"])
def test_a_target_class_the_data_lacks_is_caught_before_the_data_is_read(command, data, checkpoint, tmp_path):
    spec = {"builtin": TINY, "folder": f"folder:{class_sorted_folder(tmp_path / 'images', 3)}",
            "npz": f"npz:{labels_only_npz(tmp_path / 'arrays', 3)}"}[data]
    target = 10 if data == "builtin" else 3
    argv = [*commands(checkpoint, tmp_path / "o.safetensors")[command], "--target-class", str(target)]
    argv[argv.index("--data") + 1] = spec
    line = one_error_line(runner.invoke(app, argv))
    assert f"target class {target} is outside 0..{target - 1}" in line, line
    assert not (tmp_path / "o.safetensors").exists()


def test_a_missing_relative_trigger_file_suggests_the_builtin(checkpoint, tmp_path, monkeypatch, no_data):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(runner.invoke(app, ["evaluate", checkpoint, "--trigger",
                                              "sample_triggers/white_square_10x10_32px.png"]))
    assert "not found" in line and str(tmp_path) in line and "'white-square'" in line


def test_usage_errors_are_one_line_and_exit_2():
    for args in (["scan"], ["scan", "--nope"], ["pretrain", "--out", "x.safetensors", "--epochs", "many"],
                 ["nosuch"], ["list", "nothing"]):
        line = one_error_line(runner.invoke(app, args))
        assert "--help" in line, args
    assert_clean_error(run_cli("scan", "--nope"))  # and through a real process


# ------------------------------------------------------------------------------ logs and pipes
def test_a_run_in_a_log_prints_a_line_per_phase_and_quiet_prints_none(tmp_path):
    args = ["pretrain", "--arch", ARCH, "--data", TINY, "--epochs", "1", "--batch-size", "32"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a.safetensors")])  # stderr is not a terminal
    assert result.exit_code == 0, result.output
    phases = [line for line in result.stderr.splitlines() if ": started" in line or ": done" in line]
    assert any(line.endswith("started (2 steps)") for line in phases), result.stderr
    assert any(": done, 2 steps in " in line for line in phases), result.stderr
    quiet = runner.invoke(app, [*args, "--out", str(tmp_path / "b.safetensors"), "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_plain_progress_heartbeat_is_at_most_every_30_seconds_with_step_rate_and_eta():
    now = [0.0]
    stream = io.StringIO()
    progress = PlainProgress(stream, clock=lambda: now[0])
    with progress.task("distill", total=100) as advance:
        for _ in range(100):
            now[0] += 1.0  # one step a second: a heartbeat at steps 30, 60 and 90
            advance(1, loss=0.5)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "distill: started (100 steps)"
    assert lines[1:4] == [f"distill: step {n}/100, 1 steps/s, ETA {duration}, loss 0.5"
                          for n, duration in ((30, "1m10s"), (60, "40.0s"), (90, "10.0s"))]
    assert lines[4] == "distill: done, 100 steps in 1m40s" and len(lines) == 5


def test_plain_progress_keeps_beating_while_a_step_is_slow():
    stream = io.StringIO()
    with PlainProgress(stream, every=0.05).task("fine-tuning", total=5) as advance:
        time.sleep(0.5)  # no step in ten heartbeat periods: the watcher speaks
        advance(1)
    beats = [line for line in stream.getvalue().splitlines() if line.startswith("fine-tuning: step")]
    assert 2 <= len(beats) <= 12 and beats[0].startswith("fine-tuning: step 0/5, 0 steps/s"), stream.getvalue()


def test_piped_tables_keep_long_paths_whole(tmp_path):
    path = tmp_path / ("a-rather-long-checkpoint-name-that-a-table-would-fold-at-eighty-columns-" * 2 + ".safetensors")
    save_encoder(create_encoder(ARCH), path, produced_by="test")
    result = runner.invoke(app, ["evaluate", str(path), "--data", TINY, "--probe-epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout
    listing = runner.invoke(app, ["list", "scans"])
    assert listing.exit_code == 0 and "similarity_target=" in listing.stdout and "…" not in listing.stdout


def test_demo_checks_its_outputs_before_any_work(tmp_path, no_data):
    folder = tmp_path / "demo"
    bad_json = str(tmp_path / "no" / "x.json")
    line = one_error_line(runner.invoke(app, ["demo", "--out-dir", str(folder), "--json", bad_json]))
    assert "--json" in line and not folder.exists()
    folder.mkdir()
    os.mkfifo(folder / "poisoned.safetensors")
    line = one_error_line(runner.invoke(app, ["demo", "--out-dir", str(folder)]))
    assert "--out-dir" in line and "FIFO" in line
    assert [p.name for p in folder.iterdir()] == ["poisoned.safetensors"]
    (folder / "poisoned.safetensors").unlink()
    (folder / "report").write_text("a file where the report folder goes")
    assert "is not a folder" in one_error_line(runner.invoke(app, ["demo", "--out-dir", str(folder)]))
    (folder / "report").unlink()
    (folder / "report").mkdir()
    os.mkfifo(folder / "report" / "summary.md")
    assert "FIFO" in one_error_line(runner.invoke(app, ["demo", "--out-dir", str(folder)]))


def test_error_lines_keep_brackets_in_paths(checkpoint, tmp_path, no_data):
    bad = tmp_path / "run[bold]" / "x[1].json"  # rich markup must not eat [bold] or [1]
    line = one_error_line(runner.invoke(app, ["evaluate", checkpoint, "--json", str(bad)]))
    assert str(bad) in line
