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
    assert files == {"analysis/agreement.parquet", "analysis/agreement.png"}
    assert "0.750" in result.output  # the console table's agreement


def test_unknown_kind_and_nothing_to_compare_are_one_line_errors(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    TrackingService(uri, "empty")
    result = runner.invoke(app, ["analyze", "nope", "--experiment", "empty", "--tracking-uri", uri])
    assert result.exit_code == 2 and "unknown analysis 'nope'; valid: agreement" in result.output
    result = runner.invoke(
        app, ["analyze", "agreement", "--experiment", "empty", "--tracking-uri", uri]
    )
    assert result.exit_code == 2 and "no task has final runs of two methods" in result.output
