"""Warm start: a study's first TPE trials are the same method's choices on other tasks."""

from __future__ import annotations

import ray
from rich.console import Console

from tuner.config import parse_config
from tuner.sweep.pipeline import run_pipeline
from tuner.sweep.spaces import Domain
from tuner.sweep.warm_start import WARM_TAG, warm_points
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

SPACE = {"lr": Domain("loguniform", (1e-4, 3e-2)), "rank": Domain("choice", (1, 4, 8))}


def _study(task: str, acc: float, lr: str, rank: str) -> dict:
    return {
        "tags": {"task": task, "method": "lora", "stage": "tune"},
        "params": {"best.lr": lr, "best.rank": rank},
        "metrics": {"val/acc": acc},
    }


def test_points_are_the_best_other_tasks_choices_inside_the_space():
    studies = [
        _study("synth/a", 0.5, "0.001", "4"),
        _study("synth/b", 0.9, "0.003", "8"),
        _study("synth/c", 0.7, "0.5", "4"),  # lr outside the space: skipped
        _study("synth/d", 0.8, "0.003", "8"),  # same point as b: once
        _study("synth/here", 0.99, "0.002", "1"),  # the study's own task: never
        {**_study("synth/e", 0.95, "0.002", "1"), "tags": {"task": "synth/e",
                                                          PARENT_RUN_TAG: "x"}},  # a trial
    ]  # fmt: skip
    points = warm_points(studies, "synth/here", SPACE, top=3)
    assert points == [({"lr": 0.003, "rank": 8}, "synth/b"), ({"lr": 0.001, "rank": 4}, "synth/a")]
    assert warm_points(studies, "synth/here", SPACE, top=1) == points[:1]


def test_a_later_study_starts_from_an_earlier_tasks_best(tmp_path):
    """One sweep, two tasks, one study open at a time, warm_start on: the second study's
    first trial is the first study's chosen configuration, tagged with where it came from
    (the first study, finished earlier in the same sweep, had nothing to start from)."""
    first = parse_config({
        "name": "warm", "methods": ["lora"], "data_root": str(tmp_path / "data"),
        "out_dir": str(tmp_path / "out"), "final": {"seeds": 1},
        "tasks": ["synth/count", "synth/textures"], "search": {"warm_start": True},
        "tune": {"num_samples": 2, "max_epochs": 1, "grace_period": 1,
                 "max_concurrent_trials": 1},
        "ray": {"num_cpus": 2}, "resources": {"max_concurrent_studies": 1},
    })  # fmt: skip
    try:
        with open(tmp_path / "console.txt", "a") as log:
            run_pipeline(first, Console(file=log, width=200), live=False)
    finally:
        ray.shutdown()
    tracker = TrackingService(first.tracking_uri, first.experiment, create=False)
    (source,) = [r for r in tracker.find({"study": "synth/count:lora", "stage": "tune"})
                 if PARENT_RUN_TAG not in r["tags"]]  # fmt: skip
    best = {
        k.removeprefix("best."): v for k, v in source["params"].items() if k.startswith("best.")
    }
    trials = [
        r for r in tracker.find({"study": "synth/textures:lora"}) if PARENT_RUN_TAG in r["tags"]
    ]
    warm = [r for r in trials if r["tags"].get(WARM_TAG) == "synth/count"]
    assert len(warm) == 1 and len(trials) == 2
    assert {k: warm[0]["params"][k] for k in best} == best
    (parent,) = [r for r in tracker.find({"study": "synth/textures:lora", "stage": "tune"})
                 if PARENT_RUN_TAG not in r["tags"]]  # fmt: skip
    assert parent["params"]["search.warm_start_points"] == "1"
    cold = [r for r in tracker.find({"study": "synth/count:lora"}) if PARENT_RUN_TAG in r["tags"]]
    assert not [r for r in cold if WARM_TAG in r["tags"]]
    assert source["params"]["search.warm_start_points"] == "0"
