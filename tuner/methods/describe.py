"""What ``petl-sweep methods`` and ``petl-sweep params`` print, as plain data."""

from __future__ import annotations

from typing import Any

import timm
import torch

from tuner.backbones import resolve_backbone  # also registers the tiny ViT with timm
from tuner.methods import get, list_methods, method_class
from tuner.methods.base import count_trainable
from tuner.methods.configs import describe_fields


def describe_methods() -> list[dict[str, Any]]:
    """Every registered method: name, one line, paper, and its config's fields (default,
    description, type, bounds, choices), read off the typed config."""
    out = []
    for name in list_methods():
        cls = method_class(name)
        out.append(
            {
                "name": name,
                "description": cls.description,
                "paper": cls.paper,
                "hparams": describe_fields(cls.config_class),
                "reparameterisable": cls.reparameterisable,
            }
        )
    return out


def count_params(
    method: str, backbone: str, num_classes: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Trainable parameters of ``method`` on ``backbone`` (built on the meta device: no
    memory, no weights, seconds even for ViT-B). ``overrides`` go through the method's typed
    config: strings are coerced (``rank="8"``), bad values refused naming field and bound."""
    instance = get(method, **(overrides or {}))
    try:
        with torch.device("meta"):
            model = timm.create_model(
                resolve_backbone(backbone), pretrained=False, num_classes=num_classes
            )
            instance.apply(model)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"unknown backbone {backbone!r}") from None
        raise
    total, without_head = count_trainable(model, instance)
    return {
        "method": method,
        "backbone": backbone,
        "num_classes": num_classes,
        "hp": instance.hp,
        "trainable_total": total,
        "trainable_without_head": without_head,
    }
