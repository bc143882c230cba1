"""The ``tune:`` and ``search:`` sections of a sweep: each study's budget and how it searches.

Apart from ``tuner.config`` (which imports the method registry) so the replay strategies
simulate studies with the same two validated models without importing it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tuner.training.settings import Strict


class TuneSettings(Strict):
    """Per-study budget: every (task, method) study gets exactly this."""

    num_samples: int = Field(8, ge=1, description="trials per study (Optuna samples)")
    max_epochs: int = Field(8, ge=1, description="epochs of a trial that ASHA never stops")
    grace_period: int = Field(2, ge=1, description="ASHA: epochs before a trial may be stopped")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/rf of trials per rung")
    max_concurrent_trials: int = Field(2, ge=1, description="running trials per study")
    checkpoint_every: int = Field(
        0, ge=0, description="epochs between trial checkpoints (0: only the time rule)"
    )
    checkpoint_interval_s: float = Field(
        120.0, ge=0, description="seconds of training between trial checkpoints (0: off)"
    )
    early_stopping: bool = Field(
        True, description="ASHA; false: every trial runs max_epochs (a grid search as published)"
    )
    state_save_s: float | Literal["auto"] = Field(
        "auto",
        description="Ray Tune saves its experiment state (every trial's status, the searchers)"
        " at most this often, in seconds (TUNE_GLOBAL_CHECKPOINT_S). auto: Ray's adaptive"
        " period, max(10 s, 19 x the last save's time), so saving stays under 5 % of the"
        " controller's time (each save writes every trial's state: ~150 MB at 10,000 trials,"
        " and a 1 s period was 74 % of the controller's time at 560). A long period costs"
        " nothing on --resume: a trial that finished after the last save is replayed from its"
        " MLflow run, never trained again (tuner.sweep.recorded)",
    )
    stop_grace_s: float = Field(
        30.0, ge=0, description="on Ctrl-C/SIGTERM: seconds running trials get to checkpoint"
    )

    #: Settings that change how a sweep runs, never a study's result (kept out of its hash)
    RESULT_NEUTRAL: ClassVar[set[str]] = {"state_save_s", "stop_grace_s"}

    @field_validator("state_save_s")
    @classmethod
    def _save_period(cls, value: float | str) -> float | str:
        if value != "auto" and not value >= 0:
            raise ValueError(f"tune.state_save_s must be 'auto' or >= 0 seconds, got {value!r}")
        return value

    @model_validator(mode="after")
    def _grace_fits(self) -> TuneSettings:
        if self.grace_period > self.max_epochs:
            raise ValueError(
                f"grace_period ({self.grace_period}) exceeds max_epochs ({self.max_epochs})"
            )
        return self


class SearchSettings(Strict):
    space: Literal["optuna", "published_grid"] = "optuna"
    sampler: Literal["auto", "grid", "tpe"] = Field(
        "auto",
        description="auto: every grid point for published_grid, TPE for optuna; "
        "tpe with published_grid: TPE (and ASHA) over the grid's values",
    )
    spaces_dir: Path | None = Field(None, description="override the shipped search_spaces/")
    fixed: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method fixed hyper-parameters, e.g. lora: {rank: 4}"
    )
    warm_start: bool = Field(
        False, description="seed TPE with the same method's chosen configs on other tasks"
    )
    warm_start_top: int = Field(3, ge=1, description="warm-start points per study, at most")
    prior: str | None = Field(
        None,
        description="a replay table (petl_vision_vtab1k, or a CSV/parquet path): TPE first "
        "tries the method's configurations that came within prior_eps of the best on most of "
        "the table's other tasks (tuner.replay.prior; bench/replay_strategies.py)",
    )
    prior_top: int = Field(16, ge=1, description="prior points per study, at most")
    prior_eps: float = Field(0.01, ge=0, description="prior: 'near the best' on a task")

    @field_validator("prior")
    @classmethod
    def _prior_exists(cls, value: str | None) -> str | None:
        if value is not None:
            from tuner.replay.table import resolve

            resolve(value)  # a TableError (a ValueError) names the shipped tables
        return value
