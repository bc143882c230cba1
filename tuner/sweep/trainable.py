"""The thin Ray Tune adapter around ``Trainer``: report each epoch, checkpoint, restore.

The training code knows nothing of the tuner; this function is the only place a trial
touches ``ray.tune``. A checkpoint holds the trainable tensors (never a frozen backbone),
optimiser, schedule and RNG, so a trial restored after a node failure continues exactly
where it stopped; when to write one is ``tuner.sweep.checkpoints``' call.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from tuner.sweep.checkpoints import CheckpointPolicy
from tuner.sweep.events import actor_name
from tuner.sweep.multiplex import PREPARED, split_config
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
    node = ray.get_runtime_context().get_node_id()  # which node ran it, for the spread
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
            metrics["checkpoint_s"] = time.perf_counter() - started
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        since = time.monotonic()
        if stopping:
            stop.park()


class StopWatch:
    """Whether the sweep asked its trials to stop, read from its event queue at most once a
    second (a trial reports many epochs a second on a GPU; the queue is one actor)."""

    def __init__(self, sweep: str, every_s: float = 1.0) -> None:
        self.sweep, self.every_s = sweep, every_s
        self.checked, self.answer, self._queue = 0.0, False, None

    def _actor(self) -> Any:
        if self._queue is None:
            self._queue = ray.get_actor(actor_name(self.sweep, "events"))
        return self._queue

    def requested(self) -> bool:
        if not self.answer and time.monotonic() - self.checked >= self.every_s:
            self.checked = time.monotonic()
            try:
                self.answer = bool(ray.get(self._actor().stopping.remote(), timeout=10))
            except Exception:  # no queue (a trainable run outside a sweep): never stop
                self.answer = False
        return self.answer

    def park(self) -> None:
        """Tell the driver this trial's checkpoint is saved, then wait to be ended: returning
        would mark the trial as finished, and it is not."""
        ray.get(self._actor().park.remote(tune.get_context().get_trial_id()))
        while True:
            time.sleep(1.0)


def sweep_trainable(
    specs: dict[str, TrialSpec], policy: CheckpointPolicy, name: str, sweep: str = ""
) -> Callable[[dict[str, Any]], None]:
    """``tune_trainable`` for every study of a sweep: the trial's ``STUDY`` key picks its
    study's fixed spec, ``PREPARED`` the study's prepare artifact.

    Not ``tune.with_parameters``: it registers every wrapper as ``tune_trainable`` and keys
    the parameters by the function's repr, identical in every worker process, so two sweeps
    in one Ray job could read each other's specs. A closure under the sweep's own name
    cannot mix.
    """

    def trainable(config: dict[str, Any]) -> None:
        key, meta, hp = split_config(config)
        spec = dataclasses.replace(specs[key], prepared_uri=meta.get(PREPARED))
        tune_trainable(hp, spec=spec, policy=policy, stop=StopWatch(sweep) if sweep else None)

    trainable.__name__ = trainable.__qualname__ = name
    return trainable
