"""``TrialSpec``: everything that defines one training run, in one picklable record.

The sweep builds it (``tuner.sweep.specs``) for tune trials and final retrains alike, sends it
to Ray workers, and the ``Trainer`` builds backbone, method and data from it. Sampled
hyper-parameters are merged with ``with_hp`` (a new record), never by mutating a dict. The
training recipe is the sweep's own ``TrainSettings`` (``spec.train``): one schema, so a
setting added there reaches every run without being copied field by field.

A final run stores ``to_dict()`` as MLflow's ``config.json``; ``from_dict`` reads it back,
including the flat layout of earlier versions (the recipe's fields at the top level).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

from pydantic import ValidationError

from tuner.methods.base import COMMON_HPARAMS
from tuner.training.settings import TrainSettings

Stage = Literal["tune", "final"]


class SpecError(ValueError):
    """A stored spec that cannot be read; the message names the field."""


@dataclass
class TrialSpec:
    """Everything that defines one training run (hyper-parameters in ``hp``)."""

    task: str
    method: str
    hp: dict[str, Any] = field(default_factory=dict)
    backbone: str = "vit_petl_tiny_patch8_32"
    #: path or fsspec URL of the backbone weights (offline); None: timm's hub download
    weights: str | None = None
    stage: Stage = "tune"
    epochs: int = 8
    #: the sweep's ``train:`` section: batch size, schedule, drop path, normalisation, ...
    train: TrainSettings = field(default_factory=TrainSettings)
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
        drop_path = self.train.drop_path
        if key == "drop_path" and drop_path is not None and key not in self.hp:
            return drop_path
        return self.hp.get(key, COMMON_HPARAMS[key])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``train`` as its fields), as ``config.json`` stores it."""
        return {**asdict(self), "train": self.train.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        """The spec ``to_dict`` wrote, or the flat layout of earlier versions. A top-level key
        of no field is ignored (a later version's bookkeeping); ``train`` is strict, since a
        recipe setting this version cannot apply would rebuild another model. A bad value
        raises ``SpecError`` naming the field."""
        if not isinstance(data, Mapping):
            raise SpecError(f"expected a mapping of fields, got {type(data).__name__}")
        names = {f.name for f in fields(cls)} - {"train"}
        train, prefix = data.get("train"), "train."
        if train is None:  # earlier versions: the recipe's fields beside the others
            train = {k: v for k, v in data.items() if k in TrainSettings.model_fields}
            prefix = ""
        if not isinstance(train, Mapping):
            raise SpecError(f"train: expected a mapping, got {type(train).__name__}")
        missing = [n for n in ("task", "method") if n not in data]
        if missing:
            raise SpecError(f"{', '.join(missing)}: missing")
        if data.get("stage", "tune") not in get_args(Stage):
            stages = list(get_args(Stage))
            raise SpecError(f"stage: expected one of {stages} (got {data['stage']!r})")
        try:
            settings = TrainSettings.model_validate(dict(train))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = f"{prefix}{where}: {first['msg']} (got {first.get('input')!r})"
            raise SpecError(msg) from None
        return cls(**{k: v for k, v in data.items() if k in names}, train=settings)

    def with_hp(self, hp: dict[str, Any]) -> TrialSpec:
        """The same run with ``hp`` laid over its hyper-parameters."""
        return replace(self, hp={**self.hp, **hp})
