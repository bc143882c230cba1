"""The benches' measuring code on the CPU (CI has no GPU): numbers come out and add up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))

import checkpoint_cost
import gpu_throughput
import numpy as np
import sweep_timeline
import tuning_efficiency

from tuner.sweep.checkpoints import CheckpointPolicy

TINY = "vit_petl_tiny_patch8_32"


def test_throughput_counts_flops_and_images_on_the_cpu():
    row = gpu_throughput.measure("lora", TINY, "cpu", epochs=2, n_train=64, batch=32)
    assert row["images_per_s"] == pytest.approx(64 / row["epoch_s"])
    # two steps an epoch at the counted FLOPs per step
    assert row["achieved_tflops"] == pytest.approx(2 * row["step_tflops"] / row["epoch_s"])
    assert row["step_tflops"] > 0 and row["trainable_params"] > 0


def test_the_gpu_hours_projection_prices_the_grid_above_tpe_asha():
    projected = gpu_throughput.projection({"lora": 1.0, "full": 2.0})
    grid = projected["petl_vision_vtab1k"]["gpu_hours"]
    assert grid > projected["petl_vision_vtab1k_tpe_asha"]["gpu_hours"] > 0


def test_a_lora_checkpoint_is_a_small_fraction_of_a_full_one():
    lora = checkpoint_cost.checkpoint_cost("lora", TINY, repeats=1)
    full = checkpoint_cost.checkpoint_cost("full", TINY, repeats=1)
    assert 0 < lora["bytes"] < full["bytes"] / 3  # frozen backbone: never in the file
    # 100 one-second epochs: every epoch writes 99 checkpoints, every 60 s one
    every_epoch = checkpoint_cost.shares(0.5, 1.0, CheckpointPolicy(1, 0), 100)
    timed = checkpoint_cost.shares(0.5, 1.0, CheckpointPolicy(every_s=60), 100)
    assert every_epoch == pytest.approx(99 * 0.5 / (100 + 99 * 0.5))
    assert timed == pytest.approx(0.5 / 100.5)
    assert checkpoint_cost.shares(0.5, 1.0, CheckpointPolicy(), 100) == 0  # default: 120 s


def test_efficiency_counts_epochs_and_ties_against_the_grid():
    """A grid study and an arm study on the same 400 test images: the arm used 4x fewer
    trial-epochs; one arm study is tied (one image apart), one clearly worse."""
    rng = np.random.default_rng(0)
    truth = rng.random(400) < 0.8

    def row(epochs: int, correct: np.ndarray) -> dict:
        return {"trial_epochs": epochs, "test_acc": float(correct.mean()),
                "correct": correct, "epochs_to_best": epochs}  # fmt: skip

    worse = truth.copy()
    worse[:120] = False
    nearly = truth.copy()
    nearly[np.flatnonzero(truth)[0]] = False
    grid = {"a": row(64, truth), "b": row(64, truth)}
    arm = {"a": row(16, nearly), "b": row(16, worse)}
    cmp = tuning_efficiency.compare(grid, arm)
    assert cmp["a"]["epochs_ratio"] == 4.0 and cmp["a"]["tied_or_better"]
    assert not cmp["b"]["tied_or_better"] and cmp["b"]["test_delta"] < -0.1
    out = tuning_efficiency.summary("arm", grid, arm, cmp)
    assert out["fewer_x"] == 4.0 and out["tied_or_better_share"] == 0.5


def test_the_timeline_counts_runs_in_flight():
    # 0-10 s one run, 10-20 s two, 20-40 s one: a quarter of the span with two in flight
    shares = sweep_timeline.in_flight([(0.0, 20.0), (10.0, 40.0)], step=0.5)
    assert shares == {1: pytest.approx(0.75), 2: pytest.approx(0.25)}
