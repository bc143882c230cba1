"""Backbones: timm ViTs and presets, offline weight files, the shipped tiny ViT.

``timm_models`` registers the tiny ViT with timm and builds any backbone; ``weights`` reads
weight files (safetensors, ``.pth``, Google ``.npz``; local or fsspec); ``pretrain`` is the
recipe that made the shipped tiny weights. Importing the package registers the tiny model.
"""

from tuner.backbones.timm_models import (
    PRESETS,
    TINY_NAME,
    TINY_UPSTREAM_CLASSES,
    TINY_WEIGHTS,
    InputSpec,
    check_backbone_name,
    create_backbone,
    data_config,
    input_spec,
    preset_table,
    resolve_backbone,
)

__all__ = [
    "PRESETS",
    "TINY_NAME",
    "TINY_UPSTREAM_CLASSES",
    "TINY_WEIGHTS",
    "InputSpec",
    "check_backbone_name",
    "create_backbone",
    "data_config",
    "input_spec",
    "preset_table",
    "resolve_backbone",
]
