"""From a sweep config to the fixed part of every run: one place, so tune and final agree.

Everything a trial or final retrain needs besides its sampled hyper-parameters comes from
here, the ``train:`` section as it is (one frozen ``TrainSettings``): the tune stage lays the
sampled config over it (``TrialSpec.with_hp``), the final stage the study's chosen config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.config import SweepConfig
from tuner.training.spec import Stage, TrialSpec


def trial_spec(
    cfg: SweepConfig,
    task: str,
    method: str,
    hp: dict[str, Any],
    stage: Stage,
    seed: int,
    prepared_uri: str | None = None,
) -> TrialSpec:
    """The fixed part of a run, from the sweep config: the same for tune and final stages."""
    return TrialSpec(
        task=task,
        method=method,
        hp=hp,
        backbone=cfg.backbone,
        weights=cfg.backbone_weights,
        stage=stage,
        epochs=cfg.tune.max_epochs if stage == "tune" else cfg.final_epochs,
        train=cfg.train,
        seed=seed,
        data_root=str(Path(cfg.data_root).resolve()),
        threads=cfg.threads_per_trial,
        prepare_seed=cfg.seed,
        prepared_uri=prepared_uri,
        shifts=dict(cfg.shifts.get(task, {})),
    )
