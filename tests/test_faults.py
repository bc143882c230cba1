"""Faults lose nothing and hide nothing: a failing study, a crash's leftovers, bad input.

One mini sweep runs for the module (1 task × linear + spt_lora) after two faults are
planted: SPT's cached sensitivity file is corrupt, so the spt_lora study raises before any
trial; and a crashed earlier run left RUNNING runs (study, trial, final) of the linear study.
The sweep must go on with linear, end the broken study FAILED with its error, end the
leftovers KILLED as lost, count their hours apart, and exit 1 naming the failure.
"""

from __future__ import annotations

import pytest
import ray
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config import parse_config
from tuner.sweep.specs import trial_spec
from tuner.tracking.client import TrackingService
from tuner.training.trainer import Trainer

TASK = "synth/count"
runner = CliRunner()


def _config(root) -> dict:
    return {
        "name": "faults",
        "tasks": [TASK],
        "methods": ["linear", "spt_lora"],
        "data_root": str(root / "data"),
        "out_dir": str(root / "results"),
        "tune": {"num_samples": 2, "max_epochs": 2, "grace_period": 1},
        "final": {"seeds": 1},
        "ray": {"num_cpus": 2},
    }


def _plant_crash_leftovers(cfg) -> dict[str, str]:
    """What a driver killed mid-sweep leaves: RUNNING study, trial and final runs."""
    tracker = TrackingService(cfg.tracking_uri, cfg.experiment)
    study = f"{TASK}:linear"
    base = {"task": TASK, "method": "linear", "study": study, "sweep": cfg.name}
    ids = {"study": tracker.start_run("s", study, {**base, "stage": "tune", "study_hash": "old"})}
    ids["trial"] = tracker.start_run("t", "trial_x", {**base, "stage": "tune"}, parent="s")
    tracker.log_metrics("t", {"device_hours": 0.25}, 0)
    tracker.end_run("t")  # a trial that finished before the crash: its hours are lost work
    ids["running_trial"] = tracker.start_run("r", "trial_y", {**base, "stage": "tune"}, parent="s")
    ids["final"] = tracker.start_run("f", "final x", {**base, "stage": "final"})
    return ids


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    (root / "sweep.yaml").write_text(__import__("yaml").safe_dump(_config(root)))
    cfg = parse_config(_config(root))
    spec = trial_spec(cfg, TASK, "spt_lora", {}, "tune", cfg.seed)
    path = Trainer(spec).prepared.path  # the study's sensitivity cache entry, computed
    with open(path, "r+b") as f:
        f.truncate(100)  # ...and corrupted on disk
    leftovers = _plant_crash_leftovers(cfg)
    result = runner.invoke(app, ["run", str(root / "sweep.yaml"), "--no-progress"])
    ray.shutdown()
    tracker = TrackingService(cfg.tracking_uri, cfg.experiment, create=False)
    return cfg, result, leftovers, tracker


def test_a_failing_study_ends_failed_and_the_others_go_on(faulty):
    cfg, result, _, tracker = faulty
    assert result.exit_code == 1, result.output
    assert f"{TASK}:spt_lora:" in result.output and "1 failed" in result.output
    (failed,) = tracker.find({"study": f"{TASK}:spt_lora", "stage": "tune"}, status="FAILED")
    assert "Error" in failed["tags"]["error"]
    files = [a.path for a in tracker.client.list_artifacts(failed["run_id"])]
    assert "error.txt" in files
    finals = tracker.find({"stage": "final"})
    assert [r["tags"]["method"] for r in finals] == ["linear"]
    assert "| linear |" in (cfg.leaderboard_dir / "leaderboard.md").read_text()


def test_no_run_is_left_running_and_crash_leftovers_are_lost(faulty):
    cfg, _, leftovers, tracker = faulty
    assert tracker.find({}, status="RUNNING") == []
    for name in ("study", "running_trial", "final"):
        run = tracker.client.get_run(leftovers[name])
        assert run.info.status == "KILLED" and run.data.tags["outcome"] == "lost", name
    text = (cfg.leaderboard_dir / "leaderboard.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    linear = next(line for line in text.splitlines() if line.startswith("| linear"))
    cells = dict(zip(header.split("|"), linear.split("|"), strict=True))
    assert cells[" lost device-h "].strip() == "0.250"  # the crashed study's finished trial
    assert float(cells[" tune device-h "]) < 0.25  # not counted as useful tuning


def test_every_bad_task_is_named_before_the_sweep_in_one_message(tmp_path):
    bad = tmp_path / "vtab1k"
    for name in ("svhn", "eurosat"):
        (bad / name).mkdir(parents=True)
        (bad / name / "train800.txt").write_text("missing.png 0\n")
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"name: bad\ntasks: [vtab1k/svhn, vtab1k/eurosat]\nmethods: [linear]\n"
        f"data_root: {tmp_path}\nout_dir: {tmp_path / 'out'}\n"
    )
    result = runner.invoke(app, ["run", str(config), "--no-progress"])
    assert result.exit_code == 1
    assert "2 of 2 tasks" in result.output and "vtab1k/svhn" in result.output
    assert "vtab1k/eurosat" in result.output and "Traceback" not in result.output


def test_every_bad_image_and_label_is_named_before_any_trial(tmp_path):
    """Loading stops at the first bad file; the message still lists them all, file:line."""
    from tuner.data import ensure_synth

    ensure_synth(tmp_path, tasks=["count"])
    task = tmp_path / "synth" / "count"
    lines = (task / "train800.txt").read_text().splitlines()
    first, second = (task / line.split()[0] for line in lines[:2])
    first.unlink()  # missing
    second.write_bytes(second.read_bytes()[:20])  # truncated
    lines[2] = lines[2].split()[0] + " 999"  # out of range
    (task / "train800.txt").write_text("\n".join(lines) + "\n")
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"name: bad\ntasks: [synth/count]\nmethods: [linear]\n"
        f"data_root: {tmp_path}\nout_dir: {tmp_path / 'out'}\n"
    )
    result = runner.invoke(app, ["run", str(config), "--no-progress"], terminal_width=400)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    flat = result.output.replace("\n", "")  # the console wraps long paths
    assert "3 problem(s)" in flat, result.output
    for n, what in ((1, "is missing"), (2, "cannot be decoded"), (3, "label 999 is out of range")):
        assert f"train800.txt:{n}" in flat and what in flat, (n, what, flat)
    assert not (tmp_path / "out" / "bad" / "ray_results").exists()


def test_weights_that_do_not_fit_fail_before_any_trial(tmp_path):
    from safetensors.torch import save_file
    from torch import zeros

    weights = tmp_path / "other.safetensors"
    save_file({"encoder.weight": zeros(3, 3)}, str(weights))
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"name: w\ntasks: [synth/count]\nmethods: [linear]\nbackbone_weights: {weights}\n"
        f"data_root: {tmp_path / 'data'}\nout_dir: {tmp_path / 'out'}\n"
    )
    result = runner.invoke(app, ["run", str(config), "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(weights.name) in result.output and "encoder.weight" in result.output
    assert not (tmp_path / "out" / "ray_results").exists()  # no trial was started
