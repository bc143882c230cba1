"""Every registered method on the other backbones the seed studies use, built small.

CLIP (pre-norm ``norm_pre``, no patch bias), DINOv2 (LayerScale; with and without register
tokens, which shift the prefix length) and MAE (timm's fine-tuning layout: average pooling
and ``fc_norm`` instead of the final norm) differ from the original ViT exactly where a
method could silently go wrong: which tokens are prefix, which LayerNorms exist, what a
branch's output is scaled by. Each is the seed's timm architecture at width 32, 2 blocks,
image 32 and random weights, so the whole matrix runs in seconds. For every method × backbone:
it applies and only its tensors get gradients; a merge is exact where the method merges;
α = 0 gives the backbone back where the method only adds branches; zero-initialised branches
leave the backbone's function unchanged.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import give_sensitivity

from tuner import methods
from tuner.methods.base import MergeScaled, head_parameters, set_merge_factor

K = 5
SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32, "patch_size": 8}
BACKBONES = {
    "clip": ("vit_base_patch16_clip_224.openai", {}),
    "dinov2": ("vit_base_patch14_dinov2.lvd142m", {}),
    "dinov2_reg": ("vit_base_patch14_reg4_dinov2.lvd142m", {}),
    "mae": ("vit_base_patch16_224.mae", {"global_pool": "avg"}),
}
ALL = methods.list_methods()


def _backbone(kind: str, seed: int = 0) -> torch.nn.Module:
    name, extra = BACKBONES[kind]
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=K, **SMALL, **extra)
    if kind.startswith("dinov2"):  # LayerScale 1e-5 would hide every branch: make it visible
        with torch.no_grad():
            for block in model.blocks:
                block.ls1.gamma.fill_(0.5)
                block.ls2.gamma.fill_(0.5)
    return model.eval()


def _x(seed: int = 1) -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _applied(kind: str, name: str):
    model = _backbone(kind)
    method = give_sensitivity(methods.get(name), model, K)
    return method.apply(model), method


def _perturb(model: torch.nn.Module, method) -> None:
    """Move every trained tensor off its init, as training would (seeded)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, p in method.trainable_parameters(model):
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_the_backbones_differ_where_methods_could_go_wrong():
    clip, dino, reg, mae = (_backbone(k) for k in BACKBONES)
    assert isinstance(clip.norm_pre, torch.nn.LayerNorm) and clip.patch_embed.proj.bias is None
    assert isinstance(dino.blocks[0].ls1, torch.nn.Module) and hasattr(dino.blocks[0].ls1, "gamma")
    assert (dino.num_prefix_tokens, reg.num_prefix_tokens) == (1, 5)
    assert isinstance(mae.fc_norm, torch.nn.LayerNorm) and mae.global_pool == "avg"


@pytest.mark.parametrize("kind", BACKBONES)
@pytest.mark.parametrize("name", ALL)
def test_applies_and_only_declared_tensors_get_gradients(kind, name):
    model, method = _applied(kind, name)
    declared = {id(p) for _, p in method.trainable_parameters(model)}
    y = torch.arange(4) % K
    F.cross_entropy(model.train()(_x()), y).backward()
    for pname, param in model.named_parameters():
        if id(param) in declared:
            assert param.requires_grad and param.grad is not None, pname
        else:
            assert not param.requires_grad and param.grad is None, pname
    head = {id(h) for _, h in head_parameters(model)}
    own = [p for _, p in method.trainable_parameters(model) if id(p) not in head]
    assert name == "linear" or any(p.grad.abs().sum() > 0 for p in own)


@pytest.mark.parametrize("kind", BACKBONES)
@pytest.mark.parametrize("name", [n for n in ALL if methods.method_class(n).reparameterisable])
def test_merge_is_exact(kind, name):
    model, method = _applied(kind, name)
    _perturb(model, method)
    x = _x()
    before = model.eval()(x)
    merged = method.merge(model)
    torch.testing.assert_close(merged(x), before, rtol=1e-5, atol=1e-5)
    assert set(merged.state_dict()) == set(_backbone(kind).state_dict())


def _branch_only(model: torch.nn.Module, method) -> bool:
    """Whether every tuned tensor (head aside) lives in an added, α-scaled module."""
    added = {id(p) for m in model.modules() if isinstance(m, MergeScaled) for p in m.parameters()}
    head = {id(p) for _, p in head_parameters(model)}
    tuned = {id(p) for _, p in method.trainable_parameters(model)} - head
    return bool(added) and tuned <= added


@pytest.mark.parametrize("kind", BACKBONES)
@pytest.mark.parametrize("name", ALL)
def test_alpha_zero_and_silent_inits_give_the_backbone(kind, name):
    x = _x()
    reference = _backbone(kind)
    model, method = _applied(kind, name)
    if method.preserves_init:
        torch.testing.assert_close(model.eval()(x), reference(x), rtol=0, atol=0)
    if not _branch_only(model, method):
        return  # tunes backbone tensors in place: interpolating them is WiSE-FT's job
    _perturb(model, method)
    reference.get_classifier().load_state_dict(model.get_classifier().state_dict())
    set_merge_factor(model, 0.0)
    torch.testing.assert_close(model.eval()(x), reference(x), rtol=1e-5, atol=1e-6)
    set_merge_factor(model, 1.0)
    assert not torch.allclose(model(x), reference(x), atol=1e-4)
