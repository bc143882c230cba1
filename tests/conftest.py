"""Shared fixtures: a tiny, seeded backbone so method tests run in milliseconds."""

from __future__ import annotations

import socket

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tiny_backbone():
    """Factory for the built-in tiny ViT with random (seeded) weights and K classes."""
    from tuner.backbones.timm_models import TINY_NAME, create_backbone

    def make(num_classes: int = 5, seed: int = 0):
        torch.manual_seed(seed)
        return create_backbone(TINY_NAME, num_classes, pretrained=False).eval()

    return make


def give_sensitivity(method, model, num_classes: int = 5, seed: int = 0):
    """SPT methods need their task's sensitivity scores before ``apply``: take them on a
    seeded random batch (the real pass, two small batches). Other methods pass through."""
    if method.needs_prepare():
        from tuner.methods.spt.sensitivity import compute_sensitivity

        size = model.patch_embed.img_size
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (16, 3, *size), dtype=torch.uint8, generator=g)
        y = torch.randint(0, num_classes, (16,), generator=g)
        scores = compute_sensitivity(
            model, x, y, lambda b: b.float() / 127.5 - 1, seed=seed, batches=2, batch_size=8
        )
        method.set_sensitivity(scores)
    return method


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers the tests start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
