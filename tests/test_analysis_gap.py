"""Study 001's analyses: the Fréchet distance against closed forms, ``domain-gap`` on a
planted task, ``quadrant`` on planted numbers, ``curves`` on planted trial histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _analysis_helpers import folder_task, plant_final
from typer.testing import CliRunner

from tuner.analysis.frechet import bootstrap_frechet, frechet_between, frechet_distance
from tuner.analysis.quadrant import assign_quadrants
from tuner.cli import app
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

runner = CliRunner()
METHODS = ["eigh", "sqrtm"]


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One MLflow store for the module (creating one costs seconds); one experiment a test."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'm.db'}"


def _analyze(kind: str, uri: str, out, experiment: str, *options: str):
    args = ["analyze", kind, "--experiment", experiment, "--tracking-uri", uri, "--out", str(out)]
    for option in options:
        args += ["-o", option]
    return runner.invoke(app, args)


@pytest.mark.parametrize("method", METHODS)
def test_frechet_of_isotropic_gaussians_is_the_closed_form(method):
    d, mu1, mu2, s1, s2 = 6, np.zeros(6), np.full(6, 0.5), 1.0, 3.0
    exact = float(np.sum((mu1 - mu2) ** 2)) + d * (s1 - s2) ** 2  # 1.5 + 24
    got = frechet_distance(mu1, s1**2 * np.eye(d), mu2, s2**2 * np.eye(d), method)
    assert got == pytest.approx(exact, rel=1e-9) == 25.5
    # diagonal covariances: Σ (√a − √b)² per dimension
    a, b = np.array([1.0, 4, 9, 0]), np.array([4.0, 1, 0, 16])  # rank-deficient both
    diag = frechet_distance(np.zeros(4), np.diag(a), np.zeros(4), np.diag(b), method)
    assert diag == pytest.approx(float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)), abs=1e-6)


def test_sampled_features_approach_the_closed_form_and_identical_sets_give_zero():
    rng = np.random.default_rng(0)
    d = 8
    a = rng.normal(0.0, 1.0, (20_000, d))
    b = rng.normal(1.0, 2.0, (20_000, d))
    exact = d * 1.0**2 + d * (1.0 - 2.0) ** 2  # 16
    for method in METHODS:
        assert frechet_between(a, b, method) == pytest.approx(exact, rel=0.03)
        assert frechet_between(a, a, method) == pytest.approx(0.0, abs=1e-8)
    # fewer samples than dimensions: singular covariances, both roads agree and stay finite
    few, other = rng.normal(size=(5, 20)), rng.normal(size=(7, 20))
    eig, sq = frechet_between(few, other, "eigh"), frechet_between(few, other, "sqrtm")
    assert np.isfinite(eig) and eig == pytest.approx(sq, rel=1e-4)
    boot = bootstrap_frechet(a[:2000], b[:2000], rounds=8, seed=1)
    assert boot.shape == (8,) and boot.std() > 0
    assert abs(boot.mean() - exact) < 0.1 * exact


def test_quadrants_of_planted_numbers():
    table = pd.DataFrame(
        {
            "task": ["t1", "t2", "t3", "t4", "t5"],
            "frechet": [1.0, 2.0, 3.0, 4.0, 5.0],  # median 3: t3 counts as below
            "test_gap": [0.10, -0.05, 0.0, 0.02, -0.01],
        }
    )
    got = assign_quadrants(table, "vpt_deep", "full").set_index("task")["quadrant"].to_dict()
    assert got == {
        "t1": "below median gap, vpt_deep better",
        "t2": "below median gap, full better",
        "t3": "below median gap, tie",
        "t4": "above median gap, vpt_deep better",
        "t5": "above median gap, full better",
    }


def _plant_gap_run(tracker: TrackingService, tmp_path, gaps: dict[str, float], name: str):
    table = pd.DataFrame(
        {"task": list(gaps), "backbone": "vit_petl_tiny_patch8_32", "frechet": list(gaps.values()),
         "boot_std": 0.1,
         "group": "structured", "train_size": [100 if "@100" in t else 400 for t in gaps]}
    )  # fmt: skip
    path = tmp_path / name / "domain-gap.parquet"
    path.parent.mkdir()
    table.to_parquet(path)
    key = f"analysis/{name}"
    tracker.start_run(key, key, {"stage": "analysis", "analysis": "domain-gap"})
    tracker.log_artifact(key, path, "analysis")
    tracker.end_run(key)


def test_quadrant_reads_the_newest_domain_gap_and_the_final_test_gaps(tmp_path, uri):
    tracker = TrackingService(uri, "quad", str(tmp_path / "art"))
    accs = {  # task: (vpt_deep, full)
        "synth/count@100": (0.60, 0.50),
        "synth/count@400": (0.70, 0.75),
        "synth/objects@100": (0.40, 0.45),
        "synth/objects@400": (0.80, 0.70),
    }
    for task, pair in accs.items():
        for method, acc in zip(("vpt_deep", "full"), pair, strict=True):
            key = f"final/{task}/{method}"
            tags = {"stage": "final", "task": task, "method": method,
                    "backbone": "vit_petl_tiny_patch8_32"}  # fmt: skip
            tracker.start_run(key, key, tags)
            tracker.log_metrics(key, {"test/acc": acc}, 4)
            tracker.end_run(key)
    _plant_gap_run(tracker, tmp_path, dict.fromkeys(accs, 9.0), "old")  # would tie everything
    new = {"synth/count@100": 1.0, "synth/count@400": 2.0, "synth/objects@100": 5.0,
           "synth/objects@400": 6.0}  # fmt: skip
    _plant_gap_run(tracker, tmp_path, new, "new")
    done = _analyze("quadrant", uri, tmp_path / "a", "quad")
    assert done.exit_code == 0, done.output
    table = pd.read_parquet(tmp_path / "a" / "quadrant.parquet").set_index("task")
    assert table["frechet"].to_dict() == new
    assert table.loc["synth/count@400", "test_gap"] == pytest.approx(-0.05)
    assert table["quadrant"].to_dict() == {
        "synth/count@100": "below median gap, vpt_deep better",
        "synth/count@400": "below median gap, full better",
        "synth/objects@100": "above median gap, full better",
        "synth/objects@400": "above median gap, vpt_deep better",
    }
    summary = pd.read_parquet(tmp_path / "a" / "quadrant.summary.parquet")
    assert summary["n"].sum() == 4 and "synth/objects@400" in done.output
    assert (tmp_path / "a" / "quadrant.png").stat().st_size > 0
    missing = _analyze("quadrant", uri, tmp_path / "b", "quad", "a=lora")
    assert missing.exit_code == 2 and "method 'lora' has no final runs" in missing.output


def _history(tracker: TrackingService, key: str, curves: dict[str, list[float]]):
    for epoch in range(len(next(iter(curves.values())))):
        tracker.log_metrics(key, {m: v[epoch] for m, v in curves.items()}, epoch + 1)


def test_curves_draw_the_chosen_trial_and_the_final_runs(tmp_path, uri):
    tracker = TrackingService(uri, "curves", str(tmp_path / "art"))
    tags = {"stage": "tune", "task": "synth/count", "method": "full", "backbone": "tiny"}
    tracker.start_run("study", "study", {**tags, "study": "synth/count:full"})
    chosen = {"train/loss": [1.0, 0.5, 0.2], "train/acc": [0.5, 0.8, 0.95],
              "val/loss": [0.9, 0.7, 0.8], "val/acc": [0.5, 0.7, 0.72]}  # fmt: skip
    other = {"train/loss": [2.0, 1.9], "val/loss": [2.0, 1.8], "val/acc": [0.1, 0.2]}
    for trial, curves in (("t_best", chosen), ("t_other", other)):
        tracker.start_run(trial, trial, {**tags, "trial_id": trial}, parent="study")
        _history(tracker, trial, curves)
        tracker.end_run(trial)
    tracker.end_run("study", tags={"best_trial": "t_best"})
    tracker.start_run("final", "final", {**tags, "stage": "final", "seed": 1000})
    _history(tracker, "final", {"train/loss": [1.1, 0.4], "train/acc": [0.6, 0.9]})
    tracker.log_metrics("final", {"test/acc": 0.7}, 2)
    tracker.end_run("final")
    done = _analyze("curves", uri, tmp_path / "a", "curves")
    assert done.exit_code == 0, done.output
    table = pd.read_parquet(tmp_path / "a" / "curves.parquet")
    assert not table["metric"].str.startswith("test").any()
    trial = table[table["stage"] == "trial"]
    assert set(trial["source"]) == {"trial t_best"}
    got = trial[trial["metric"] == "val/loss"].sort_values("epoch")["value"].tolist()
    assert got == pytest.approx(chosen["val/loss"])
    final = table[table["stage"] == "final"]
    assert set(final["metric"]) == {"train/loss", "train/acc"} and len(final) == 4
    (row,) = pd.read_parquet(tmp_path / "a" / "curves.summary.parquet").to_dict("records")
    assert row["min_val_loss_epoch"] == 2 and row["val_loss_rise"] == pytest.approx(0.1)
    assert row["last_train_minus_val_acc"] == pytest.approx(0.95 - 0.72)
    assert (tmp_path / "a" / "curves-synth_count.png").stat().st_size > 0
    assert PARENT_RUN_TAG in tracker.find({"trial_id": "t_best"})[0]["tags"]


def test_domain_gap_of_a_planted_task_against_the_tiny_vits_upstream(tmp_path, uri):
    tracker = TrackingService(uri, "gap", str(tmp_path / "art"))
    task = folder_task(tmp_path)
    plant_final(tracker, task, "linear", {}, tmp_path / "data")
    args = ("sample=64", "bootstrap=4")
    done = _analyze("domain-gap", uri, tmp_path / "a", "gap", *args)
    assert done.exit_code == 0, done.output
    (row,) = pd.read_parquet(tmp_path / "a" / "domain-gap.parquet").to_dict("records")
    assert row["task"] == task and row["group"] == "custom" and row["train_size"] == 8
    assert row["n_upstream"] == 64 and row["n_task"] == 8 and row["bootstrap"] == 4
    assert row["frechet"] > 0 and row["ci_low"] <= row["ci_high"] and row["boot_std"] > 0
    assert row["boot_bias"] == pytest.approx(row["boot_mean"] - row["frechet"])
    assert "pre-logits" in row["layer"] and "glyph" in row["upstream"]
    # the task's own training images as the upstream folder: identical sets, no gap
    upstream = f"upstream={tmp_path / 'pets' / 'train'}"
    other = _analyze("domain-gap", uri, tmp_path / "b", "gap", *args, upstream)
    assert other.exit_code == 0, other.output
    (own,) = pd.read_parquet(tmp_path / "b" / "domain-gap.parquet").to_dict("records")
    assert own["n_upstream"] == 8 and own["frechet"] < 1e-6 * row["frechet"]
    bad = _analyze("domain-gap", uri, tmp_path / "c", "gap", f"upstream={tmp_path / 'none'}")
    assert bad.exit_code == 2 and "does not exist" in " ".join(bad.output.split())
