"""The plain-PyTorch trainer: learns, diverges gracefully, resumes exactly, is seeded."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tuner.data import load_task
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer, train_one

TASK = "synth/dsprites_loc"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    load_task(TASK, root, 32)  # writes the synth task once for the module
    return root


def _spec(data_root: Path, **kw) -> TrialSpec:
    base = dict(
        task=TASK,
        method="lora",
        hp={"lr": 3e-3},
        epochs=3,
        data_root=str(data_root),
        threads=1,
        seed=0,
    )
    return TrialSpec(**{**base, **kw})


def test_training_lowers_loss_and_beats_chance(data_root):
    result = train_one(_spec(data_root, epochs=4, hp={"lr": 3e-3, "rank": 4}))
    losses = [h["train/loss"] for h in result["history"]]
    chance = 1 / 16
    assert losses[-1] < 0.8 * losses[0]
    assert result["val/acc"] > 3 * chance, result["val/acc"]
    assert result["diverged"] == 0.0 and len(result["history"]) == 4


def test_divergence_ends_the_trial_with_metrics_recorded(data_root):
    result = train_one(_spec(data_root, method="full", hp={"lr": 1e8}, epochs=3))
    assert result["diverged"] == 1.0
    assert math.isnan(result["train/loss"]) and result["val/acc"] == 0.0
    assert len(result["history"]) < 3 or result["history"][-1]["diverged"] == 1.0


def test_resume_from_checkpoint_matches_uninterrupted_run(data_root, tmp_path):
    spec = _spec(data_root, epochs=3)
    straight = Trainer(spec)
    list(straight.epochs())
    first = Trainer(spec)
    epochs = first.epochs()
    next(epochs)
    first.save(tmp_path)
    resumed = Trainer(spec)
    resumed.load(tmp_path)
    history = list(resumed.epochs())
    assert [h["epoch"] for h in history] == [2, 3]
    for (name, a), (_, b) in zip(
        straight.method.trainable_parameters(straight.model),
        resumed.method.trainable_parameters(resumed.model),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_final_stage_reads_test_once_after_the_last_epoch(data_root):
    result = train_one(_spec(data_root, stage="final", epochs=2))
    assert "test/acc" in result and "val/acc" not in result
    assert [("test/acc" in h) for h in result["history"]] == [False, True]
    assert len(Trainer(_spec(data_root, stage="final")).y_train) == 1000


def test_same_seed_same_numbers(data_root):
    a = train_one(_spec(data_root, epochs=1))
    b = train_one(_spec(data_root, epochs=1))
    assert a["train/loss"] == b["train/loss"] and a["val/acc"] == b["val/acc"]


def test_record_test_adds_a_test_curve_without_changing_training(data_root):
    """``train.record_test``: a tune trial reports test/acc every epoch (for replay tables),
    and the same seed's val curve and weights are what they are without it."""
    from tuner.training.settings import TrainSettings

    plain = train_one(_spec(data_root, epochs=2))
    recorded = Trainer(_spec(data_root, epochs=2, train=TrainSettings(record_test=True)))
    history = list(recorded.epochs())
    assert all("test/acc" not in h for h in plain["history"])
    assert [h["val/acc"] for h in history] == [h["val/acc"] for h in plain["history"]]
    assert [h["train/loss"] for h in history] == [h["train/loss"] for h in plain["history"]]
    assert history[-1]["test/acc"] == recorded.evaluate("test")  # the whole test split
    assert all(0.0 <= h["test/acc"] <= 1.0 for h in history)
