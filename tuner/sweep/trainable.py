"""The thin Ray Tune adapter around ``Trainer``: report each epoch, checkpoint, restore.

The training code knows nothing of the tuner; this function is the only place a trial
touches ``ray.tune``. A checkpoint holds the trainable tensors, optimiser, schedule and
RNG, so a trial restored after a node failure continues exactly where it stopped.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from tuner.tracking.client import fetch_artifact
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer


def tune_trainable(config: dict[str, Any], spec: TrialSpec, checkpoint_every: int = 1) -> None:
    """Ray Tune function trainable: ``config`` is the sampled hp, ``spec`` the fixed rest."""
    trainer = Trainer(spec.with_hp(config), fetch=fetch_artifact)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.load(Path(directory))
    node = ray.get_runtime_context().get_node_id()  # which node ran it, for the spread
    for metrics in trainer.epochs():
        metrics["node_id"] = node
        last = trainer.epoch >= trainer.spec.epochs or trainer.diverged
        if trainer.epoch % checkpoint_every == 0 or last:
            with tempfile.TemporaryDirectory() as directory:
                trainer.save(Path(directory))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(metrics)


def study_trainable(
    spec: TrialSpec, checkpoint_every: int, name: str
) -> Callable[[dict[str, Any]], None]:
    """``tune_trainable`` bound to one study's fixed spec, under a name unique to the study.

    Not ``tune.with_parameters``: it registers every wrapper as ``tune_trainable`` and keys
    the parameters by the function's repr, which is identical in every worker process, so
    studies tuned concurrently in one Ray job could read each other's spec (a lora trial
    built as ``linear``). A closure registered under its own name cannot mix.
    """

    def trainable(config: dict[str, Any]) -> None:
        tune_trainable(config, spec=spec, checkpoint_every=checkpoint_every)

    trainable.__name__ = trainable.__qualname__ = name
    return trainable
