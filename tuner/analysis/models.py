"""Rebuild what a sweep trained from MLflow alone: final models and frozen backbones.

A final run stores its ``config.json`` (the ``TrialSpec``) and ``trainable.safetensors``
(the trained tensors only). The model is the backbone the spec names, with its method
applied and those tensors loaded. It is built by the ``Trainer`` itself, so every method,
SPT's prepare pass included (through the study's prepared artifact), is rebuilt exactly as
it trained, and the task's test split comes with it. Nothing trains here.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuner.analysis.run import AnalysisError
from tuner.backbones import create_backbone, input_spec
from tuner.tracking.artifacts import read_trainable
from tuner.tracking.client import TrackingService, fetch_artifact
from tuner.training.spec import SpecError, TrialSpec

CONFIG = "config.json"
TRAINABLE = "trainable.safetensors"


def run_label(run: dict[str, Any]) -> str:
    """``run <id> (task, method)``: how errors name a run."""
    tags = run["tags"]
    return f"run {run['run_id']} ({tags.get('task')}, {tags.get('method')})"


def final_spec(
    tracker: TrackingService,
    run: dict[str, Any],
    data_root: str | None = None,
    shifts: bool = False,
) -> TrialSpec:
    """The ``TrialSpec`` a final run trained with, from its ``config.json``; ``data_root``
    replaces the stored one (a sweep's relative ``data`` means nothing elsewhere). Shift
    sets are dropped unless ``shifts`` (most analyses read the test split only)."""
    try:
        config = tracker.load_dict(run["run_id"], CONFIG)
    except Exception as err:  # MLflow raises several types for a missing artifact
        raise AnalysisError(f"final {run_label(run)} has no stored {CONFIG}") from err
    try:  # either layout: runs of earlier versions stored the recipe's fields flat
        spec = TrialSpec.from_dict(config)
    except SpecError as err:
        raise AnalysisError(f"final {run_label(run)}: {CONFIG}: {err}") from None
    return dataclasses.replace(
        spec,
        shifts=spec.shifts if shifts else {},
        data_root=data_root or spec.data_root,
        threads=None,
    )


def trainable_tensors(tracker: TrackingService, run: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A final run's stored trainable tensors (``trainable.safetensors``)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.download(run["run_id"], TRAINABLE, Path(tmp))
        except Exception as err:
            raise AnalysisError(f"final {run_label(run)} has no stored {TRAINABLE}") from err
        tensors, _ = read_trainable(path.read_bytes())
    return tensors


def model_input(spec: TrialSpec, x: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W → what the model saw in training: [0, 1] pixels, normalised with the
    backbone's mean/std unless the spec trained on raw pixels (``normalize=False``)."""
    x = x.float().div(255.0)
    if not spec.train.normalize:
        return x
    inputs = input_spec(spec.backbone)
    mean = torch.tensor(inputs.mean).view(1, -1, 1, 1)
    std = torch.tensor(inputs.std).view(1, -1, 1, 1)
    return (x - mean) / std


@dataclass
class FinalModel:
    """A final run's trained model (CPU, eval mode), its spec and its task's test split."""

    run: dict[str, Any]
    spec: TrialSpec
    model: nn.Module
    test: tuple[torch.Tensor, torch.Tensor]

    @property
    def method(self) -> str:
        return self.spec.method


def rebuild_trainer(
    tracker: TrackingService,
    run: dict[str, Any],
    data_root: str | None = None,
    hint: str = "-o data_root=PATH sets another",
) -> tuple[TrialSpec, Any, nn.Module]:
    """(spec, trainer, model) of a final run: a fresh build with its trainable tensors
    loaded, in eval mode on the CPU. The one rebuild the analyses and the delivery share;
    ``hint`` says how the caller's user points at another data root."""
    from tuner.training.trainer import Trainer

    spec = final_spec(tracker, run, data_root)
    tensors = trainable_tensors(tracker, run)
    try:
        trainer = Trainer(dataclasses.replace(spec, stage="final"), fetch=fetch_artifact)
    except (OSError, ValueError, KeyError) as err:
        raise AnalysisError(
            f"cannot rebuild final {run_label(run)} (data_root {spec.data_root!r}; "
            f"{hint}): {str(err).splitlines()[0]}"
        ) from err
    model = trainer.method.load_trainable_state_dict(trainer.model, tensors, run_label(run))
    assert trainer.data is not None
    return spec, trainer, model.cpu().eval()


def load_final_model(
    tracker: TrackingService, run: dict[str, Any], data_root: str | None = None
) -> FinalModel:
    """The trained model of a final run (trainable tensors loaded into a fresh build)."""
    spec, trainer, model = rebuild_trainer(tracker, run, data_root)
    return FinalModel(run, spec, model, trainer.data.test)


def frozen_backbone(backbone: str, weights: str | None, pretrained: bool = True) -> nn.Module:
    """The pretrained backbone with no head and no method (CPU, eval mode)."""
    try:
        model = create_backbone(backbone, 0, pretrained=pretrained, weights=weights)
    except (OSError, ValueError) as err:
        raise AnalysisError(f"backbone {backbone}: {str(err).splitlines()[0]}") from err
    return model.eval()


@torch.no_grad()
def pre_logits(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The features a linear head reads: timm's ``forward_head(..., pre_logits=True)`` of
    ``forward_features`` (for the ViTs here the final-norm class token, or the model's own
    pooling where it has another), one row per image."""
    feats = [
        model.forward_head(model.forward_features(x[i : i + batch]), pre_logits=True)
        for i in range(0, len(x), batch)
    ]
    return torch.cat(feats)
