"""From a sweep config to the fixed part of every run: one place, so tune and final agree.

Everything a trial or final retrain needs besides its sampled hyper-parameters comes from
here, and so does what a run holds for device-hours accounting.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuner.config import SweepConfig
from tuner.train import TrialSpec


def trial_spec(
    cfg: SweepConfig, task: str, method: str, hp: dict[str, Any], stage: str, seed: int
) -> TrialSpec:
    """The fixed part of a run, from the sweep config: the same for tune and final stages."""
    return TrialSpec(
        task=task,
        method=method,
        hp=hp,
        backbone=cfg.backbone,
        pretrained=cfg.train.pretrained,
        weights=cfg.backbone_weights,
        normalize=cfg.train.normalize,
        stage=stage,  # type: ignore[arg-type]
        epochs=cfg.tune.max_epochs if stage == "tune" else cfg.final_epochs,
        batch_size=cfg.train.batch_size,
        warmup_epochs=cfg.train.warmup_epochs,
        label_smoothing=cfg.train.label_smoothing,
        seed=seed,
        data_root=str(Path(cfg.data_root).resolve()),
        threads=max(1, math.floor(cfg.resources.cpus_per_trial)),
        sensitivity_seed=cfg.seed,
        shifts=dict(cfg.shifts.get(task, {})),
    )


def devices_per_trial(cfg: SweepConfig) -> float:
    """What a trial holds, for device-hours: its GPUs, or its CPU cores without GPUs."""
    return cfg.resources.gpus_per_trial or cfg.resources.cpus_per_trial
