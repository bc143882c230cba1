"""Upstream glyph data, the pretraining loop, and the shipped tiny-ViT weights.

The shipped weights are the foundation of every PETL experiment in the repo, so besides
"it loads" these tests pin down that its features are actually pretrained (a frozen linear
probe on *unseen* glyph classes beats the same probe on a random-init backbone) and that the
file matches the recipe ``pretrain()``'s defaults claim.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tuner.backbones import TINY_NAME, TINY_UPSTREAM_CLASSES, TINY_WEIGHTS, create_backbone
from tuner.backbones.pretrain import linear_probe_accuracy, novel_task, pretrain
from tuner.data.upstream import NUM_UPSTREAM_CLASSES, generate_upstream, glyph_classes

MAX_BYTES = 3_000_000


def test_generator_is_deterministic_and_covers_all_classes() -> None:
    x1, y1 = generate_upstream(160, seed=7)
    x2, y2 = generate_upstream(160, seed=7)
    assert x1.shape == (160, 32, 32, 3) and x1.dtype == np.uint8
    assert y1.shape == (160,) and y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert set(y1.tolist()) == set(range(NUM_UPSTREAM_CLASSES)) == set(range(TINY_UPSTREAM_CLASSES))
    # Balanced labels: no class more than one sample off the mean.
    counts = np.bincount(y1, minlength=NUM_UPSTREAM_CLASSES)
    assert counts.max() - counts.min() <= 1

    x3, _ = generate_upstream(160, seed=8)
    assert not np.array_equal(x1, x3)
    # Images are not blank and vary within a class (pose/colour/background nuisances).
    assert x1.std() > 20
    same = np.flatnonzero(y1 == y1[0])
    assert not np.array_equal(x1[same[0]], x1[same[1]])


def test_class_seed_defines_the_glyphs() -> None:
    a, a_again, b = glyph_classes(4, class_seed=1), glyph_classes(4, 1), glyph_classes(4, 2)
    for g, h in zip(a, a_again, strict=True):
        np.testing.assert_array_equal(g.palette, h.palette)
        for p, q in zip(g.primitives, h.primitives, strict=True):
            np.testing.assert_array_equal(p.points, q.points)
    assert not any(np.allclose(g.palette, h.palette) for g, h in zip(a, b, strict=True))
    # A class's definition does not depend on how many classes are requested.
    np.testing.assert_array_equal(glyph_classes(8, 1)[3].palette, a[3].palette)
    x_a, _ = generate_upstream(32, seed=0, class_seed=1)
    x_b, _ = generate_upstream(32, seed=0, class_seed=2)
    assert not np.array_equal(x_a, x_b)


def test_tiny_pretrain_writes_weights_that_timm_loads(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    metrics = pretrain(
        path, seed=1, num_images=256, epochs=1, batch_size=64, num_val=64, probe=False, threads=1
    )
    assert path.exists() and metrics["bytes"] == path.stat().st_size <= MAX_BYTES
    assert 0.0 <= metrics["upstream_val_acc"] <= 1.0

    saved = load_file(str(path))
    # Deterministic given the seed: a second run gives identical tensors.
    again = tmp_path / "again.safetensors"
    pretrain(again, seed=1, num_images=256, epochs=1, batch_size=64, num_val=64, probe=False)
    for key, value in load_file(str(again)).items():
        assert torch.equal(value, saved[key]), key
    assert saved["head.weight"].shape == (TINY_UPSTREAM_CLASSES, 96)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["images"] == "256" and meta["epochs"] == "1" and meta["seed"] == "1"
    assert meta["torch"] == torch.__version__ and meta["timm"] == timm.__version__

    model = timm.create_model(
        TINY_NAME, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=10
    )
    state = model.state_dict()
    assert state["head.weight"].shape == (10, 96)
    backbone_keys = [k for k in saved if not k.startswith("head.")]
    assert set(backbone_keys) == {k for k in state if not k.startswith("head.")}
    for key in backbone_keys:
        torch.testing.assert_close(state[key], saved[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def shipped() -> Path:
    if not TINY_WEIGHTS.exists():
        pytest.fail(f"shipped weights missing: {TINY_WEIGHTS} (make them with petl-sweep pretrain)")
    return TINY_WEIGHTS


def test_shipped_weights_match_the_default_recipe(shipped: Path) -> None:
    assert shipped.stat().st_size <= MAX_BYTES
    with safe_open(str(shipped), framework="pt") as f:
        meta = f.metadata()
    defaults = {
        name: p.default
        for name, p in inspect.signature(pretrain).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert meta["model"] == TINY_NAME
    assert int(meta["images"]) == defaults["num_images"]
    assert int(meta["epochs"]) == defaults["epochs"]
    assert int(meta["batch_size"]) == defaults["batch_size"]
    assert float(meta["lr"]) == defaults["lr"]
    assert int(meta["seed"]) == defaults["seed"]
    assert float(meta["upstream_val_acc"]) > 0.5


def test_shipped_weights_load_and_transfer(shipped: Path) -> None:
    torch.manual_seed(0)
    pretrained = create_backbone(TINY_NAME, 10)
    assert pretrained.state_dict()["head.weight"].shape == (10, 96)
    saved = load_file(str(shipped))
    torch.testing.assert_close(pretrained.state_dict()["pos_embed"], saved["pos_embed"])

    torch.manual_seed(0)
    random_init = create_backbone(TINY_NAME, 10, pretrained=False)
    # A novel glyph task: 16 classes the backbone never saw during pretraining.
    train, test = novel_task(480, 480, seed=5, num_classes=16)
    acc_pre = linear_probe_accuracy(pretrained, train, test, steps=60)
    acc_rand = linear_probe_accuracy(random_init, train, test, steps=60)
    # Measured over 6 task seeds: pretrained 0.55-0.62, random init 0.08-0.11 (chance 0.0625).
    assert acc_pre > acc_rand + 0.25, (acc_pre, acc_rand)
    assert acc_pre > 0.4, acc_pre
