"""Load a delivered folder (``export_model``'s) into a classifier that takes images.

A plain-timm folder is loaded by timm itself (``pretrained_cfg_overlay`` with the file), the
way the folder's README tells a user to; any other is the backbone with its method applied
and every tensor loaded strictly. The folder's format must be the one this version writes:
otherwise the error names both versions, never a shape mismatch three calls later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import timm
import torch
from safetensors.torch import load_file
from torch import nn

from tuner.deliver import DeliverError
from tuner.deliver.export import CONFIG, PACKAGE_FORMAT, SCORES, WEIGHTS, project_version
from tuner.deliver.images import decode


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json``, checked to be a package this version can read."""
    path = Path(folder) / CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DeliverError(f"{folder}: not a petl-sweep model folder ({CONFIG}: {err})") from None
    if not isinstance(config, dict) or "format" not in config:
        raise DeliverError(f"{folder}: not a petl-sweep model folder ({CONFIG} has no 'format')")
    if config["format"] != PACKAGE_FORMAT:
        raise DeliverError(
            f"{folder}: this model was written by petl-sweep "
            f"{config.get('petl_sweep_version', 'unknown')} (package format {config['format']}); "
            f"the installed petl-sweep {project_version()} reads format {PACKAGE_FORMAT}. "
            f"Install petl-sweep {config.get('petl_sweep_version', '')} to load it, or "
            "export the run again with this version"
        )
    return config


def _build_petl(folder: Path, config: dict[str, Any]) -> nn.Module:
    from tuner import methods
    from tuner.backbones import create_backbone
    from tuner.methods.base import COMMON_HPARAMS

    petl = config["petl"]
    model = create_backbone(petl["backbone"], config["num_classes"], pretrained=False)
    hp = {k: v for k, v in petl["hp"].items() if k not in COMMON_HPARAMS}
    method = methods.get(petl["method"], **hp)
    if (folder / SCORES).exists():
        method.set_sensitivity(load_file(str(folder / SCORES)))  # type: ignore[attr-defined]
    method.apply(model)
    model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    return model


def build_model(folder: Path, config: dict[str, Any]) -> nn.Module:
    """The folder's network (CPU, eval mode)."""
    if config["plain_timm"]:
        overlay = dict(config["pretrained_cfg"], file=str(Path(folder) / WEIGHTS))
        model = timm.create_model(
            config["architecture"],
            pretrained=True,
            num_classes=config["num_classes"],
            pretrained_cfg_overlay=overlay,
            **config["model_kwargs"],
        )
    else:
        model = _build_petl(Path(folder), config)
    return model.eval()


class Classifier:
    """A delivered model with its preprocessing: images in, class ids and names out."""

    def __init__(self, folder: Path, config: dict[str, Any], model: nn.Module) -> None:
        self.folder, self.config, self.model = Path(folder), config, model
        cfg = config["pretrained_cfg"]
        self.size, self.interpolation = int(cfg["input_size"][-1]), str(cfg["interpolation"])
        self.mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
        self.names = [config["label_map"][str(i)] for i in range(config["num_classes"])]
        self.has_names = bool(config.get("label_names"))

    def decode(self, source: str | bytes | Path) -> torch.Tensor:
        return decode(source, self.size, self.interpolation)

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """uint8 ``N × 3 × S × S`` → logits, normalised as in training."""
        outs = []
        for start in range(0, len(images), batch):
            x = images[start : start + batch].float().div(255.0)
            outs.append(self.model((x - self.mean) / self.std).float())
        return torch.cat(outs) if outs else torch.zeros(0, self.config["num_classes"])

    def frame(self, logits: torch.Tensor) -> pd.DataFrame:
        """``label``, ``label_name`` (where the task has names) and ``prob`` per row."""
        probs = logits.softmax(1)
        prob, label = probs.max(1)
        out = {"label": label.numpy().astype("int64")}
        if self.has_names:
            out["label_name"] = [self.names[i] for i in label.tolist()]
        out["prob"] = prob.numpy().astype("float64")
        return pd.DataFrame(out)

    def predict(self, sources: Sequence[str | bytes | Path]) -> pd.DataFrame:
        """Decode every input (an undecodable one raises ``ImageError`` naming it), predict."""
        if not sources:
            return self.frame(torch.zeros(0, self.config["num_classes"]))
        return self.frame(self.logits(torch.stack([self.decode(s) for s in sources])))


def load_package(folder: str | Path) -> Classifier:
    """The classifier stored in ``folder`` (an export, or an MLflow model's package)."""
    folder = Path(folder)
    config = read_config(folder)
    return Classifier(folder, config, build_model(folder, config))
