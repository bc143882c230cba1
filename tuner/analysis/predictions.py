"""Every final run's test predictions, keyed like leaderboard rows and seed-matched."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
    """Download and decode the test predictions of every finished final run."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for tracker in trackers:
            for run, logits, labels in final_runs(tracker, Path(tmp)):
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
    return out
