"""Save and restore only what a method trained, as safetensors.

A PETL checkpoint is tiny (the method's tensors and the head); the frozen backbone comes
from its own weights file. The file's metadata records the method and its
hyper-parameters, so ``load_trainable_file`` can rebuild the method on a fresh backbone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tuner.methods.base import Method


def save_trainable(
    model: nn.Module, method: Method, path: Path, extra: dict[str, str] | None = None
) -> Path:
    """Write the trainable tensors of ``model`` with the method name and hp as metadata."""
    tensors = {k: v.contiguous().cpu() for k, v in method.trainable_state_dict(model).items()}
    meta = {"method": method.name, "hp": json.dumps(method.hp, sort_keys=True), **(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    """The method name and hyper-parameters stored in a trainable-state file."""
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata() or {})
    if "method" not in meta:
        raise ValueError(f"{path}: not a petl-sweep trainable-state file (no 'method' metadata)")
    meta["hp"] = json.loads(meta.get("hp", "{}"))
    return meta


def load_trainable(model: nn.Module, method: Method, path: Path) -> nn.Module:
    """Copy the saved tensors into an already ``apply``-ed model; keys must match exactly."""
    saved = load_file(str(path))
    params = dict(method.trainable_parameters(model))
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"{path}: trainable state does not fit method {method.name!r}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    with torch.no_grad():
        for name, param in params.items():
            if saved[name].shape != param.shape:
                raise ValueError(
                    f"{path}: tensor {name} has shape {tuple(saved[name].shape)}, "
                    f"model expects {tuple(param.shape)}"
                )
            param.copy_(saved[name])
    return model
