"""The leaderboard on planted runs: ``T@n#k`` folds merge into one column (mean ± std over
fold means), and shift-set accuracies become their own columns (mean ± std over seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tuner.leaderboard.collect import collect
from tuner.leaderboard.notes import notes
from tuner.leaderboard.render import to_markdown
from tuner.leaderboard.summarise import summarise, wide_table
from tuner.tracking.artifacts import predictions_bytes
from tuner.tracking.client import TrackingService

N = 100
#: (task, method) -> per run (fold tasks: one run per seed): (test correct of N, noise shift acc)
PLANTED = {
    ("synth/objects@100#0", "lora"): [(60, None), (70, None)],
    ("synth/objects@100#1", "lora"): [(80, None), (90, None)],
    ("synth/objects@100#0", "full"): [(50, None), (50, None)],
    ("synth/objects@100#1", "full"): [(70, None), (70, None)],
    ("synth/count", "lora"): [(80, 0.4), (80, 0.5), (80, 0.6)],
    ("synth/count", "full"): [(90, 0.2), (90, 0.2), (90, 0.2)],
}


def _predictions(correct: int, num_classes: int = 4) -> bytes:
    labels = torch.arange(N) % num_classes
    preds = torch.where(torch.arange(N) < correct, labels, (labels + 1) % num_classes)
    return predictions_bytes(torch.nn.functional.one_hot(preds, num_classes).float(), labels)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('robust') / 'm.db'}"
    tracker = TrackingService(uri, "robust")
    for (task, method), runs in PLANTED.items():
        for seed, (correct, shift) in enumerate(runs):
            key = f"final/{task}/{method}/{seed}"
            tags = {"stage": "final", "task": task, "method": method, "seed": seed}
            tracker.start_run(key, key, tags)
            metrics = {"test/acc": correct / N}
            metrics.update({"shift/noise/acc": shift} if shift is not None else {})
            tracker.log_metrics(key, metrics, 1)
            tracker.log_artifact_bytes(key, "test_predictions.parquet", _predictions(correct))
            tracker.end_run(key)
    records = collect([tracker])
    summary = summarise(records)
    return records, summary, wide_table(summary, records.tune_hours)


def test_folds_merge_into_one_column_with_std_over_fold_means(board):
    records, summary, wide = board
    assert len(records.finals) == 14  # every run is read; only the summary merges folds
    rows = summary.set_index(["task", "method"])
    assert "synth/objects@100#0" not in summary["task"].values
    lora = rows.loc[("synth/objects@100", "lora")]
    # fold means 0.65 and 0.85 (each over its two seeds): mean 0.75, std over the two means
    assert lora["test_acc"] == pytest.approx(0.75)
    assert lora["test_acc_std"] == pytest.approx(np.std([0.65, 0.85], ddof=1))
    assert (lora["folds"], lora["seeds"]) == (2, 4)
    full = rows.loc[("synth/objects@100", "full")]
    assert full["test_acc"] == pytest.approx(0.6)
    assert full["test_acc_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    # ties pool every fold's per-example correctness: 300/400 vs 240/400 is no tie
    assert lora["best"] and not full["tied"]
    assert "synth/objects@100" in wide.columns and "synth/objects@100#1" not in wide.columns
    assert wide.set_index("method").loc["lora", "synth/objects@100"][0] == "75.0 ± 14.1"


def test_shift_accuracy_columns_mean_and_std_over_seeds(board):
    _, summary, wide = board
    rows = summary.set_index(["task", "method"])
    lora, full = rows.loc[("synth/count", "lora")], rows.loc[("synth/count", "full")]
    assert lora["shift/noise/acc"] == pytest.approx(0.5)
    assert lora["shift/noise/acc_std"] == pytest.approx(0.1)
    assert full["shift/noise/acc"] == pytest.approx(0.2) and full["shift/noise/acc_std"] == 0
    assert pd.isna(rows.loc[("synth/objects@100", "lora"), "shift/noise/acc"])
    # the wide table (markdown, HTML) has the column right after its task, not for others
    columns = list(wide.columns)
    assert columns[columns.index("synth/count") + 1] == "synth/count [shift noise]"
    assert not any("objects@100 [shift" in c for c in columns)
    cells = wide.set_index("method")["synth/count [shift noise]"]
    assert cells["lora"][0] == "50.0 ± 10.0" and cells["full"][0] == "20.0 ± 0.0"
    markdown = to_markdown(wide)
    assert "synth/count [shift noise]" in markdown and "| 50.0 ± 10.0 |" in markdown
    assert "shift set" in notes(summary)
