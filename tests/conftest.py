"""Shared fixtures: a tiny, seeded backbone so method tests run in milliseconds."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tiny_backbone():
    """Factory for the built-in tiny ViT with random (seeded) weights and K classes."""
    from tuner.backbones import TINY_NAME, create_backbone

    def make(num_classes: int = 5, seed: int = 0):
        torch.manual_seed(seed)
        return create_backbone(TINY_NAME, num_classes, pretrained=False).eval()

    return make
