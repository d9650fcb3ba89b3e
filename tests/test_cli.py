"""The recursive-opt command: demo, sweep, and one-line errors with exit code 2."""

import importlib.metadata
import os
import shutil
import subprocess
import sys

import pytest

import recursive_opt as ro
from recursive_opt._cli import main


def test_demo_writes_table_and_plot(tmp_path, capsys):
    argv = ["demo", "--steps", "120", "--lrs", "1e-5", "1", "--depth", "2"]
    assert main(argv + ["--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    rows = [
        line for line in out.splitlines() if line.startswith("| ") and "Adam" in line
    ]
    assert [r.split("|")[1].strip() for r in rows] == [
        "Adam(1e-05)",
        "Stack[2](Adam(1e-05))",
        "Adam(1)",
        "Stack[2](Adam(1))",
    ]
    # Plain Adam reports one lr, the tower two; the tower's level-1 lr moved
    # (120 steps: past the warm-up, during which a start at lr 1 falls little).
    lrs = {r.split("|")[1].strip(): r.split("|")[4].split(",") for r in rows}
    assert lrs["Adam(1e-05)"] == [" 1.00e-05 "]
    assert len(lrs["Stack[2](Adam(1e-05))"]) == 2
    assert float(lrs["Stack[2](Adam(1e-05))"][0]) > 1e-5 * 1.5
    assert float(lrs["Stack[2](Adam(1))"][0]) < 1 / 1.5
    png = tmp_path / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_sweep_writes_table_and_plot(tmp_path, capsys):
    args = [
        "sweep",
        "--heights",
        "1",
        "2",
        "--num",
        "3",
        "--steps",
        "20",
        "--lr-min",
        "1e-2",
        "--lr-max",
        "4",  # above the default tower's ceiling of 1: it is built at 4
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(args) == 0
    table = (tmp_path / "sweep.md").read_text()
    assert table.splitlines()[0] == "| initial lr | Stack[1](Adam) | Stack[2](Adam) |"
    assert "| 1.00e-02 |" in table and "spread (max - min)" in table
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, match",
    [
        (["demo", "--steps", "0"], "--steps: must be at least 1, got 0"),
        (["demo", "--steps", "ten"], "--steps: 'ten' is not an integer"),
        (["demo", "--lrs", "1e-3", "-1"], "--lrs: must be a positive number"),
        (["demo", "--colour"], "unrecognized arguments: --colour"),
        (["train"], "invalid choice: 'train'"),
        ([], "the following arguments are required"),
        (["sweep", "--lr-min", "1", "--lr-max", "0.1"], "--lr-min (1.0) must be below"),
        (["sweep", "--tie"], "--tie needs heights of at least 2"),
        (["sweep", "--optimiser", "lion"], "invalid choice: 'lion'"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(argv, match, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)] if argv else argv) == 2
    *usage, error = capsys.readouterr().err.strip().splitlines()
    assert usage[0].startswith("usage: recursive-opt")
    assert error.startswith("recursive-opt: error: ") and match in error


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["demo", "--out", str(blocker / "sub")]) == 2
    *_, error = capsys.readouterr().err.strip().splitlines()
    assert error.startswith("recursive-opt: error: cannot write to --out")


def test_console_script_is_installed():
    try:  # a checkout on PYTHONPATH (e.g. a machine with no package registry)
        importlib.metadata.distribution("recursive_opt")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("recursive_opt is imported from a checkout, not installed")
    exe = shutil.which("recursive-opt") or os.path.join(
        os.path.dirname(sys.executable), "recursive-opt"
    )
    out = subprocess.run(
        [exe, "demo", "--steps", "-3"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("usage: recursive-opt demo")
    assert (
        lines[-1]
        == "recursive-opt: error: argument --steps: must be at least 1, got -3"
    )
    out = subprocess.run(
        [exe, "--version"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"recursive-opt {ro.__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "recursive_opt", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "{demo,sweep}" in out.stdout


def test_help_shows_every_default(capsys):
    for command in ("demo", "sweep"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        options = [line for line in out.splitlines() if line.startswith("  --")]
        assert len(options) >= 4 and out.count("(default: ") == len(options), out


def test_namespace_exports_no_modules():
    # `from recursive_opt import *` takes every public name: none is a module.
    import types

    leaked = [
        n
        for n in dir(ro)
        if not n.startswith("_") and isinstance(getattr(ro, n), types.ModuleType)
    ]
    assert leaked == []
    assert ro.__version__
