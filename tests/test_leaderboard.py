"""The leaderboard from planted MLflow records: means, ties, outputs, and a real browser."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch

from tuner.leaderboard.build import build, publish
from tuner.tracking.artifacts import predictions_bytes
from tuner.tracking.client import TrackingService

N = 200
#: method → task → correct examples out of N (planted)
PLANTED = {
    "lora": {"synth/objects": 180, "synth/scenes": 140, "synth/textures": 100, "synth/count": 60},
    "bitfit": {"synth/objects": 178, "synth/scenes": 100, "synth/textures": 100, "synth/count": 60},
    "linear": {"synth/objects": 100, "synth/scenes": 60, "synth/textures": 60, "synth/count": 40},
}


def _predictions(correct: int, num_classes: int = 4) -> bytes:
    labels = torch.arange(N) % num_classes
    wrong = (labels + 1) % num_classes
    preds = torch.where(torch.arange(N) < correct, labels, wrong)
    return predictions_bytes(torch.nn.functional.one_hot(preds, num_classes).float(), labels)


def _plant(uri: str, experiment: str) -> TrackingService:
    tracker = TrackingService(uri, experiment)
    for method, tasks in PLANTED.items():
        for task, correct in tasks.items():
            key = f"{task}:{method}"
            tracker.start_run(key, key, {"stage": "tune", "task": task, "method": method})
            tracker.start_run(
                f"{key}/t", "t", {"stage": "tune", "task": task, "method": method}, parent=key
            )
            tracker.log_metrics(f"{key}/t", {"device_hours": 0.5}, 0)
            fkey = f"final/{key}"
            tracker.start_run(
                fkey,
                fkey,
                {"stage": "final", "task": task, "method": method, "seed": 1000},
                params={"lr": 0.01},
            )
            params = {"lora": 1000, "bitfit": 300, "linear": 0}[method]
            tracker.log_metrics(
                fkey,
                {
                    "test/acc": correct / N,
                    "trainable_params": params + 10,
                    "trainable_params_without_head": params,
                    "device_hours": 0.25,
                },
                1,
            )
            tracker.log_artifact_bytes(fkey, "test_predictions.parquet", _predictions(correct))
            for k in (f"{key}/t", key, fkey):
                tracker.end_run(k)
    return tracker


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    _plant(uri, "planted")
    paths, tracker = build(uri, ["planted"], root / "out", "planted board")
    return uri, paths, tracker


def test_flat_and_group_means_on_a_planted_table(board):
    _, paths, _ = board
    summary = pd.read_parquet(paths["summary"])
    lora = summary[summary["method"] == "lora"].set_index("task")["test_acc"]
    assert lora.mean() == pytest.approx((0.9 + 0.7 + 0.5 + 0.3) / 4)
    text = paths["markdown"].read_text()
    row = next(line for line in text.splitlines() if line.startswith("| lora"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    flat, group = cells[header.index("mean (flat)")], cells[header.index("mean (group)")]
    assert flat == "60.0"  # (90 + 70 + 50 + 30) / 4
    assert group == "53.3"  # natural (90 + 70)/2 = 80, specialized 50, structured 30


def test_bold_best_and_underlined_ties(board):
    _, paths, _ = board
    summary = pd.read_parquet(paths["summary"]).set_index(["task", "method"])
    # objects: lora 90.0 vs bitfit 89.0 -> tied; linear 50.0 -> not tied
    assert summary.loc[("synth/objects", "lora"), "best"]
    assert summary.loc[("synth/objects", "bitfit"), "tied"]
    assert not summary.loc[("synth/objects", "linear"), "tied"]
    # scenes: lora 70 vs bitfit 50 on 200 paired examples -> clearly not tied
    assert not summary.loc[("synth/scenes", "bitfit"), "tied"]
    text = paths["markdown"].read_text()
    assert "**90.0**" in text and "<u>89.0</u>" in text


def test_outputs_costs_and_mlflow_leaderboard_run(board):
    uri, paths, tracker = board
    for key in ("runs", "summary", "markdown", "html", "heatmap", "pareto"):
        assert paths[key].exists() and paths[key].stat().st_size > 0
    assert paths["heatmap"].read_bytes()[:4] == b"\x89PNG"
    text = paths["markdown"].read_text()
    assert "tune device-h" in text and "| lora |" in text
    lora = next(line for line in text.splitlines() if line.startswith("| lora"))
    assert "| 2.000 | 1.000 |" in lora  # 4 trials × 0.5 h tuning, 4 finals × 0.25 h
    run_id = publish(tracker, paths, "planted")
    runs = TrackingService(uri, "planted", create=False).find({"stage": "leaderboard"})
    assert [r["run_id"] for r in runs] == [run_id]
    assert runs[0]["metrics"]["lora/mean_flat"] == pytest.approx(0.6)


def test_missing_experiment_is_a_clear_error(board, tmp_path):
    uri, _, _ = board
    with pytest.raises(ValueError, match="no MLflow experiment 'nope'"):
        build(uri, ["nope"], tmp_path, "x")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_html_renders_in_headless_chromium(board, tmp_path):
    _, paths, _ = board
    shot = tmp_path / "shot.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", paths["html"].as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert 'id="leaderboard"' in dom and "<td" in dom and "lora" in dom
    subprocess.run(
        [
            CHROMIUM,
            *flags,
            "--window-size=1400,900",
            f"--screenshot={shot}",
            paths["html"].as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (900, 1400)
    # the table's dark text and borders: a rendered page is not a blank canvas
    assert (image < 128).mean() > 0.005


def test_cli_rebuilds_from_any_tracking_uri(board, tmp_path):
    from typer.testing import CliRunner

    from tuner.cli import app

    uri, _, _ = board
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        [
            "leaderboard",
            "--experiment",
            "planted",
            "--tracking-uri",
            uri,
            "--out",
            str(out),
            "--no-log",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "**90.0**" in result.output and (out / "leaderboard.html").exists()
    missing = CliRunner().invoke(
        app, ["leaderboard", "--experiment", "nope", "--tracking-uri", uri, "--out", str(out)]
    )
    assert missing.exit_code == 2 and "no MLflow experiment 'nope'" in missing.output


def test_pareto_puts_zero_parameter_methods_at_a_labelled_zero():
    from tuner.leaderboard.render import pareto_axes

    summary = pd.DataFrame(
        {
            "method": ["linear", "lora", "full"],
            "task": ["t"] * 3,
            "test_acc": [0.3, 0.5, 0.6],
            "trainable_params_without_head": [0, 2_000, 700_000],
        }
    )
    fig, ax = pareto_axes(summary)
    fig.canvas.draw()
    xs = sorted(ax.collections[0].get_offsets()[:, 0])
    assert xs == [0, 2_000, 700_000]  # linear at 0, not clipped to 10⁰
    assert ax.get_xscale() == "symlog"
    labels = [t.get_text().strip("$").replace("\\mathdefault", "") for t in ax.get_xticklabels()]
    assert "{0}" in labels and dict(zip(labels, ax.get_xticks(), strict=True))["{0}"] == 0


def test_an_ablation_variant_gets_its_own_row_beside_its_method(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = TrackingService(uri, "ablation")
    for variant, correct, seed in (("", 150, 0), ("", 160, 1), ("allocation=random", 100, 0)):
        key = f"final/{variant}/{seed}"
        tags = {"stage": "final", "task": "synth/count", "method": "spt_lora", "seed": seed}
        tracker.start_run(key, key, {**tags, **({"variant": variant} if variant else {})})
        tracker.log_metrics(key, {"test/acc": correct / N}, 1)
        tracker.log_artifact_bytes(key, "test_predictions.parquet", _predictions(correct))
        tracker.end_run(key)
    paths, _ = build(uri, ["ablation"], tmp_path / "out", "ablation")
    summary = pd.read_parquet(paths["summary"]).set_index("method")
    assert summary.loc["spt_lora", "test_acc"] == pytest.approx(155 / N)  # its 2 seeds only
    assert summary.loc["spt_lora (allocation=random)", "test_acc"] == pytest.approx(100 / N)
    assert "spt_lora (allocation=random)" in paths["markdown"].read_text()
