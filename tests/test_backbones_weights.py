"""Real backbones offline: weights files and URLs, presets, preprocessing from pretrained_cfg.

Everything is built here from the tiny ViT (random init, seeded): nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tuner.backbones import (
    PRESETS,
    TINY_NAME,
    create_backbone,
    data_config,
    preset_table,
    resolve_backbone,
)
from tuner.backbones.weights import WeightsMismatchError, fetch
from tuner.cli import app
from tuner.config import ConfigError, parse_config
from tuner.data import TaskData, get_task
from tuner.sweep.plan import StudySpec, study_hash
from tuner.sweep.specs import trial_spec
from tuner.training.settings import TrainSettings
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer

UPSTREAM = 64  # classes of the saved "pretrained" head; tasks below use 10


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    torch.manual_seed(123)
    return create_backbone(TINY_NAME, UPSTREAM, pretrained=False).eval()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _assert_loaded(model: torch.nn.Module, source: torch.nn.Module) -> None:
    """Every backbone tensor equals the source; the 10-way head is fresh."""
    got, want = model.state_dict(), source.state_dict()
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.3.attn.qkv.weight", "norm.bias"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=key)
    assert got["head.weight"].shape == (10, 96)


def export_npz(model: torch.nn.Module, path: Path) -> None:
    """The tiny ViT in Google's JAX ``.npz`` layout (the key names timm's _load_weights reads)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    w = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
    }
    for i in range(len(model.blocks)):
        p, b = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = b + "MultiHeadDotProductAttention_1/"
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[f"{b}{ln}/scale"] = sd[f"{p}{norm}.weight"]
            w[f"{b}{ln}/bias"] = sd[f"{p}{norm}.bias"]
        qkv_w = np.split(sd[p + "attn.qkv.weight"], 3)
        qkv_b = np.split(sd[p + "attn.qkv.bias"], 3)
        for n, wt, bs in zip(("query", "key", "value"), qkv_w, qkv_b, strict=True):
            w[f"{mha}{n}/kernel"] = wt.T.reshape(dim, heads, -1)
            w[f"{mha}{n}/bias"] = bs.reshape(heads, -1)
        out = sd[p + "attn.proj.weight"].reshape(dim, heads, -1)
        w[mha + "out/kernel"] = out.transpose(1, 2, 0)
        w[mha + "out/bias"] = sd[p + "attn.proj.bias"]
        for r in (0, 1):
            w[f"{b}MlpBlock_3/Dense_{r}/kernel"] = sd[f"{p}mlp.fc{r + 1}.weight"].T
            w[f"{b}MlpBlock_3/Dense_{r}/bias"] = sd[f"{p}mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


def test_safetensors_loads_backbone_and_drops_differing_head(source, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_file(_state(source), str(path))
    model = create_backbone(TINY_NAME, 10, weights=str(path))
    _assert_loaded(model, source)
    same = create_backbone(TINY_NAME, UPSTREAM, weights=str(path))  # same shape: head kept
    torch.testing.assert_close(same.head.weight, source.head.weight, rtol=0, atol=0)


def test_pth_unwraps_training_checkpoint(source, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": _state(source), "epoch": 3, "args": {"lr": 0.1}}, path)
    _assert_loaded(create_backbone(TINY_NAME, 10, weights=str(path)), source)


class NotATensor:
    """Any pickled object: torch.load(weights_only=True) must refuse it."""


def test_pth_with_pickled_object_is_refused(source, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _state(source), "extra": NotATensor()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt: refused to load .*NotATensor"):
        create_backbone(TINY_NAME, 10, weights=str(path))


def test_npz_in_google_format_loads_through_timm(source, tmp_path):
    path = tmp_path / "ViT-tiny.npz"
    export_npz(source, path)
    model = create_backbone(TINY_NAME, 10, weights=str(path))
    _assert_loaded(model, source)
    for key in ("blocks.5.attn.proj.weight", "blocks.2.mlp.fc1.weight", "cls_token"):
        torch.testing.assert_close(model.state_dict()[key], source.state_dict()[key], msg=key)


def test_npz_with_wrong_depth_names_the_blocks(source, tmp_path):
    path = tmp_path / "deep.npz"
    export_npz(source, path)
    with np.load(path) as npz:
        w = {k: npz[k] for k in npz.files if "encoderblock_5/" not in k}
    np.savez(path, **w)
    with pytest.raises(WeightsMismatchError, match=r"deep\.npz.*6 blocks.*missing blocks \[5\]"):
        create_backbone(TINY_NAME, 10, weights=str(path))


def test_fsspec_urls_are_cached_and_loaded(source, tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("PETL_WEIGHTS_CACHE", str(tmp_path / "cache"))
    buffer = tmp_path / "w.safetensors"
    save_file(_state(source), str(buffer))
    fs = fsspec.filesystem("memory")
    fs.pipe("/petl-test/tiny.safetensors", buffer.read_bytes())
    try:
        url = "memory://petl-test/tiny.safetensors"
        _assert_loaded(create_backbone(TINY_NAME, 10, weights=url), source)
        cached = fetch(url)
        assert cached.is_relative_to(tmp_path / "cache") and cached.name == "tiny.safetensors"
    finally:
        fs.rm("/petl-test", recursive=True)
    _assert_loaded(create_backbone(TINY_NAME, 10, weights=buffer.as_uri()), source)


def test_wrong_architecture_names_file_backbone_and_keys(tmp_path):
    other = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=UPSTREAM
    )
    path = tmp_path / "vit_tiny_depth2.safetensors"
    save_file(_state(other), str(path))
    with pytest.raises(WeightsMismatchError) as err:
        create_backbone(TINY_NAME, 10, weights=str(path))
    text = str(err.value)
    assert str(path) in text and TINY_NAME in text
    assert "missing keys" in text and "blocks.2.norm1.weight" in text
    assert "shape mismatches" in text and "(192,) vs model (96,)" in text


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        create_backbone(TINY_NAME, 10, weights=str(tmp_path / "nope.safetensors"))
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"unknown weights format '\.ckpt'"):
        create_backbone(TINY_NAME, 10, weights=str(tmp_path / "w.ckpt"))


def test_presets_resolve_and_list(monkeypatch):
    for preset, name in PRESETS.items():
        assert name in timm.list_pretrained(name.split(".")[0] + "*"), preset
    seen = []
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: seen.append(name) or "model")
    assert create_backbone("clip_vit_b16", 3, pretrained=False) == "model"
    assert seen == ["vit_base_patch16_clip_224.openai"] == [resolve_backbone("clip_vit_b16")]
    rows = {r["preset"]: r for r in preset_table()}
    assert rows["clip_vit_b16"]["mean"] == pytest.approx((0.4815, 0.4578, 0.4082), abs=1e-4)
    assert rows["dinov2_vit_b14"]["interpolation"] == "bicubic"
    result = CliRunner().invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    listed = {r["preset"]: r["timm_name"] for r in json.loads(result.output)}
    assert listed == PRESETS


def test_data_config_has_interpolation(source):
    cfg = data_config(source)
    assert cfg["interpolation"] == "bilinear" and cfg["input_size"] == (3, 32, 32)


def _fake_task(task: str) -> TaskData:
    info = get_task(task)
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
        return x, torch.randint(0, info.num_classes, (n,), generator=gen)

    return TaskData(info, split(8), split(4), split(12), split(4))


@pytest.mark.parametrize("normalize", [True, False])
def test_normalize_switch_reaches_the_trainer_input(normalize):
    task = "synth/dsprites_loc"
    raw = TrainSettings(pretrained=False, normalize=normalize)
    spec = TrialSpec(task=task, method="linear", train=raw, threads=1)
    trainer = Trainer(spec, data=_fake_task(task))
    x = trainer.data.train[0][:2]
    want = x.float() / 255 if not normalize else (x.float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(trainer._prepare(x), want)


def test_config_fields_reach_trial_spec_and_study_hash(tmp_path):
    base = {"name": "t", "tasks": ["synth/dsprites_loc"], "methods": ["linear"]}
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"one")
    study = StudySpec(task="synth/dsprites_loc", method="linear", seed=0, space={})
    plain = parse_config(base)
    raw = parse_config({**base, "train": {"normalize": False}})
    weighted = parse_config({**base, "backbone_weights": str(path)})
    spec = trial_spec(raw, "synth/dsprites_loc", "linear", {}, "tune", 0)
    assert spec.train.normalize is False and spec.weights is None
    assert spec.train is raw.train  # the section itself, not a copy of its fields
    assert trial_spec(weighted, "synth/dsprites_loc", "linear", {}, "tune", 0).weights == str(path)
    hashes = {study_hash(c, study) for c in (plain, raw, weighted)}
    assert len(hashes) == 3
    preset = parse_config({**base, "backbone": "clip_vit_b16"})
    named = parse_config({**base, "backbone": "vit_base_patch16_clip_224.openai"})
    assert study_hash(preset, study) == study_hash(named, study)
    with pytest.raises(ConfigError, match="backbone_weights"):
        parse_config({**base, "backbone_weights": str(path), "train": {"pretrained": False}})


def test_trainer_loads_data_with_the_backbone_interpolation(monkeypatch):
    import tuner.training.trainer

    task, seen = "synth/dsprites_loc", {}

    def fake_load_task(task_id, data_root, image_size, **kw):
        seen.update(kw, image_size=image_size)
        return _fake_task(task_id)

    monkeypatch.setattr(tuner.training.trainer, "load_task", fake_load_task)
    Trainer(TrialSpec(task=task, method="linear", train=TrainSettings(pretrained=False), threads=1))
    assert (seen["image_size"], seen["interpolation"]) == (32, "bilinear")


def test_input_spec_matches_the_model_and_leaves_the_rng_alone():
    """Data preparation and every Trainer read one input spec; reading it must not move the
    global RNG (a trial's drop-path masks would then depend on a per-process cache)."""
    from tuner.backbones import input_spec

    input_spec.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    spec = input_spec(TINY_NAME)
    assert torch.equal(torch.rand(4), expected)
    cfg = data_config(create_backbone(TINY_NAME, 3, pretrained=False))
    assert (spec.size, spec.interpolation) == (cfg["input_size"][-1], cfg["interpolation"])
    assert spec.mean == tuple(cfg["mean"]) and spec.std == tuple(cfg["std"])
