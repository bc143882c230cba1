"""Backbones: timm ``create_model`` plus the tiny ViT that ships with the package.

The tiny ViT is registered with timm exactly like the real ones (``@register_model`` and a
``default_cfgs`` entry whose ``file`` points at the shipped safetensors), so
``timm.create_model("vit_petl_tiny_patch8_32", pretrained=True, num_classes=K)`` goes through
timm's own pretrained-loading path: the classifier is dropped when K differs, the rest must
match. The same code path then serves real backbones with local weight files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"
TINY_NAME = "vit_petl_tiny_patch8_32"
TINY_TAG = "synth_upstream"
TINY_WEIGHTS = WEIGHTS_DIR / f"{TINY_NAME}.{TINY_TAG}.safetensors"
#: Architecture of the tiny ViT: 32x32 inputs, 4x4 patch grid, 6 blocks of width 96.
TINY_ARGS: dict[str, Any] = dict(
    img_size=32, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0
)
#: Classes of the synthetic upstream task the tiny ViT was pretrained on.
TINY_UPSTREAM_CLASSES = 64

default_cfgs = generate_default_cfgs(
    {
        f"{TINY_NAME}.{TINY_TAG}": {
            "file": str(TINY_WEIGHTS),
            "num_classes": TINY_UPSTREAM_CLASSES,
            "input_size": (3, 32, 32),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "first_conv": "patch_embed.proj",
            "classifier": "head",
            "license": "apache-2.0",
        }
    }
)


@register_model
def vit_petl_tiny_patch8_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Tiny-ish for 32x32 images, pretrained offline by ``petl-sweep pretrain``."""
    return build_model_with_cfg(
        VisionTransformer,
        TINY_NAME,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        **dict(TINY_ARGS, **kwargs),
    )


def create_backbone(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = True,
    drop_path: float = 0.0,
) -> nn.Module:
    """A timm ViT with a fresh ``num_classes`` head.

    ``pretrained=True`` for the tiny model needs the shipped weights file; a clear error
    names it (and the command that makes it) when it is missing.
    """
    if pretrained and name == TINY_NAME and not TINY_WEIGHTS.exists():
        raise FileNotFoundError(
            f"pretrained weights for {name} not found at {TINY_WEIGHTS}; "
            "make them with `petl-sweep pretrain`"
        )
    try:
        return timm.create_model(
            name, pretrained=pretrained, num_classes=num_classes, drop_path_rate=drop_path
        )
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(
                f"unknown backbone {name!r}; try one of {timm.list_models('vit_*')[:8]} ..."
            ) from err
        raise


def data_config(model: nn.Module) -> dict[str, Any]:
    """Input size and normalisation the backbone expects (timm's ``pretrained_cfg``)."""
    cfg = timm.data.resolve_data_config({}, model=model)
    return {"input_size": tuple(cfg["input_size"]), "mean": cfg["mean"], "std": cfg["std"]}
