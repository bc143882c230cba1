"""Trainable parameters on real timm ViT layouts, and the methods/params commands.

ViT-B/16 counts (100 classes, head excluded) at the seed study's defaults are pinned to
0.01 M as papers publish them. Backbones are built on the meta device (no memory, no
weights), so counting ViT-B takes milliseconds.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
from conftest import give_sensitivity
from typer.testing import CliRunner

from tuner import methods
from tuner.cli import app
from tuner.methods.describe import count_params, describe_methods

#: M trainable parameters without head, ViT-B/16, 100 classes, default hyper-parameters
VIT_B = {
    "linear": 0.0,
    "full": 85.8,
    "bitfit": 0.10,
    "layernorm": 0.04,
    "difffit": 0.14,
    "ssf": 0.21,
    "vpt_deep": 0.09,
    "vpt_shallow": 0.01,
    "lora": 0.29,
    "adapter_houlsby": 0.31,
    "adapter_pfeiffer": 0.16,
    "adaptformer": 0.16,
    "convpass": 0.33,
    "repadapter": 0.24,
    "fact_tt": 0.02,
    "fact_tk": 0.09,
    # SPT's default budget: 1 % of the eligible 85.1 M (the paper's range is 0.2–1.0 M)
    "spt_lora": 0.85,
    "spt_adapter": 0.85,
}
BACKBONES = ["vit_base_patch16_clip_224", "vit_base_patch14_dinov2", "vit_small_patch16_224"]


def test_every_method_is_pinned():
    assert set(VIT_B) == set(methods.list_methods())


@pytest.mark.parametrize("name", methods.list_methods())
def test_vit_b_counts_match_the_published_ones(name):
    info = count_params(name, "vit_base_patch16_224", 100)
    assert round(info["trainable_without_head"] / 1e6, 2) == VIT_B[name]
    assert info["trainable_total"] - info["trainable_without_head"] == 768 * 100 + 100


def test_seed_study_examples():
    assert (
        round(
            count_params("lora", "vit_base_patch16_224", 100, {"rank": "8"})[
                "trainable_without_head"
            ]
            / 1e6,
            2,
        )
        == 0.29
    )
    assert (
        round(
            count_params("adaptformer", "vit_base_patch16_224", 100, {"bottleneck": 8})[
                "trainable_without_head"
            ]
            / 1e6,
            2,
        )
        == 0.16
    )


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("name", methods.list_methods())
def test_methods_apply_to_other_vit_layouts(backbone, name):
    info = count_params(name, backbone, 10)
    assert info["trainable_total"] > info["trainable_without_head"] >= 0


@pytest.fixture(scope="module")
def small_vit_32():
    """vit_small's real module layout at 32x32 input (4 patches), for cheap forward passes."""

    def make():
        torch.manual_seed(0)
        return timm.create_model(
            "vit_small_patch16_224", pretrained=False, num_classes=3, img_size=32
        ).eval()

    return make


@pytest.mark.parametrize("name", methods.list_methods())
def test_forward_and_backward_on_a_real_vit_layout(small_vit_32, name):
    x = torch.randn(2, 3, 32, 32)
    reference = small_vit_32()(x)
    model = small_vit_32()
    method = give_sensitivity(methods.get(name), model, 3)
    method.apply(model)
    out = model(x)
    assert out.shape == (2, 3)
    if method.preserves_init:
        torch.testing.assert_close(out, reference)
    out.sum().backward()
    grads = [p.grad for _, p in method.trainable_parameters(model)]
    assert all(g is not None for g in grads)


def test_describe_methods_lists_papers_and_hyper_parameters():
    described = {m["name"]: m for m in describe_methods()}
    assert described["lora"]["hparams"]["rank"]["default"] == 8
    assert described["adaptformer"]["hparams"]["scale"]["default"] == 0.1
    assert all(m["paper"] and m["description"] for m in described.values())
    assert described["ssf"]["reparameterisable"] and not described["vpt_deep"]["reparameterisable"]


def test_count_params_errors_name_the_bad_key_or_value():
    with pytest.raises(ValueError, match=r"unknown hyper-parameter 'rnak'.*rank"):
        count_params("lora", "vit_base_patch16_224", 10, {"rnak": "8"})
    with pytest.raises(
        ValueError, match="method 'lora': rank='eight': Input should be a valid int"
    ):
        count_params("lora", "vit_base_patch16_224", 10, {"rank": "eight"})
    # the typed config's bound, named with method, field and value
    with pytest.raises(ValueError, match=r"method 'lora': rank=0: .*greater than or equal to 1"):
        count_params("lora", "vit_base_patch16_224", 10, {"rank": 0})
    assert count_params("lora", "vit_base_patch16_224", 10, {"rank": "4"})["hp"]["rank"] == 4
    with pytest.raises(ValueError, match="unknown backbone 'vit_nope'"):
        count_params("lora", "vit_nope", 10)


def test_cli_methods_and_params():
    runner = CliRunner()
    listed = runner.invoke(app, ["methods"], terminal_width=250)
    assert listed.exit_code == 0
    for name in methods.list_methods():
        assert name in listed.output
    result = runner.invoke(
        app,
        [
            "params",
            "--method",
            "lora",
            "--backbone",
            "vit_base_patch16_224",
            "--num-classes",
            "100",
            "--set",
            "rank=8",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["trainable_without_head"] == 12 * 8 * (768 + 3 * 768)
    bad = runner.invoke(app, ["params", "--method", "lorra"])
    assert bad.exit_code == 2 and "valid:" in bad.output


def test_params_resolve_backbone_presets():
    """A preset name counts like its timm name (no download: meta device)."""
    preset = count_params("lora", "clip_vit_b16", 10)
    named = count_params("lora", "vit_base_patch16_clip_224.openai", 10)
    assert preset["trainable_total"] == named["trainable_total"] > 0
