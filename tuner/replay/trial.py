"""A replayed trial: the ``tune_trainable`` contract, with a table's numbers for training.

Kept free of the sweep config and of torch (``tuner.config`` imports the method registry):
a sweep runs one Ray worker per concurrent trial, and each would otherwise carry torch
(about 0.7 GB) to report numbers it looks up. The trainable holds where the table comes
from, not the table: Ray Tune unpickles the trainable each time it adds a trial, and with
the shipped table inside that was a third of its controller's time; each worker reads the
table once.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from tuner.replay.table import ReplayTable, TableError, from_experiment, load_table
from tuner.sweep.checkpoints import CheckpointPolicy
from tuner.sweep.multiplex import split_config
from tuner.sweep.ray_internals import node_here
from tuner.sweep.recorded import RecordedTrial, checkpoint_epoch, replay_recorded, replaying
from tuner.sweep.stopwatch import StopWatch

#: The checkpoint of a replayed trial: the epoch it reached
STATE_FILE = "replay.json"
#: A study as a trial needs it: (task, method, fixed hyper-parameters)
Study = tuple[str, str, dict[str, Any]]
#: Where a table comes from: (file or shipped name, MLflow experiment, tracking URI)
Source = tuple[str | None, str | None, str]


@functools.lru_cache(maxsize=8)
def _cached(source: Source, mtime: float) -> ReplayTable:
    table, experiment, tracking_uri = source
    if experiment:
        return from_experiment(experiment, tracking_uri)
    assert table is not None, "a replay names a table or an experiment"
    return load_table(table)


def cached_table(source: Source) -> ReplayTable:
    """The table, read once per process (a changed file is read again)."""
    path = Path(source[0]) if source[0] and not source[1] else None
    return _cached(source, path.stat().st_mtime if path and path.is_file() else 0.0)


def replayed_curve(curve: list[float], epochs: int) -> list[float]:
    """The values a trial of ``epochs`` epochs reports: the recorded curve, cut to
    ``epochs``, its last value held where it is shorter (a final-only row: every epoch)."""
    return [curve[min(i, len(curve) - 1)] for i in range(epochs)]


def epoch_seconds(
    table: ReplayTable, task: str, method: str, config: dict[str, Any], override: float | None
) -> float:
    """Seconds a replayed epoch takes: ``replay.epoch_s`` when set, else the table's, else 0."""
    if override is not None:
        return override
    return table.epoch_s(task, method, config) or 0.0


def _restored_epoch() -> int:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        return int(json.loads((Path(directory) / STATE_FILE).read_text())["epoch"])


def replay_trial(
    config: dict[str, Any],
    table: ReplayTable,
    study: Study,
    epochs: int,
    epoch_s: float | None,
    policy: CheckpointPolicy,
    stop: StopWatch | None,
) -> None:
    """Report the configuration's recorded curve one epoch at a time, spending ``epoch_s``
    per epoch; checkpoint by ``policy``; on the sweep's stop, checkpoint and park."""
    entered = time.perf_counter()
    task, method, fixed = study
    _, _, hp = split_config(config)
    full = {**fixed, **hp}
    try:
        curve = table.curve(task, method, full)
    except KeyError as err:  # TPE over a table that is not a product (refused at plan time)
        raise TableError(str(err.args[0])) from None
    values = replayed_curve(curve, epochs)
    spend = epoch_seconds(table, task, method, full, epoch_s)
    start = _restored_epoch()
    node = node_here()
    setup_s: float | None = time.perf_counter() - entered
    since = time.monotonic()
    for epoch in range(start + 1, len(values) + 1):
        began = time.perf_counter()
        if spend:
            time.sleep(spend)
        metrics: dict[str, Any] = {
            "val/acc": values[epoch - 1],
            "epoch": epoch,
            "trainable_params": 0,  # a table records no parameter counts
            "epoch_time_s": time.perf_counter() - began,
            "diverged": 0.0,
            "node_id": node,
        }
        if setup_s is not None:
            metrics["trial_setup_s"], setup_s = setup_s, None
        last = epoch >= len(values)
        stopping = not last and stop is not None and stop.requested()
        if not stopping and not policy.due(epoch, time.monotonic() - since, last):
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as directory:
            (Path(directory) / STATE_FILE).write_text(json.dumps({"epoch": epoch}))
            metrics["checkpoint_s"] = 0.0
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        since = time.monotonic()
        if stopping:
            assert stop is not None
            stop.park()


def make_trainable(
    source: Source,
    studies: dict[str, Study],
    epochs: int,
    epoch_s: float | None,
    policy: CheckpointPolicy,
    sweep: str,
    name: str,
    recorded: dict[str, RecordedTrial] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """``sweep_trainable``'s replay twin: the trial's ``STUDY`` key picks its study, and its
    worker's copy of the table (read on its first trial) the recorded curve. A trial in
    ``recorded`` (its MLflow run finished before a crash) reports that run instead."""
    recorded = recorded or {}

    def trainable(config: dict[str, Any]) -> None:
        replay = replaying(config, recorded)
        if replay is not None:
            replay_recorded(replay, checkpoint_epoch())
            return
        key, _, _ = split_config(config)
        table = cached_table(source)
        replay_trial(config, table, studies[key], epochs, epoch_s, policy, StopWatch(sweep))

    trainable.__name__ = trainable.__qualname__ = name
    return trainable
