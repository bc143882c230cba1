"""Backbones: timm ``create_model`` plus the tiny ViT that ships with the package.

The tiny ViT is registered with timm exactly like the real ones (``@register_model`` and a
``default_cfgs`` entry whose ``file`` points at the shipped safetensors), so
``timm.create_model("vit_petl_tiny_patch8_32", pretrained=True, num_classes=K)`` goes through
timm's own pretrained-loading path: the classifier is dropped when K differs, the rest must
match. The same code path then serves real backbones with local weight files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
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
#: Short names for the seed studies' backbones (timm ``architecture.tag``). ``vit_b16_in21k``
#: is the original ViT-B/16 ImageNet-21k checkpoint (Google's ``ViT-B_16.npz``), the one all
#: three seed studies load; timm's later AugReg training of it is ``vit_b16_in21k_augreg``.
PRESETS: dict[str, str] = {
    "vit_b16_in21k": "vit_base_patch16_224.orig_in21k",
    "vit_b16_in21k_augreg": "vit_base_patch16_224.augreg_in21k",
    "clip_vit_b16": "vit_base_patch16_clip_224.openai",
    "dinov2_vit_b14": "vit_base_patch14_dinov2.lvd142m",
    "mae_vit_b16": "vit_base_patch16_224.mae",
}

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
    weights: str | None = None,
) -> nn.Module:
    """A timm ViT (or preset, see ``PRESETS``) with a fresh ``num_classes`` head.

    ``weights`` (a path or fsspec URL) replaces the hub download for offline clusters;
    without it ``pretrained=True`` is timm's own loading. ``pretrained=True`` for the tiny
    model needs the shipped weights file; a clear error names it (and the command that makes
    it) when it is missing.
    """
    name = resolve_backbone(name)
    if weights and not pretrained:
        raise ValueError(f"backbone weights {weights} given with pretrained=False")
    if pretrained and not weights and name == TINY_NAME and not TINY_WEIGHTS.exists():
        raise FileNotFoundError(
            f"pretrained weights for {name} not found at {TINY_WEIGHTS}; "
            "make them with `petl-sweep pretrain`"
        )
    try:
        model = timm.create_model(
            name,
            pretrained=pretrained and not weights,
            num_classes=num_classes,
            drop_path_rate=drop_path,
        )
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(
                f"unknown backbone {name!r}; presets: {', '.join(PRESETS)}; or any of "
                f"{timm.list_models('vit_*')[:8]} ..."
            ) from err
        raise
    if weights:
        from tuner.backbones.weights import load_weights

        load_weights(model, weights, name)
    return model


def data_config(model: nn.Module) -> dict[str, Any]:
    """Input size, normalisation and resize interpolation the backbone expects.

    From timm's ``pretrained_cfg``, except the size of a model built at another ``img_size``
    (its position embeddings fix the input). No crop: tasks are resized, as in VTAB-1k.
    """
    cfg = timm.data.resolve_data_config({}, model=model)
    size = tuple(cfg["input_size"])
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if built is not None:
        size = (size[0], *built)
    return {
        "input_size": size,
        "mean": cfg["mean"],
        "std": cfg["std"],
        "interpolation": cfg["interpolation"],
    }


@dataclass(frozen=True)
class InputSpec:
    """How images must be prepared for a backbone: decoded size, resize filter, mean/std."""

    size: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


@functools.lru_cache(maxsize=16)
def input_spec(name: str) -> InputSpec:
    """The backbone's input spec, from its timm ``pretrained_cfg`` (no weights are loaded).

    Data preparation decodes the cache with it and every ``Trainer`` reads it, so the two can
    never disagree (a disagreement would be a silent decode-cache miss in every trial).
    """
    # Building the probe model draws weight inits: keep them off the caller's RNG stream, or
    # a trial's drop-path masks would depend on whether this process had the spec cached.
    with torch.random.fork_rng(devices=[]):
        cfg = data_config(create_backbone(name, 2, pretrained=False))
    return InputSpec(int(cfg["input_size"][-1]), str(cfg["interpolation"]), cfg["mean"], cfg["std"])


def resolve_backbone(name: str) -> str:
    """A preset's timm name (``clip_vit_b16`` -> ``vit_base_patch16_clip_224.openai``)."""
    return PRESETS.get(name, name)


def check_backbone_name(name: str) -> None:
    """Raise ``ValueError`` for a name that is neither a preset nor a timm model (nor the
    shipped tiny ViT), naming the presets and the closest timm names: a typo is a config
    error before anything runs, not a traceback from data preparation."""
    import difflib

    from tuner.util import unknown_message

    if name in PRESETS or timm.is_model(resolve_backbone(name)):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f" (closest timm names: {', '.join(close)})" if close else ""
    raise ValueError(
        unknown_message(
            "backbone", name, list(PRESETS),
            extra=f", or a timm model name (`petl-sweep backbones`){hint}",
        )
    )  # fmt: skip


def preset_table() -> list[dict[str, Any]]:
    """Every preset with its timm preprocessing (from the registry: nothing downloads)."""
    from timm.models import get_pretrained_cfg

    rows = []
    for preset, timm_name in PRESETS.items():
        cfg = get_pretrained_cfg(timm_name)
        if cfg is None:
            raise ValueError(f"preset {preset}: {timm_name} is not in this timm's registry")
        rows.append(
            {
                "preset": preset,
                "timm_name": timm_name,
                "input_size": tuple(cfg.input_size),
                "mean": tuple(cfg.mean),
                "std": tuple(cfg.std),
                "interpolation": cfg.interpolation,
            }
        )
    return rows
