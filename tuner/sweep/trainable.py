"""The thin Ray Tune adapter around ``Trainer``: report each epoch, checkpoint, restore.

The training code knows nothing of the tuner; this function is the only place a trial
touches ``ray.tune``. A checkpoint holds the trainable tensors (never a frozen backbone),
optimiser, schedule and RNG, so a trial restored after a node failure continues exactly
where it stopped; when to write one is ``tuner.sweep.checkpoints``' call. A trial that
finished before a crash is replayed on ``--resume``, not trained (``tuner.sweep.recorded``).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray import tune

from tuner.sweep.checkpoints import CheckpointPolicy
from tuner.sweep.multiplex import PREPARED, split_config
from tuner.sweep.ray_internals import node_here
from tuner.sweep.recorded import (
    EPOCH_FILE,
    RecordedTrial,
    checkpoint_epoch,
    replay_recorded,
    replaying,
)
from tuner.sweep.stopwatch import StopWatch
from tuner.tracking.client import fetch_artifact
from tuner.training.spec import TrialSpec
from tuner.training.trainer import Trainer


def tune_trainable(
    config: dict[str, Any],
    spec: TrialSpec,
    policy: CheckpointPolicy | None = None,
    stop: StopWatch | None = None,
) -> None:
    """Ray Tune function trainable: ``config`` is the sampled hp, ``spec`` the fixed rest.

    Checkpoints follow ``policy`` (``tuner.sweep.checkpoints``); each records how long it
    took (``checkpoint_s``) so the sweep's cost of checkpointing is measured, not guessed.
    Once ``stop`` says the sweep is stopping (Ctrl-C, SIGTERM), the trial checkpoints at the
    end of its current epoch and waits there to be ended, so ``--resume`` loses no epoch."""
    entered = time.perf_counter()
    policy = policy or CheckpointPolicy()
    trainer = Trainer(spec.with_hp(config), fetch=fetch_artifact)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.load(Path(directory))
    node = node_here()  # which node ran it, for the spread
    since = time.monotonic()
    setup_s = time.perf_counter() - entered  # model, method, data: reported once
    for metrics in trainer.epochs():
        metrics["node_id"] = node
        if setup_s is not None:
            metrics["trial_setup_s"], setup_s = setup_s, None
        last = trainer.epoch >= trainer.spec.epochs or trainer.diverged
        stopping = not last and stop is not None and stop.requested()
        if not stopping and not policy.due(trainer.epoch, time.monotonic() - since, last):
            tune.report(metrics)
            continue
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            trainer.save(Path(directory))
            (Path(directory) / EPOCH_FILE).write_text(json.dumps({"epoch": trainer.epoch}))
            metrics["checkpoint_s"] = time.perf_counter() - started
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        since = time.monotonic()
        if stopping:
            stop.park()


def _trainer_epoch(directory: Path) -> int:
    """The epoch of a checkpoint written before ``EPOCH_FILE`` existed."""
    return int(torch.load(directory / "trainer.pt", weights_only=True)["epoch"])


def sweep_trainable(
    specs: dict[str, TrialSpec],
    policy: CheckpointPolicy,
    name: str,
    sweep: str = "",
    recorded: dict[str, RecordedTrial] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """``tune_trainable`` for every study of a sweep: the trial's ``STUDY`` key picks its
    study's fixed spec, ``PREPARED`` the study's prepare artifact; a trial in ``recorded``
    (finished before a crash) is replayed from its record instead.

    Not ``tune.with_parameters``: it registers every wrapper as ``tune_trainable`` and keys
    the parameters by the function's repr, identical in every worker process, so two sweeps
    in one Ray job could read each other's specs. A closure under the sweep's own name
    cannot mix.
    """

    recorded = recorded or {}

    def trainable(config: dict[str, Any]) -> None:
        replay = replaying(config, recorded)
        if replay is not None:
            replay_recorded(replay, checkpoint_epoch(_trainer_epoch))
            return
        key, meta, hp = split_config(config)
        spec = dataclasses.replace(specs[key], prepared_uri=meta.get(PREPARED))
        tune_trainable(hp, spec=spec, policy=policy, stop=StopWatch(sweep) if sweep else None)

    trainable.__name__ = trainable.__qualname__ = name
    return trainable
