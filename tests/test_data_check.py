"""``petl-sweep data check``: a clean root passes, a broken one lists every problem, exit 1."""

from __future__ import annotations

import json

import pytest
from _data_helpers import fgvc_task, png, vtab_task
from rich.console import Console
from typer.testing import CliRunner

import tuner.cli as cli
from tuner.data.check import check_root

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Wide enough that table cells do not wrap the messages asserted on."""
    monkeypatch.setattr(cli, "console", Console(width=400, color_system=None))


@pytest.fixture
def good_root(tmp_path):
    vtab_task(tmp_path / "vtab1k" / "svhn", num_classes=10, sizes=(20, 10, 10))
    vtab_task(tmp_path / "eurosat", num_classes=10, sizes=(10, 10, 10))  # VTAB at ROOT/<task>
    vtab_task(tmp_path / "synth" / "cells", num_classes=2, sizes=(4, 2, 2))
    fgvc_task(tmp_path / "fgvc" / "stanford_dogs", "Images", num_classes=3)
    return tmp_path


def test_good_root_passes_with_a_table_per_task(good_root):
    result = runner.invoke(cli.app, ["data", "check", str(good_root)])
    assert result.exit_code == 0, result.output
    for task in ("vtab1k/svhn", "vtab1k/eurosat", "synth/cells", "fgvc/stanford_dogs"):
        assert task in result.output
    assert "4 task(s): 0 error(s)" in result.output
    # fewer classes than the registry is a warning, not an error
    assert "only 3 of the registry's 120 classes have examples" in result.output
    reports = {r.task: r for r in check_root(good_root)}
    svhn = reports["vtab1k/svhn"]
    assert svhn.images == 40 and svhn.classes_seen == 10
    assert svhn.splits == {"train800": 20, "val200": 10, "train800val200": 30, "test": 10}
    assert reports["fgvc/stanford_dogs"].splits == {"train": 9, "val": 3, "test": 6}


def test_task_option_checks_one_task(good_root):
    result = runner.invoke(cli.app, ["data", "check", str(good_root), "--task", "cells"])
    assert result.exit_code == 0 and "synth/cells" in result.output
    assert "vtab1k/svhn" not in result.output


def test_bad_root_reports_every_problem_and_exits_1(good_root):
    svhn = good_root / "vtab1k" / "svhn"
    (svhn / "images/train800_003.png").unlink()
    (svhn / "images/test_002.png").write_bytes(b"not an image")
    (svhn / "val200.txt").write_text("images/val200_000.png 10\nimages/val200_001.png x\n")
    (good_root / "eurosat" / "test.txt").unlink()
    (good_root / "synth" / "cells" / "val200.txt").write_text("")
    dogs = good_root / "fgvc" / "stanford_dogs"
    (dogs / "val.json").write_text(json.dumps({"a.jpg": "1", "b.jpg": 2.0}))
    png(dogs / "Images" / "b.jpg")
    (dogs / "test.json").write_text("[]")
    result = runner.invoke(cli.app, ["data", "check", str(good_root)])
    out = result.output
    assert result.exit_code == 1, out
    expected = [
        "train800.txt:4: image",  # missing image (first mention: train800, line 4)
        "train800_003.png is missing",
        "test.txt:3: image",
        "test_002.png cannot be decoded",
        "val200.txt:1: label 10 is out of range, expected [0, 10) (the registry says "
        "vtab1k/svhn has 10 classes)",
        "val200.txt:2: label 'x' is not an integer",
        "eurosat/test.txt is missing",
        "cells/val200.txt is empty",
        "val.json: label '1' of 'a.jpg' is not an integer",
        "val.json: label 2.0 of 'b.jpg' is not an integer",
        "test.json: expected a JSON object image path -> integer label, got a list",
    ]
    for text in expected:
        assert text in out, text
    assert "error(s)" in out and "0 error(s)" not in out


def test_missing_root_and_missing_task_folder_fail(tmp_path):
    result = runner.invoke(cli.app, ["data", "check", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(cli.app, ["data", "check", str(tmp_path), "--task", "vtab1k/dtd"])
    assert result.exit_code == 1 and "vtab1k/dtd does not exist" in result.output


def test_every_root_data_check_accepts_a_sweep_reads(good_root):
    """One layout rule: VTAB tasks at ROOT/vtab1k/<task>, at ROOT/<task> (as shipped by the
    community) and a root that *is* the vtab1k folder are all found by sweeps too."""
    from tuner.data import load_task
    from tuner.data.tasks import task_dir

    accepted = {r.task: r for r in check_root(good_root)}
    assert not accepted["vtab1k/eurosat"].errors
    assert task_dir("vtab1k/eurosat", good_root) == good_root / "eurosat"
    assert len(load_task("vtab1k/eurosat", good_root, 16).test[1]) == 10
    suite_root = good_root / "vtab1k"  # the user points data_root at the suite folder
    assert not check_root(suite_root, ["svhn"])[0].errors
    assert task_dir("vtab1k/svhn", suite_root) == suite_root / "svhn"
    assert len(load_task("vtab1k/svhn", suite_root, 16).train[1]) == 20
