"""``analyze attribution``: Grad-CAM maps at the input's size on the tiny ViT, through the
prompt tokens VPT adds, and end to end from planted final runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from _analysis_helpers import folder_task, plant_final
from typer.testing import CliRunner

from tuner import methods
from tuner.analysis.attribution import gradcam_maps
from tuner.backbones import TINY_NAME, create_backbone
from tuner.cli import app
from tuner.tracking.client import TrackingService


@pytest.mark.parametrize(("method", "size"), [("vpt_deep", 32), ("linear", 32), ("lora", 48)])
def test_maps_have_the_inputs_spatial_shape(method, size):
    torch.manual_seed(0)
    model = timm.create_model(TINY_NAME, img_size=size, num_classes=3)  # 4x4 or 6x6 patches
    model = methods.get(method).apply(model).eval()
    x = torch.randn(3, 3, size, size)
    maps = gradcam_maps(model, x, [0, 1, 2])
    assert maps.shape == (3, size, size)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert maps.reshape(3, -1).std(axis=1).max() > 0  # not a constant map


def test_attribution_of_two_planted_final_models(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"  # the only store of the module
    tracker = TrackingService(uri, "attr", str(tmp_path / "art"))
    task = folder_task(tmp_path)
    torch.manual_seed(0)
    model = create_backbone(TINY_NAME, 2)
    linear = methods.get("linear")
    head = linear.trainable_state_dict(linear.apply(model))
    full = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the same function tuned "two ways": the maps must agree exactly
    plant_final(tracker, task, "linear", head, tmp_path / "data")
    plant_final(tracker, task, "full", full, tmp_path / "data")
    out = tmp_path / "a"
    args = ["analyze", "attribution", "--experiment", "attr", "--tracking-uri", uri,
            "--out", str(out), "-o", "n=3"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    table = pd.read_parquet(out / "attribution.parquet")
    assert len(table) == 3 and set(table["method_a"]) == {"linear"}  # registry order
    assert (table["height"] == 32).all() and (table["width"] == 32).all()
    assert (table["pred_a"] == table["pred_b"]).all()
    assert table["map_correlation"].to_numpy() == pytest.approx(1.0, abs=1e-4)
    maps = np.load(out / "attribution-maps.npz")
    assert maps[f"{task}|linear"].shape == maps[f"{task}|full"].shape == (3, 32, 32)
    (grid,) = out.glob("attribution-*.png")  # one grid per task
    assert grid.stat().st_size > 0
