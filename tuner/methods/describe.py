"""What ``petl-sweep methods`` and ``petl-sweep params`` print, as plain data."""

from __future__ import annotations

from typing import Any

import timm
import torch

from tuner.backbones import resolve_backbone  # also registers the tiny ViT with timm
from tuner.methods import get, list_methods, method_class
from tuner.methods.base import count_trainable
from tuner.util import unknown_message


def describe_methods() -> list[dict[str, Any]]:
    """Every registered method: name, one line, paper, hyper-parameters with defaults."""
    out = []
    for name in list_methods():
        cls = method_class(name)
        out.append(
            {
                "name": name,
                "description": cls.description,
                "paper": cls.paper,
                "hparams": {
                    k: {"default": v.default, "help": v.help} for k, v in cls.hparams.items()
                },
                "reparameterisable": cls.reparameterisable,
            }
        )
    return out


def _coerce(method: str, key: str, value: Any) -> Any:
    """A ``--set`` string in the type of the hyper-parameter's default."""
    hparams = method_class(method).hparams
    if key not in hparams:
        raise ValueError(
            f"method {method!r}: " + unknown_message("hyper-parameter", key, sorted(hparams))
        )
    default = hparams[key].default
    try:
        return type(default)(value) if not isinstance(value, type(default)) else value
    except (TypeError, ValueError):
        raise ValueError(f"{method}: {key}={value!r} is not a {type(default).__name__}") from None


def count_params(
    method: str, backbone: str, num_classes: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Trainable parameters of ``method`` on ``backbone`` (built on the meta device: no
    memory, no weights, seconds even for ViT-B)."""
    hp = {k: _coerce(method, k, v) for k, v in (overrides or {}).items()}
    instance = get(method, **hp)
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
