"""``TrialSpec``: everything that defines one training run, in one picklable record.

The sweep builds it (``tuner.sweep.specs``) for tune trials and final retrains alike, sends it
to Ray workers, and the ``Trainer`` builds backbone, method and data from it. Sampled
hyper-parameters are merged with ``with_hp`` (a new record), never by mutating a dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from tuner.methods.base import COMMON_HPARAMS

Stage = Literal["tune", "final"]


@dataclass
class TrialSpec:
    """Everything that defines one training run (hyper-parameters in ``hp``)."""

    task: str
    method: str
    hp: dict[str, Any] = field(default_factory=dict)
    backbone: str = "vit_petl_tiny_patch8_32"
    pretrained: bool = True
    #: path or fsspec URL of the backbone weights (offline); None: timm's hub download
    weights: str | None = None
    #: False: feed [0, 1] pixels without mean/std (the seed studies' protocol)
    normalize: bool = True
    stage: Stage = "tune"
    epochs: int = 8
    batch_size: int = 64
    warmup_epochs: float = 1.0
    #: lr at the first warm-up step (None: ramp from lr / warm-up steps)
    warmup_lr_init: float | None = None
    #: where the cosine ends (absolute lr)
    lr_min: float = 0.0
    #: "step": warm-up + cosine per optimiser step; "epoch": timm's CosineLRScheduler per
    #: epoch, as the seed studies ran it
    lr_schedule: str = "step"
    #: "matrices": no decay on vectors/tokens (ViT recipe); "all": every tuned tensor (studies)
    weight_decay_on: str = "matrices"
    #: drop path of every run (the protocol's); None: the hyper-parameter (default 0)
    drop_path: float | None = None
    label_smoothing: float = 0.0
    seed: int = 0
    data_root: str = "data"
    threads: int | None = None
    #: Evaluation-only shift sets of the task (name → list file or folder), final stage only
    shifts: dict[str, str] = field(default_factory=dict)
    #: Seed of the method's prepare pass (the study's, so final retrains reuse its result)
    prepare_seed: int | None = None
    #: Artifact holding the study's prepare result, for nodes without the cache file
    prepared_uri: str | None = None

    def common(self, key: str) -> Any:
        if key == "drop_path" and self.drop_path is not None and key not in self.hp:
            return self.drop_path
        return self.hp.get(key, COMMON_HPARAMS[key])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_hp(self, hp: dict[str, Any]) -> TrialSpec:
        """The same run with ``hp`` laid over its hyper-parameters."""
        return replace(self, hp={**self.hp, **hp})
