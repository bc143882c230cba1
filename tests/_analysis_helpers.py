"""Planting final runs that analyses can rebuild: a user image-folder task, ``config.json``
and ``trainable.safetensors`` (shared by the domain-gap and attribution tests)."""

from __future__ import annotations

from pathlib import Path

import torch
from _data_helpers import image_folder

from tuner.tracking.artifacts import predictions_bytes, trainable_bytes
from tuner.tracking.client import TrackingService
from tuner.training.spec import TrialSpec


def folder_task(tmp_path: Path) -> str:
    """A 2-class image-folder task of 32-pixel images (4 train, 2 val, 2 test per class)."""
    root = image_folder(tmp_path / "pets", sizes=(4, 2, 2), size=32)
    return f"folder:{root}"


def plant_final(
    tracker: TrackingService,
    task: str,
    method: str,
    state: dict[str, torch.Tensor],
    data_root: Path,
    seed: int = 0,
    test_acc: float = 0.5,
) -> str:
    """A finished final run with the artifacts a real one has (predictions are dummies)."""
    key = f"final/{task}/{method}/{seed}"
    tags = {"stage": "final", "task": task, "method": method, "seed": seed,
            "backbone": "vit_petl_tiny_patch8_32"}  # fmt: skip
    run_id = tracker.start_run(key, key, tags)
    spec = TrialSpec(task=task, method=method, stage="final", data_root=str(data_root), seed=seed)
    tracker.log_dict(key, spec.to_dict(), "config.json")
    meta = {"method": method, "hp": {}, "backbone": spec.backbone, "task": task}
    tracker.log_artifact_bytes(key, "trainable.safetensors", trainable_bytes(state, meta))
    labels = torch.tensor([0, 0, 1, 1])
    tracker.log_artifact_bytes(
        key, "test_predictions.parquet", predictions_bytes(torch.zeros(4, 2), labels)
    )
    tracker.log_metrics(key, {"test/acc": test_acc}, 1)
    tracker.end_run(key)
    return run_id
