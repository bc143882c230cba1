"""``petl-sweep analyze agreement`` on planted final runs with known predictions."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tuner.cli import app
from tuner.tracking.artifacts import predictions_bytes
from tuner.tracking.client import TrackingService

runner = CliRunner()
N, K = 40, 4
LABELS = torch.arange(N) % K


def _logits(pred: torch.Tensor, confident: torch.Tensor) -> torch.Tensor:
    """One-hot-ish logits: a confident prediction gets a large margin."""
    margin = torch.where(confident, 8.0, 0.5)
    return torch.nn.functional.one_hot(pred, K).float() * margin[:, None]


def _plant(uri: str) -> dict[str, torch.Tensor]:
    wrong_a = torch.zeros(N, dtype=torch.bool)
    wrong_a[:10] = True  # a errs on 0-9
    wrong_b = torch.zeros(N, dtype=torch.bool)
    wrong_b[5:15] = True  # b errs on 5-14: 5 shared errors
    preds = {
        "lora": torch.where(wrong_a, (LABELS + 1) % K, LABELS),
        "bitfit": torch.where(wrong_b, (LABELS + 1) % K, LABELS),
    }
    tracker = TrackingService(uri, "agree")
    for method, pred in preds.items():
        key = f"final/{method}"
        tags = {"stage": "final", "task": "synth/count", "method": method, "seed": 0}
        tracker.start_run(key, key, tags)
        confident = torch.arange(N) >= 30  # both confident on the last 10 examples
        tracker.log_artifact_bytes(
            key, "test_predictions.parquet", predictions_bytes(_logits(pred, confident), LABELS)
        )
        tracker.log_metrics(key, {"test/acc": (pred == LABELS).float().mean().item()}, 0)
        tracker.end_run(key)
    return preds


def test_agreement_of_two_planted_methods(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    preds = _plant(uri)
    out = tmp_path / "analysis"
    result = runner.invoke(
        app,
        [
            "analyze",
            "agreement",
            "--experiment",
            "agree",
            "--tracking-uri",
            uri,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    (row,) = pd.read_parquet(out / "agreement.parquet").to_dict("records")
    # errors on 0-9 and 5-14, both map a wrong example to label+1: same class on 5-9
    same = (preds["lora"] == preds["bitfit"]).float().mean().item()
    assert row["agreement"] == pytest.approx(same) == pytest.approx(30 / 40)
    assert row["both_wrong"] == pytest.approx(5 / 40)
    assert row["only_one_wrong"] == pytest.approx(10 / 40)
    assert row["error_overlap"] == pytest.approx(5 / 15)
    assert row["confident_n"] == 10 and row["confident_agreement"] == 1.0
    assert (out / "agreement.png").stat().st_size > 0
    tracker = TrackingService(uri, "agree", create=False)
    (run,) = tracker.find({"analysis": "agreement"})
    files = {a.path for a in tracker.client.list_artifacts(run["run_id"], "analysis")}
    assert files == {
        "analysis/agreement.parquet",
        "analysis/agreement.summary.parquet",
        "analysis/agreement.png",
    }
    assert "0.750" in result.output  # the console table's agreement


def _analyze(*args: str):
    return runner.invoke(app, ["analyze", *args])


def test_the_leaderboard_page_shows_the_newest_analysis_as_a_section(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    _plant(uri)
    for _ in range(2):  # two agreement runs: the page shows one section
        done = _analyze("agreement", "--experiment", "agree", "--tracking-uri", uri,
                        "--out", str(tmp_path / "a"))  # fmt: skip
        assert done.exit_code == 0, done.output
    board = runner.invoke(app, ["leaderboard", "--experiment", "agree", "--tracking-uri", uri,
                                "--out", str(tmp_path / "lb")])  # fmt: skip
    assert board.exit_code == 0, board.output
    page = (tmp_path / "lb" / "leaderboard.html").read_text()
    assert page.count('<section id="analysis-agreement">') == 1
    assert "Prediction agreement" in page and "0.750" in page
    assert page.count("data:image/png") >= 3  # heatmap, pareto, the agreement heatmap


def test_bad_input_exits_2_and_logs_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    TrackingService(uri, "nothing")
    tracker = TrackingService(uri, "empty")
    # a final run without stored predictions
    tracker.start_run("f", "f", {"stage": "final", "task": "synth/count", "method": "lora"})
    tracker.end_run("f")
    common = ["--tracking-uri", uri, "--out", str(tmp_path / "a")]
    cases = {
        ("agreement", "--experiment", "nope"): "no MLflow experiment 'nope'",
        ("agreement", "--experiment", "empty"): "has no stored test_predictions.parquet",
        ("nosuch", "--experiment", "empty"): "unknown analysis 'nosuch'; valid: agreement",
        ("agreement", "--experiment", "nothing"): "no finished final runs in experiment(s) nothing",
    }
    for args, message in cases.items():
        result = _analyze(*args, *common)
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output
    assert tracker.find({"stage": "analysis"}, status=None) == []


def test_analyze_all_runs_what_the_records_allow_and_says_what_it_skipped(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    _plant(uri)
    result = _analyze("all", "--experiment", "agree", "--tracking-uri", uri,
                      "--out", str(tmp_path / "a"))  # fmt: skip
    assert result.exit_code == 0, result.output
    tracker = TrackingService(uri, "agree", create=False)
    kinds = {r["tags"]["analysis"] for r in tracker.find({"stage": "analysis"})}
    assert "agreement" in kinds
    from tuner.analysis.run import load_kinds

    for kind in set(load_kinds()) - kinds:  # every other kind: skipped, with its reason
        assert f"skipped {kind}:" in result.output
