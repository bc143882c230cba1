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
* ``node_here``: ``ray.get_runtime_context().get_node_id()`` asked outside any Ray does not
  fail: it runs ``ray.init()``, which starts a Ray (or joins whichever cluster it finds
  under /tmp/ray) and leaves it up. The trial, final and replay functions that say which
  node ran them are Ray tasks in a sweep, but tests and scripts call them directly too.
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
from fnmatch import fnmatch
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import ray
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


def node_here() -> str:
    """The id of the Ray node this process runs on; "" outside Ray, where no Ray is started."""
    if not ray.is_initialized():
        return ""
    return ray.get_runtime_context().get_node_id()


def interrupt_tuner(pid: int) -> bool:
    """Ask the Ray Tune loop running in process ``pid`` to save its state and return."""
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return False
    return True


def _newest_state(experiment: str) -> dict | None:
    """The newest ``experiment_state-*.json`` under ``experiment``, parsed: a local folder,
    or any URI ``pyarrow.fs`` opens (``s3://``, ``gs://``, ``file://``: where Ray Tune's
    ``storage_path`` puts it, through the same library). None when there is none, the
    storage cannot be listed, or the file does not parse."""
    try:
        if "://" in experiment:
            fs, root = pafs.FileSystem.from_uri(experiment)
        else:
            fs, root = pafs.LocalFileSystem(), str(Path(experiment).resolve())
        found = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        states = sorted(
            i.path for i in found
            if i.type == pafs.FileType.File and fnmatch(i.base_name, "experiment_state-*.json")
        )  # fmt: skip
        if not states:
            return None
        with fs.open_input_stream(states[-1]) as stream:
            return json.loads(stream.read())
    except (OSError, ValueError, pa.ArrowException):
        return None


def saved_trial_statuses(experiment: str) -> dict[str, str] | None:
    """Trial id → status (PENDING, RUNNING, TERMINATED, ERROR...) in the newest saved state
    of ``experiment`` (a folder or a storage URI); None when there is none to restore."""
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
