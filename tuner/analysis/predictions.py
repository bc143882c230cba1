"""Every final run's test predictions, keyed like leaderboard rows and seed-matched."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tuner.analysis.run import AnalysisError
from tuner.leaderboard.collect import final_runs, row_key
from tuner.tracking.client import TrackingService


@dataclass(frozen=True)
class Predictions:
    """One final run's test predictions: class, its softmax confidence, the true label."""

    task: str
    backbone: str
    protocol: str
    method: str
    seed: int
    pred: np.ndarray
    confidence: np.ndarray
    label: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label


def final_predictions(trackers: list[TrackingService]) -> list[Predictions]:
    """Download and decode the test predictions of every finished final run.

    No final run, or one without stored predictions, is an ``AnalysisError``."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for tracker in trackers:
            try:
                runs = list(final_runs(tracker, Path(tmp)))
            except LookupError as err:
                raise AnalysisError(str(err.args[0])) from err
            for run, logits, labels in runs:
                probs = torch.softmax(logits, dim=1)
                conf, pred = probs.max(dim=1)
                backbone, protocol, method = row_key(run["tags"])
                out.append(
                    Predictions(
                        run["tags"]["task"],
                        backbone,
                        protocol,
                        method,
                        int(run["tags"].get("seed", 0)),
                        pred.numpy(),
                        conf.numpy(),
                        labels.numpy(),
                    )
                )
    if not out:
        names = ", ".join(t.experiment for t in trackers)
        raise AnalysisError(f"no finished final runs in experiment(s) {names}")
    return out
