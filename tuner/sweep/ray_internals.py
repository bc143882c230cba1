"""The two places the sweep leans on Ray behaviour that is not a documented API, kept here.

Each has a test (``tests/test_ray_internals.py``) that fails loudly when a Ray upgrade
moves it, instead of the sweep silently binding every interface or ignoring a stop.

* ``loopback_only``: Ray 2.60's gRPC servers (GCS, raylet, workers) bind every interface
  and its agents the machine's address, token auth or not. The one switch that keeps them
  all on loopback is Ray's single-machine mode (what it uses on macOS/Windows):
  ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``. The node address becomes 127.0.0.1 and
  every process it starts binds that. Only the start needs it; the switch is put back so a
  later ``ray.init(address=...)`` in this process joins clusters as usual.
* ``interrupt_tuner``: Ray Tune's loop (``tune.run``, under ``Tuner.fit``) stops gracefully
  on SIGINT, and on SIGUSR1 when it runs in a process's main thread, as it does in the
  sweep's tuning task: it saves the experiment state one last time (trials still RUNNING,
  so ``Tuner.restore`` continues them) and returns. SIGINT is the driver's own (Ctrl-C), so
  the driver sends the tuning task SIGUSR1.
* ``saved_state_readable``: Ray Tune keeps an experiment's state in
  ``experiment_state-<time>.json`` files and restores from the newest. A disk that filled
  while it wrote leaves that file cut short; ``Tuner.restore`` then logs "Failed to restore
  the run state", silently starts the experiment over with a half-restored searcher, and
  hangs. So the driver checks the newest file parses before it asks for a restore.
* ``saved_trial_statuses``: the same file lists every trial (``trial_data``: each a JSON
  state with ``trial_id`` and ``status``); ``--resume`` reads it to know which finished
  trial runs the restore would not know as TERMINATED (``tuner.sweep.recorded``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from ray._private import ray_constants


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Start a local Ray inside this block to have it listen on 127.0.0.1 only."""
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def interrupt_tuner(pid: int) -> bool:
    """Ask the Ray Tune loop running in process ``pid`` to save its state and return."""
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return False
    return True


def _newest_state(experiment: str) -> dict | None:
    states = sorted(Path(experiment).glob("experiment_state-*.json"))
    if not states:
        return None
    try:
        return json.loads(states[-1].read_text())
    except (OSError, ValueError):
        return None


def saved_trial_statuses(experiment: str) -> dict[str, str] | None:
    """Trial id → status (PENDING, RUNNING, TERMINATED, ERROR...) in the newest saved state
    of ``experiment`` (a local folder); None when there is none to restore, or it is remote."""
    if "://" in experiment:
        return None
    state = _newest_state(experiment)
    if state is None:
        return None
    trials = (json.loads(data) for data, _ in state.get("trial_data", []))
    return {t["trial_id"]: t["status"] for t in trials}


def saved_state_readable(experiment: str) -> bool:
    """Whether the newest Ray Tune experiment state under ``experiment`` (a local folder)
    is whole. Remote storage (``s3://``...) is not checked: True."""
    if "://" in experiment:
        return True
    return _newest_state(experiment) is not None
