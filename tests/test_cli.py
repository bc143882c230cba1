"""The command line: clear errors (exit 2) and the data command writing the VTAB layout."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tuner.cli import app

runner = CliRunner()


def test_run_with_a_bad_config_names_field_and_valid_values(tmp_path: Path):
    config = tmp_path / "sweep.yaml"
    config.write_text("name: x\ntasks: [synth/count]\nmethods: [lorra]\n")
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert "methods" in result.output and "'lorra'" in result.output and "lora" in result.output


def test_run_rejects_a_wrong_type_override(tmp_path: Path):
    result = runner.invoke(app, ["run", "--set", "tune.max_epochs=lots"])
    assert result.exit_code == 2 and "tune.max_epochs" in result.output


def test_run_with_a_missing_config_file(tmp_path: Path):
    result = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such sweep config" in result.output


def test_data_synth_writes_the_vtab_layout(tmp_path: Path):
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--task", "count"])
    assert result.exit_code == 0, result.output
    task = tmp_path / "count"
    for split, lines in (("train800", 800), ("val200", 200), ("train800val200", 1000)):
        assert len((task / f"{split}.txt").read_text().splitlines()) == lines
    first = (task / "test.txt").read_text().splitlines()[0].rsplit(" ", 1)
    assert (task / first[0]).exists() and first[1].isdigit()
    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--task", "nope"])
    assert bad.exit_code == 2 and "count" in bad.output


def test_ui_errors_are_one_line_and_exit_2(tmp_path: Path):
    import socket

    from tuner.tracking.client import TrackingService

    out = tmp_path / "results"
    missing = runner.invoke(app, ["ui", "--set", f"out_dir={out}", "--experiment", "nope"])
    assert missing.exit_code == 2 and "no MLflow experiment 'nope'" in missing.output
    store = TrackingService(f"sqlite:///{out.resolve() / 'mlflow.db'}", "quickstart")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        taken = runner.invoke(app, ["ui", "--set", f"out_dir={out}", "--port", str(port)])
    assert taken.exit_code == 2 and f"port {port}" in taken.output and "in use" in taken.output
    tags = store.client.get_experiment(store.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_ui_urls_point_at_the_runs_table_in_the_model_training_view():
    from tuner.tracking.ui import is_server, runs_url

    assert is_server("https://mlflow.example:5000") and not is_server("sqlite:///x.db")
    assert (
        runs_url("http://127.0.0.1:5000/", "7")
        == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )


def test_an_error_naming_a_long_path_stays_on_one_line(tmp_path: Path):
    """Rich wraps at the terminal's width (80 here): an error must not break its path."""
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "sweep.yaml"
    result = runner.invoke(app, ["run", str(deep)])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and str(deep) in line, result.output
