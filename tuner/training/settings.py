"""``TrainSettings``: the training recipe of every run (the ``train:`` section of a sweep).

One schema for the sweep file and for the run itself: ``SweepConfig.train`` validates it when
the file is read, and every ``TrialSpec`` carries the same object (``spec.train``) to the
``Trainer``, through Ray and into MLflow's ``config.json``. It lives here, beside
``TrialSpec``, since the training layer reads it and must not import the sweep config.

``Strict`` is the base of every section model: an unknown key is an error, never a silently
ignored typo.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A pydantic model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid")


class TrainSettings(Strict):
    """How a run trains, besides its sampled hyper-parameters and its epochs.

    Frozen: one validated object is shared by the config and every spec made from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Settings that change what a run records, never its result (kept out of the hashes)
    RESULT_NEUTRAL: ClassVar[set[str]] = {"record_test"}

    batch_size: int = Field(64, ge=1)
    warmup_epochs: float = Field(1.0, ge=0)
    warmup_lr_init: float | None = Field(
        None, ge=0, description="lr at the first warm-up step (studies: 1e-6); None: lr/steps"
    )
    lr_min: float = Field(0.0, ge=0, description="cosine floor (studies: 1e-5)")
    lr_schedule: Literal["step", "epoch"] = Field(
        "step", description="epoch: timm's CosineLRScheduler stepped per epoch (the studies)"
    )
    weight_decay_on: Literal["matrices", "all"] = Field(
        "matrices", description="all: every tuned tensor decays (the seed studies)"
    )
    drop_path: float | None = Field(
        None, ge=0, lt=1, description="fixed drop path for every run (studies: 0.1)"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    pretrained: bool = True
    normalize: bool = Field(True, description="False: [0, 1] pixels, no mean/std (seed studies)")
    record_test: bool = Field(
        False,
        description="tune trials also report test/acc every epoch, for replay tables with "
        "test curves (bench/trained_curves.py); never read for selection",
    )
